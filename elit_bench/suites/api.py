"""The Python API of suites: run or resume one, read its records as a DataFrame.

    from elit_bench import run_suite, load_records
    df = run_suite("quickstart", scale="smoke", overrides=["train.steps=200"])
    df = load_records("quickstart", scale="smoke")

Both return one row per (record, metric), the frame `elit-bench table` is made from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from elit_bench.suites.options import DEFAULT_OUT, default_scale, parse_sets


def run_suite(name: str, scale: str | None = None, overrides: Sequence[str] = (), out=DEFAULT_OUT,
              launcher: str = "local", progress: bool = True, **launcher_options) -> pd.DataFrame:
    """Run (or resume) suite `name` at `scale` (default: its cheapest) like `elit-bench run`; its records.

    overrides: `--set` items ("train.steps=200", "var.IMAGENET256=/data/in256"); launcher and
    launcher_options as in `make_launcher` (e.g. launcher="slurm", gpus=8, partition="gpu"). Bad input
    raises `UserError` before anything runs, so does another run writing into OUT/<suite>/<scale> (`suites.lock`); failed runs raise RuntimeError after the others finished.
    """
    from elit_bench.suites.launchers import make_launcher
    from elit_bench.suites.lock import run_lock
    from elit_bench.suites.runner import run_all
    from elit_bench.suites.spec import load_suite

    suite = load_suite(name)
    scale = scale or default_scale(suite, "running")
    sets, variables = parse_sets(list(overrides))
    runs = suite.runs(scale, sets, variables)
    with run_lock(Path(out) / suite.name / scale, launcher, launcher_options.get("nodes", 1),
                  command=[f"run_suite({name!r})"]):
        failed = run_all(runs, out, make_launcher(launcher, **launcher_options), progress)
    if failed:
        raise RuntimeError(f"some runs of suite {name!r} failed (the log names them); call run_suite again to retry")
    return load_records(suite.name, scale, out)


def load_records(suite: str | None = None, scale: str | None = None, out=DEFAULT_OUT) -> pd.DataFrame:
    """The records under OUT/<suite>/<scale>/ (every suite / scale when None) as a DataFrame."""
    from elit_bench.results.records import load_records as read
    from elit_bench.results.records import records_frame

    return records_frame(read(out, suite, scale))
