"""Published reference results (`baselines/` at the repository root) as data files with their source."""

from __future__ import annotations

import os
from pathlib import Path

from elit_bench.errors import UserError


def baselines_dir() -> Path:
    """`$ELIT_BENCH_BASELINES`, else the repository's `baselines/` next to the package."""
    return Path(os.environ.get("ELIT_BENCH_BASELINES") or Path(__file__).resolve().parents[1] / "baselines")


def baseline_file(name: str) -> Path:
    path = baselines_dir() / name
    if not path.is_file():
        raise UserError(f"published reference file {str(path)!r} is missing: run from a clone of the repository "
                        "or point ELIT_BENCH_BASELINES at its baselines/ folder")
    return path
