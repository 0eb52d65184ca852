"""What every report kind shares: metric labels, the suite's order, the contact sheet of sample grids and
figures saved as PNG + SVG. The kinds a suite's `report: {kind: ...}` names are in `elit_bench.results.reports`."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from elit_bench.checkpoint import atomic_write
from elit_bench.metrics.compute import KEY_SPECS
from elit_bench.suites.floor import REAL_DATA_LABEL

# a record key -> its header in tables, figures and claims (declared with its metric: metrics.compute.METRICS)
METRIC_LABELS = {key: spec.label for key, spec in KEY_SPECS.items() if spec.label is not None}
CONTACT_SHEET = "samples.png"

def suite_order(suite, scale: str) -> tuple[dict, dict, dict]:
    """Ranks as the suite writes them: {run label}, {eval label} (first seen) and {(run, eval)} (each run's own
    order); the real-data floor comes first."""
    specs = suite.runs(scale, strict_variables=False)
    run_rank = {REAL_DATA_LABEL: -1, **{r.label: i for i, r in enumerate(specs)}}
    eval_rank = {label: i for i, label in enumerate(dict.fromkeys(e.label for r in specs for e in r.evals))}
    run_eval_rank = {(r.label, e.label): i for r in specs for i, e in enumerate(r.evals)}
    return run_rank, eval_rank, run_eval_rank


def save_figure(fig, path_stem: Path) -> list[Path]:
    """PNG and SVG of a figure, each written atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        path = path_stem.with_suffix(f".{ext}")
        atomic_write(path, lambda tmp, ext=ext: fig.savefig(tmp, format=ext, dpi=150))
        paths.append(path)
    plt.close(fig)
    return paths


def write_contact_sheet(suite, frame: pd.DataFrame, path: Path, columns: int = 6) -> Path | None:
    """One tile per sample set (the real data first): its grid.png, drawn from samples.npz where missing.

    Returns the path, or None when no record has samples on disk.
    """
    from elit_bench.sampling.generate import ensure_grid

    if frame.empty:
        return None
    run_rank, _, run_eval_rank = suite_order(suite, frame["scale"].iloc[0])
    sets = frame.drop_duplicates(["run_id", "eval_id"])
    sets = sets.assign(_r=sets["run"].map(run_rank), _re=[run_eval_rank.get(k) for k in zip(sets["run"], sets["eval"])])
    sets = sets.sort_values(["_r", "_re", "seed"], kind="stable")  # the table's order
    tiles = []
    for _, row in sets.iterrows():
        grid = ensure_grid(row["grid"].parent) if row["grid"] is not None else None
        if grid is not None:
            seed = "" if pd.isna(row["seed"]) else f"\nseed {int(row['seed'])}"
            tiles.append((grid, f"{row['run']}\n{row['eval']}{seed}"))
    if not tiles:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    # constrained layout keeps each three-line title clear of the row above (tight_layout let them overlap)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.5 * rows + 0.4), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (grid, title) in zip(axes.flat, tiles):
        with Image.open(grid) as image:
            ax.imshow(np.asarray(image.convert("RGB")), interpolation="nearest")
        ax.set_title(title, fontsize=7)
    fig.suptitle(textwrap.fill(f"{suite.title}: samples", 90), fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path
