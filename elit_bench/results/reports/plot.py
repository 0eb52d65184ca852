"""The `plot` report kind's figure, drawn with seaborn (PNG + SVG); its table is the `table` kind's.

    report: {kind: plot, x: sample_gflops, y: fid, hue: run, style: guidance, frontier: true}

x: a column of the records (sample_gflops, train_step, ...) or a measured quantity of the same records;
y: a metric key; hue / style: columns that split the points into lines and markers; frontier: the
compute-quality Pareto set (in the metric's declared direction); xlabel / ylabel; logx; logy (a symmetric-log
y axis, linear below 1, so that intervals reaching 0 still draw and one method far off the others' range does
not flatten them).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd

from elit_bench.errors import UserError
from elit_bench.metrics.compute import DEBIASED, higher_is_better, record_key
from elit_bench.metrics.frontier import pareto_frontier
from elit_bench.results.records import aggregate_seeds, better
from elit_bench.results.report import METRIC_LABELS, save_figure
from elit_bench.suites.floor import REAL_DATA_LABEL


def draw(suite, frame: pd.DataFrame, path_stem: Path) -> list[Path]:
    """The suite's figure with seaborn, saved as PNG and SVG.

    Points are means over training seeds with their 95% interval as a vertical bar, each seed a
    faint dot beside it; the real-data floor is a dotted line with its interval shaded.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    spec = suite.report
    x, y = spec.get("x", "sample_gflops"), spec.get("y", "fid")
    ylabel = spec.get("ylabel", METRIC_LABELS.get(y, y))
    if not (frame["metric"] == y).any():
        # a scale may measure another quality metric (smoke: digits_fd where the paper has fid): plot the
        # first metric its evaluations list that the records hold
        specs = suite.runs(frame["scale"].iloc[0], strict_variables=False)
        listed = [record_key(n) for r in specs for e in r.evals for n in e.metrics.get("names", [])]
        held = [m for m in dict.fromkeys(listed) if (frame["metric"] == m).any()]
        if not held:
            raise UserError(f"no {y!r} values in the records of suite {suite.name!r}")
        y, ylabel = held[0], METRIC_LABELS.get(held[0], held[0])
    if (frame["metric"] == y + DEBIASED).any():  # the estimand whose interval a bar can show
        y, ylabel = y + DEBIASED, METRIC_LABELS.get(y + DEBIASED, ylabel + " (debiased)")
    agg = aggregate_seeds(frame)
    floors = agg[agg["real_data"] & (agg["metric"] == y)]
    data = agg[~agg["real_data"] & (agg["metric"] == y)].rename(columns={"value": y})
    if x not in frame.columns:  # x is a measured quantity too (Fig. 9's GFLOPs, Fig. 10's tokens): same record's
        record = ["suite", "scale", "run", "eval"]
        xs = agg[agg["metric"] == x][record + ["value"]].rename(columns={"value": x})
        if xs.empty:
            raise UserError(f"no {x!r} values in the records of suite {suite.name!r} (the figure's x axis)")
        data = data.merge(xs, on=record)
    data = data.sort_values(x)
    hue = spec.get("hue", "series")
    palette = dict(zip(dict.fromkeys(data[hue]), sns.color_palette(n_colors=data[hue].nunique())))
    fig, ax = plt.subplots(figsize=(6, 4.2))
    style = spec.get("style")
    # one marker shape per style level: a level with a single point (e.g. one CFG set) draws no line
    marks = {"style": style, "markers": True} if style else {"marker": "o"}
    sns.lineplot(data=data, x=x, y=y, hue=hue, palette=palette, errorbar=None, ax=ax, **marks)
    colours = data[hue].map(palette)
    ax.vlines(data[x], data["low"], data["high"], colors=list(colours), lw=1.2, alpha=0.8)
    for (_, row), colour in zip(data.iterrows(), colours):
        if row["seeds"] > 1:
            ax.scatter([row[x]] * row["seeds"], [v for _, v, _, _ in row["per_seed"]], s=8, color=colour, alpha=0.4)
    for _, floor in floors.iterrows():
        ax.axhline(floor["value"], ls=":", c="0.35", lw=1.2, label=f"{REAL_DATA_LABEL} (n={floor['num_samples']})")
        if not math.isnan(floor["low"]):
            ax.axhspan(floor["low"], floor["high"], color="0.35", alpha=0.12, lw=0)
    if spec.get("logx"):
        ax.set_xscale("log")
    if spec.get("logy"):
        ax.set_yscale("symlog", linthresh=1.0)
    if spec.get("frontier", False):
        # dominated only where the interval of the difference excludes 0 (records.better, docs/intervals.md)
        higher = higher_is_better(y)
        idx = pareto_frontier(data[x], data[y], higher_is_better=higher,
                              separated=lambda j, i: better(data.iloc[j], data.iloc[i], higher, value=y))
        front = data.iloc[idx]
        ax.plot(front[x], front[y], ls="--", c="k", lw=1, label="Pareto frontier")
    if spec.get("frontier", False) or not floors.empty:
        if data[hue].nunique() > 6:  # many curves: the legend beside the axes, not over their points
            fig.set_size_inches(8.5, 4.2)
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize=8)
    ax.set_xlabel(spec.get("xlabel", x))
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(suite.title + " (bars: 95% intervals)", 70), fontsize=9)
    return save_figure(fig, path_stem)
