"""Tables (Markdown, LaTeX), figures (seaborn, PNG + SVG) and leaderboards, generated from records.

A suite's `report` says what to draw:

    report: {kind: table}                                   # the paper's layout, ours beside theirs
    report: {kind: plot, x: sample_gflops, y: fid, hue: run, style: guidance, frontier: true}

Tables put each published number (suite `paper: {table, setting}`) next to
ours with the relative change; runs map to published rows by `paper_row`
and evaluations to published columns by `paper_guidance`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from elit_bench.checkpoint import atomic_write
from elit_bench.errors import UserError
from elit_bench.metrics.frontier import HIGHER_IS_BETTER, pareto_frontier
from elit_bench.results.records import load_records, published, records_frame

METRIC_LABELS = {"fid": "FID", "fdd": "FDD", "fvd": "FVD", "is_mean": "IS", "sfid": "sFID", "precision": "Prec.",
                 "recall": "Rec.", "digits_fd": "FD(digits)", "digits_acc": "Acc(digits)", "tf": "TF"}
# a metric name of `metrics.names` -> the record key its column shows (columns follow the suite's order)
METRIC_OF_KEY = {"is": "is_mean", "pr": "precision", "kid": "kid_mean"}


def comparison(suite, frame: pd.DataFrame) -> pd.DataFrame:
    """Ours and published side by side: one row per (run, eval, metric) with the relative change."""
    if frame.empty:
        raise UserError(f"no records for suite {suite.name!r}: run `elit-bench run {suite.name}` first")
    ours = frame.copy()
    paper = suite.paper
    if paper.get("table"):
        pub = published(paper["table"]).rename(columns={"row": "paper_row", "guidance": "paper_guidance",
                                                         "value": "paper", "setting": "paper_setting"})
        # a run's published setting: its own (e.g. 512px rows of Table 5a) or the suite's
        ours["paper_setting"] = ours["paper_setting"].fillna(paper.get("setting", ""))
        keys = ["paper_row", "paper_setting", "paper_guidance", "metric"]
        ours = ours.merge(pub[keys + ["paper"]], on=keys, how="left")
        tf = pub[pub["metric"] == "tf"][["paper_row", "paper_setting", "paper"]].rename(columns={"paper": "paper_tf"})
        ours = ours.merge(tf, on=["paper_row", "paper_setting"], how="left")
    else:
        ours["paper"] = float("nan")
        ours["paper_tf"] = float("nan")
    ours["change_pct"] = 100 * (ours["value"] - ours["paper"]) / ours["paper"]
    return ours


def _cell(value, paper, change) -> str:
    if pd.isna(paper):
        return f"{value:.4g}"
    return f"{value:.4g} ({paper:.4g}, {change:+.0f}%)"


def render_table(suite, frame: pd.DataFrame) -> tuple[str, str]:
    """(Markdown, LaTeX). Layout "wide" (the paper's: a row per run, a column per metric and evaluation;
    the default when the suite names a paper table) or "long" (a row per run and evaluation)."""
    cmp = comparison(suite, frame)
    cmp["cell"] = [_cell(v, p, c) for v, p, c in zip(cmp["value"], cmp["paper"], cmp["change_pct"])]
    cmp["label"] = cmp["metric"].map(lambda m: METRIC_LABELS.get(m, m))
    # rows and columns in the suite's order: runs and evaluations as written, metrics as the paper prints them
    specs = suite.runs(cmp["scale"].iloc[0], strict_variables=False)
    run_rank = {r.label: i for i, r in enumerate(specs)}
    # wide columns: evaluations in first-seen order; long rows: each run's own evaluation order
    eval_rank = {label: i for i, label in enumerate(dict.fromkeys(e.label for r in specs for e in r.evals))}
    run_eval_rank = {(r.label, e.label): i for r in specs for i, e in enumerate(r.evals)}
    names = [n for r in specs for e in r.evals for n in e.metrics.get("names", [])]
    metric_rank = {m: i for i, m in enumerate(dict.fromkeys([METRIC_OF_KEY.get(n, n) for n in names] + list(METRIC_LABELS)))}
    cmp = cmp.assign(_r=cmp["run"].map(run_rank), _e=cmp["eval"].map(eval_rank),
                     _re=[run_eval_rank.get(k) for k in zip(cmp["run"], cmp["eval"])],
                     _m=cmp["metric"].map(lambda m: metric_rank.get(m, len(metric_rank))))
    runs = list(dict.fromkeys(cmp.sort_values(["_r"], kind="stable")["run"]))
    layout = suite.report.get("layout", "wide" if suite.paper.get("table") else "long")
    if layout == "wide":
        cmp["column"] = cmp["label"] + " " + cmp["eval"]
        order = list(dict.fromkeys(cmp.sort_values(["_m", "_e"], kind="stable")["column"]))
        table = cmp.pivot_table(index="run", columns="column", values="cell", aggfunc="first")[order].reindex(runs)
        tf = cmp.groupby("run", sort=False).agg(tf=("train_tflops_per_iter", "first"), paper_tf=("paper_tf", "first"))
        table.insert(0, "TF/iter", [_cell(t, p, 100 * (t - p) / p)
                                    for t, p in zip(tf.loc[runs, "tf"], tf.loc[runs, "paper_tf"])])
    else:
        order = list(dict.fromkeys(cmp.sort_values(["_m"], kind="stable")["label"]))
        table = cmp.pivot_table(index=["run", "eval"], columns="label", values="cell", aggfunc="first")[order]
        table = table.reindex(list(dict.fromkeys(zip(*cmp.sort_values(["_r", "_re"], kind="stable")[["run", "eval"]].T.values))))
        compute = cmp.groupby(["run", "eval"], sort=False).agg(gf=("sample_gflops", "first"),
                                                               tf=("train_tflops_per_iter", "first"))
        table.insert(0, "sample GFLOPs", compute.loc[table.index, "gf"].map(lambda v: f"{v:.4g}").to_numpy())
        table.insert(0, "train TF/iter", compute.loc[table.index, "tf"].map(lambda v: f"{v:.4g}").to_numpy())
    table = table.fillna("-")
    note = (f"Cells: ours (published, relative change). Source: {suite.paper.get('table')} "
            f"{suite.paper.get('setting') or ''} of the ELIT paper (baselines/published_results.csv)."
            if suite.paper.get("table") else "No published counterpart: cells are ours.")
    samples = sorted({int(n) for n in frame["num_samples"].dropna()})
    header = f"# {suite.title}\n\nscale: {', '.join(sorted(frame['scale'].unique()))}; samples per set: {samples}\n\n"
    shown = table.reset_index() if layout != "wide" else table
    md = header + shown.to_markdown(index=layout == "wide") + f"\n\n{note}\n"
    latex = table.to_latex(escape=True, caption=suite.title, label=f"tab:{suite.name}")
    return md, latex


def draw_plot(suite, frame: pd.DataFrame, path_stem: Path) -> list[Path]:
    """The suite's figure with seaborn, saved as PNG and SVG."""
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
        listed = [METRIC_OF_KEY.get(n, n) for r in specs for e in r.evals for n in e.metrics.get("names", [])]
        held = [m for m in dict.fromkeys(listed) if (frame["metric"] == m).any()]
        if not held:
            raise UserError(f"no {y!r} values in the records of suite {suite.name!r}")
        y, ylabel = held[0], METRIC_LABELS.get(held[0], held[0])
    data = frame[frame["metric"] == y].copy()
    data = data.rename(columns={"value": y})
    if x not in frame.columns:  # x is a measured quantity too (Fig. 9's GFLOPs, Fig. 10's tokens): same record's
        record = ["suite", "scale", "run", "eval"]
        xs = frame[frame["metric"] == x][record + ["value"]].rename(columns={"value": x})
        if xs.empty:
            raise UserError(f"no {x!r} values in the records of suite {suite.name!r} (the figure's x axis)")
        data = data.merge(xs, on=record)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    style = spec.get("style")
    # one marker shape per style level: a level with a single point (e.g. one CFG set) draws no line
    marks = {"style": style, "markers": True} if style else {"marker": "o"}
    sns.lineplot(data=data.sort_values(x), x=x, y=y, hue=spec.get("hue", "series"), ax=ax, **marks)
    if spec.get("logx"):
        ax.set_xscale("log")
    if spec.get("frontier", False):
        front = data.iloc[pareto_frontier(data[x], data[y], higher_is_better=HIGHER_IS_BETTER.get(y, False))]
        ax.plot(front[x], front[y], ls="--", c="k", lw=1, label="Pareto frontier")
        ax.legend(fontsize=8)
    ax.set_xlabel(spec.get("xlabel", x))
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(suite.title, 70), fontsize=9)
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        path = path_stem.with_suffix(f".{ext}")
        atomic_write(path, lambda tmp, ext=ext: fig.savefig(tmp, format=ext, dpi=150))
        paths.append(path)
    plt.close(fig)
    return paths


def write_table(suite, frame: pd.DataFrame, dest: Path) -> tuple[str, list[Path]]:
    """DEST/table.md and DEST/table.tex; returns the Markdown and the paths."""
    md, latex = render_table(suite, frame)
    paths = [atomic_write(Path(dest) / name, lambda tmp, text=text: Path(tmp).write_text(text))
             for name, text in (("table.md", md), ("table.tex", latex))]
    return md, paths


def write_report(suite, out, scale: str | None = None, dest: Path | None = None) -> list[Path]:
    """Table (always) and figure (when the suite has one) under DEST (default OUT/<suite>/<scale>/report)."""
    frame = records_frame(load_records(out, suite.name, scale))
    if frame.empty:
        raise UserError(f"no records for suite {suite.name!r} under {str(out)!r}: run `elit-bench run {suite.name}`")
    dest = Path(dest) if dest else Path(out) / suite.name / (scale or "all") / "report"
    _, paths = write_table(suite, frame, dest)
    if suite.report.get("kind") == "plot":
        paths += draw_plot(suite, frame, dest / "figure")
    return paths
