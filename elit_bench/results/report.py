"""Tables (Markdown, LaTeX), figures (seaborn, PNG + SVG) and sample contact sheets, generated from records.

A suite's `report` says what to draw:

    report: {kind: table}                                   # the paper's layout, ours beside theirs
    report: {kind: plot, x: sample_gflops, y: fid, hue: run, style: guidance, frontier: true}
    report: {kind: table, rho: {LOW-COMPUTE RUN: HIGH-COMPUTE RUN, ...}}   # Table 6: rho from our records
    report: {kind: claims, claims: [{id, claim, paper, tests: [...]}]}    # verdicts (results/claims.py)

Tables put each published number (suite `paper: {table, setting}`) next to
ours with the relative change; runs map to published rows by `paper_row`
and evaluations to published columns by `paper_guidance`. Every number
carries its 95% interval, records of several training seeds show their
mean, std and each seed, and a suite's `real data` record (the floor of a
digits suite) is the first row of its table and a line on its figure.

A claims report is a table with one row per test, grouped by claim (the
paper's evidence, our two cells, the effect with its interval, method and
seeds, the test's and the claim's verdict), `verdicts.json` with the same
numbers, and a forest plot of the effects (docs/claims.md).
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from elit_bench.checkpoint import atomic_write
from elit_bench.errors import UserError
from elit_bench.metrics.compute import DEBIASED
from elit_bench.metrics.floor import REAL_DATA_LABEL
from elit_bench.metrics.frontier import HIGHER_IS_BETTER, pareto_frontier, rho
from elit_bench.results import claims as claims_mod
from elit_bench.results.records import (
    aggregate_seeds,
    format_estimate,
    format_interval,
    load_records,
    published,
    records_frame,
)

METRIC_LABELS = {"fid": "FID", "fdd": "FDD", "fvd": "FVD", "is_mean": "IS", "sfid": "sFID", "precision": "Prec.",
                 "recall": "Rec.", "digits_fd": "FD(digits)", "digits_acc": "Acc(digits)", "tf": "TF",
                 "fid_debiased": "FID (debiased)", "fdd_debiased": "FDD (debiased)", "fvd_debiased": "FVD (debiased)",
                 "sfid_debiased": "sFID (debiased)", "digits_fd_debiased": "FD(digits, debiased)",
                 "digits_kid": "KID(digits)",
                 "rho_fid": "rho(FID)", "rho_fdd": "rho(FDD)", "rho_is": "rho(IS)", "rho_fvd": "rho(FVD)",
                 "rho_digits_fd": "rho(FD digits)", "rho_digits_acc": "rho(Acc digits)"}
# a metric name of `metrics.names` -> the record key its column shows (columns follow the suite's order)
METRIC_OF_KEY = {"is": "is_mean", "pr": "precision", "kid": "kid_mean"}
CELL_NOTE = ("Cells: value ± half-width of its 95% interval, or value [low, high] where the interval is not centred "
             "on the value (Frechet distances: a basic bootstrap interval for the distance itself, which sits below "
             "the biased plug-in value); with several training seeds, mean ± sd over seeds, then each seed. "
             "Methods: docs/intervals.md.")
CONTACT_SHEET = "samples.png"
# records with debiased Frechet estimates: their plug-in column is the protocol's value at N
AT_N_NOTE = (" FD@N: the plug-in Frechet distance at the set's N samples, the protocol's (and the paper's) number, "
             "biased upward by the finite sample sizes of both sides; (debiased): the estimate of the population "
             "distance with its 95% interval (both sides resampled), on which the real-data floor reads about 0.")
VERDICTS = "verdicts.json"
VERDICT_COLOURS = {claims_mod.SUPPORTED: "#1a9641", claims_mod.CONTRADICTED: "#d7191c",
                   claims_mod.INCONCLUSIVE: "0.45"}


NOT_COMPARABLE = "†"  # marks a published number measured under another protocol


def rho_key(metric: str) -> str:
    """The published name of a metric's rho column (rho_is for is_mean)."""
    return "rho_" + {"is_mean": "is"}.get(metric, metric)


def rho_rows(pairs: dict, agg: pd.DataFrame) -> pd.DataFrame:
    """rho (paper App. C) of every low-compute run against its high-compute run, per evaluation and metric.

    pairs: {low run label: high run label}. FLOPs are training TFLOPs per iteration (Table 6's TF);
    values are the runs' means over seeds. The high-compute run gets rho 1. The interval is the range
    of rho as each metric moves within its own interval (conservative: both ends at once).
    """
    rows = []
    quality = agg[agg["metric"].isin(HIGHER_IS_BETTER)]
    for low_run, high_run in pairs.items():
        for (ev, metric), lo in quality[quality["run"] == low_run].groupby(["eval", "metric"], sort=False):
            hi = quality[(quality["run"] == high_run) & (quality["eval"] == ev) & (quality["metric"] == metric)]
            if hi.empty:
                continue
            lo, hi = lo.iloc[0], hi.iloc[0]
            higher = HIGHER_IS_BETTER[metric]
            tf_hi, tf_lo = hi["train_tflops_per_iter"], lo["train_tflops_per_iter"]
            value = rho(hi["value"], lo["value"], tf_hi, tf_lo, higher_is_better=higher)
            # metric ratio M_low / M_high (lower is better) or M_high / M_low, each side within its interval
            num, den = (lo, hi) if not higher else (hi, lo)
            with np.errstate(divide="ignore"):
                ends = (np.float64(num["low"]) / den["high"], np.float64(num["high"]) / den["low"])
            rows.append({**lo.to_dict(), "metric": rho_key(metric), "value": value, "std": math.nan,
                         "low": ends[0] * tf_lo / tf_hi, "high": ends[1] * tf_lo / tf_hi,
                         "method": "range-over-intervals", "seeds": 1, "per_seed": [], "grids": []})
            rows.append({**hi.to_dict(), "metric": rho_key(metric), "value": 1.0, "std": math.nan, "low": math.nan,
                         "high": math.nan, "method": None, "seeds": 1, "per_seed": [], "grids": []})
    return pd.DataFrame(rows).drop_duplicates(["run", "eval", "metric"]) if rows else pd.DataFrame()


def comparison(suite, frame: pd.DataFrame) -> pd.DataFrame:
    """Ours (aggregated over seeds, rho added) and published side by side: a row per (run, eval, metric)."""
    if frame.empty:
        raise UserError(f"no records for suite {suite.name!r}: run `elit-bench run {suite.name}` first")
    ours = aggregate_seeds(frame)
    if suite.report.get("rho"):
        ours = pd.concat([ours, rho_rows(suite.report["rho"], ours)], ignore_index=True)
    paper = suite.paper
    if paper.get("table"):
        pub = published(paper["table"]).rename(columns={"row": "paper_row", "guidance": "paper_guidance",
                                                         "value": "paper", "setting": "paper_setting"})
        # a run's published setting: its own (e.g. 512px rows of Table 5a) or the suite's
        ours["paper_setting"] = ours["paper_setting"].fillna(paper.get("setting", ""))
        keys = ["paper_row", "paper_setting", "paper_guidance", "metric"]
        ours = ours.merge(pub[keys + ["paper", "samples"]].rename(columns={"samples": "paper_samples"}), on=keys,
                          how="left")
        tf = pub[pub["metric"] == "tf"][["paper_row", "paper_setting", "paper"]].rename(columns={"paper": "paper_tf"})
        ours = ours.merge(tf, on=["paper_row", "paper_setting"], how="left")
    else:
        ours["paper"] = float("nan")
        ours["paper_tf"] = float("nan")
        ours["paper_samples"] = float("nan")
    # a difference only under the same protocol: same metric (extractor), same number of samples
    paper_samples = pd.to_numeric(ours["paper_samples"], errors="coerce")
    ours["comparable"] = paper_samples.isna() | (paper_samples == ours["num_samples"])
    ours["change_pct"] = (100 * (ours["value"] - ours["paper"]) / ours["paper"]).where(ours["comparable"])
    return ours


def _cell(text: str, paper, change) -> str:
    if pd.isna(paper):
        return text
    if pd.isna(change):  # another protocol: both numbers, no difference (footnote)
        return f"{text} (paper {paper:.4g}{NOT_COMPARABLE})"
    return f"{text} ({paper:.4g}, {change:+.0f}%)"


def _number(value) -> str:
    return "-" if pd.isna(value) else f"{value:.4g}"


def _floors_per_eval(cmp: pd.DataFrame) -> pd.DataFrame:
    """Wide layout: the real-data row under every evaluation column scored at its sample count and resolution."""
    real = cmp["real_data"].astype(bool)
    floors, others = cmp[real], cmp[~real]
    keys = ["num_samples", "data_resolution"]
    spread = floors.drop(columns="eval").merge(others.drop_duplicates("eval")[["eval", *keys]], on=keys)
    return pd.concat([spread, others], ignore_index=True)


def _grid_links(grids, dest: Path) -> str:
    """Markdown links to the grid.png of each seed's sample set, relative to DEST."""
    return " ".join(f"[{'grid' if len(grids) == 1 else f'seed {seed:g}'}]({Path(os.path.relpath(g, dest)).as_posix()})"
                    for seed, g in grids if Path(g).is_file())


def suite_order(suite, scale: str) -> tuple[dict, dict, dict]:
    """Ranks as the suite writes them: {run label}, {eval label} (first seen) and {(run, eval)} (each run's own
    order); the real-data floor comes first."""
    specs = suite.runs(scale, strict_variables=False)
    run_rank = {REAL_DATA_LABEL: -1, **{r.label: i for i, r in enumerate(specs)}}
    eval_rank = {label: i for i, label in enumerate(dict.fromkeys(e.label for r in specs for e in r.evals))}
    run_eval_rank = {(r.label, e.label): i for r in specs for i, e in enumerate(r.evals)}
    return run_rank, eval_rank, run_eval_rank


def render_table(suite, frame: pd.DataFrame, dest: Path | None = None) -> tuple[str, str]:
    """(Markdown, LaTeX). Layout "wide" (the paper's: a row per run, a column per metric and evaluation;
    the default when the suite names a paper table) or "long" (a row per run and evaluation).
    With `dest` (where the Markdown goes) the long layout links each evaluation's sample grid."""
    cmp = comparison(suite, frame)
    cmp["cell"] = [_cell(format_estimate(r), r["paper"], r["change_pct"]) for _, r in cmp.iterrows()]
    debiased = {m.removesuffix(DEBIASED) for m in cmp["metric"] if m.endswith(DEBIASED)}
    cmp["label"] = cmp["metric"].map(lambda m: METRIC_LABELS.get(m, m) + ("@N" if m in debiased else ""))
    # rows and columns in the suite's order: runs and evaluations as written, metrics as the paper prints them
    specs = suite.runs(cmp["scale"].iloc[0], strict_variables=False)
    # wide columns: evaluations in first-seen order; long rows: each run's own evaluation order
    run_rank, eval_rank, run_eval_rank = suite_order(suite, cmp["scale"].iloc[0])
    names = [n for r in specs for e in r.evals for n in e.metrics.get("names", [])]
    keys = [k for n in names for k in (METRIC_OF_KEY.get(n, n), n + DEBIASED)]  # the debiased beside the value at N
    metric_rank = {m: i for i, m in enumerate(dict.fromkeys(keys + list(METRIC_LABELS)))}
    layout = suite.report.get("layout", "wide" if suite.paper.get("table") else "long")
    if layout == "wide":
        cmp = _floors_per_eval(cmp)
    cmp = cmp.assign(_r=cmp["run"].map(run_rank), _e=cmp["eval"].map(eval_rank),
                     _re=[run_eval_rank.get(k) for k in zip(cmp["run"], cmp["eval"])],
                     _m=cmp["metric"].map(lambda m: metric_rank.get(m, len(metric_rank))))
    runs = list(dict.fromkeys(cmp.sort_values(["_r"], kind="stable")["run"]))
    if layout == "wide":
        cmp["column"] = cmp["label"] + " " + cmp["eval"]
        order = list(dict.fromkeys(cmp.sort_values(["_m", "_e"], kind="stable")["column"]))
        table = cmp.pivot_table(index="run", columns="column", values="cell", aggfunc="first")[order].reindex(runs)
        tf = cmp.groupby("run", sort=False).agg(tf=("train_tflops_per_iter", "first"), paper_tf=("paper_tf", "first"))
        table.insert(0, "TF/iter", [_cell(_number(t), p, 100 * (t - p) / p)
                                    for t, p in zip(tf.loc[runs, "tf"], tf.loc[runs, "paper_tf"])])
    else:
        order = list(dict.fromkeys(cmp.sort_values(["_m"], kind="stable")["label"]))
        table = cmp.pivot_table(index=["run", "eval"], columns="label", values="cell", aggfunc="first")[order]
        table = table.reindex(list(dict.fromkeys(zip(*cmp.sort_values(["_r", "_re"], kind="stable")[["run", "eval"]].T.values))))
        compute = cmp.groupby(["run", "eval"], sort=False).agg(gf=("sample_gflops", "first"),
                                                               tf=("train_tflops_per_iter", "first"),
                                                               grids=("grids", "first"))
        table.insert(0, "sample GFLOPs", compute.loc[table.index, "gf"].map(_number).to_numpy())
        table.insert(0, "train TF/iter", compute.loc[table.index, "tf"].map(_number).to_numpy())
        if dest is not None:
            table["samples"] = [_grid_links(g, Path(dest)) for g in compute.loc[table.index, "grids"]]
    table = table.fillna("-")
    note = (f"Published: {suite.paper.get('table')} {suite.paper.get('setting') or ''} of the ELIT paper "
            "(baselines/published_results.csv), in parentheses with our relative change."
            if suite.paper.get("table") else "No published counterpart: cells are ours.")
    apart = cmp[cmp["paper"].notna() & ~cmp["comparable"]]
    if not apart.empty:
        counts = ", ".join(f"{int(o)} here vs {int(p)} in the paper" for o, p in
                           apart[["num_samples", "paper_samples"]].drop_duplicates().itertuples(index=False))
        note += (f" {NOT_COMPARABLE} Not comparable: other protocol (samples per set: {counts}), so both numbers are "
                 "shown and no difference.")
    if frame["real_data"].any():
        note += (f" First row: {REAL_DATA_LABEL}, real training digits scored like a sample set at the same count "
                 "against the same held-out reference: the floor of this protocol.")
    if suite.report.get("rho"):
        note += (" rho: computed from our records (training TF per iteration, mean over seeds); its interval is its "
                 "range as each metric moves within its 95% interval.")
    samples = sorted({int(n) for n in frame["num_samples"].dropna()})
    header = f"# {suite.title}\n\nscale: {', '.join(sorted(frame['scale'].unique()))}; samples per set: {samples}\n\n"
    if dest is not None and (Path(dest) / CONTACT_SHEET).is_file():
        header += f"Samples of every evaluation: [{CONTACT_SHEET}]({CONTACT_SHEET})\n\n"
    shown = table.reset_index() if layout != "wide" else table
    note += AT_N_NOTE if debiased else ""
    md = header + shown.to_markdown(index=layout == "wide") + f"\n\n{note} {CELL_NOTE}\n"
    latex = table.drop(columns="samples", errors="ignore").to_latex(escape=True, caption=suite.title,
                                                                    label=f"tab:{suite.name}")
    return md, latex


def draw_plot(suite, frame: pd.DataFrame, path_stem: Path) -> list[Path]:
    """The suite's figure with seaborn, saved as PNG and SVG.

    Points are means over training seeds with their 95% interval as a vertical bar, each seed a
    faint dot beside it; the real-data floor is a dotted line with its interval shaded.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    spec = suite.report
    if spec.get("kind") == "claims":
        return draw_forest(suite, claims_mod.evaluate_claims(spec["claims"], frame), path_stem)
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
    if spec.get("frontier", False):
        # dominated only where the intervals do not overlap (docs/intervals.md)
        idx = pareto_frontier(data[x], data[y], higher_is_better=HIGHER_IS_BETTER.get(y, False),
                              low=data["low"], high=data["high"])
        front = data.iloc[idx]
        ax.plot(front[x], front[y], ls="--", c="k", lw=1, label="Pareto frontier")
    if spec.get("frontier", False) or not floors.empty:
        ax.legend(fontsize=8)
    ax.set_xlabel(spec.get("xlabel", x))
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(suite.title + " (bars: 95% intervals)", 70), fontsize=9)
    return save_figure(fig, path_stem)


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


def write_table(suite, frame: pd.DataFrame, dest: Path) -> tuple[str, list[Path]]:
    """DEST/samples.png (the contact sheet, when there are samples), DEST/table.md and DEST/table.tex;
    returns the Markdown and the paths. A claims suite also gets verdicts.json and its forest plot."""
    dest = Path(dest)
    if suite.report.get("kind") == "claims":
        return write_claims(suite, frame, dest)
    sheet = write_contact_sheet(suite, frame, dest / CONTACT_SHEET)
    md, latex = render_table(suite, frame, dest)
    paths = [atomic_write(dest / name, lambda tmp, text=text: Path(tmp).write_text(text))
             for name, text in (("table.md", md), ("table.tex", latex))]
    return md, paths + ([sheet] if sheet else [])


def write_report(suite, out, scale: str | None = None, dest: Path | None = None) -> list[Path]:
    """Table and contact sheet (always) and figure (when the suite has one) under DEST
    (default OUT/<suite>/<scale>/report)."""
    frame = suite_frame(suite, load_records(out, suite.name, scale))
    if frame.empty:
        raise UserError(f"no records for suite {suite.name!r} under {str(out)!r}: run `elit-bench run {suite.name}`")
    dest = Path(dest) if dest else Path(out) / suite.name / (scale or "all") / "report"
    _, paths = write_table(suite, frame, dest)  # a claims report draws its figure there
    if suite.report.get("kind") == "plot":
        paths += draw_plot(suite, frame, dest / "figure")
    return paths


def suite_frame(suite, records: list[dict]) -> pd.DataFrame:
    """The records as the suite's report needs them: `records_frame`, with bootstrap replicates for claims."""
    return claims_mod.claims_frame(records) if suite.report.get("kind") == "claims" else records_frame(records)


# ---------------------------------------------------------------- claims: verdict table, forest plot, verdicts.json
EXPECT_TEXT = {"better": "better", "not_worse": "not worse", "equivalent": "equivalent"}


def _test_text(t: dict) -> str:
    metric = METRIC_LABELS.get(t["metric"], t["metric"])
    way = "higher" if t["higher_is_better"] else "lower"
    text = (f"{t['a']['run']} @ {t['a']['eval']} vs {t['b']['run']} @ {t['b']['eval']}: {metric} ({way} is better), "
            f"expect {EXPECT_TEXT[t['expect']]}")
    if t["margin"]:
        text += f", margin {t['margin']:.3g} x abs(b) = {t['margin_abs']:.3g}"
    return text


def _method_text(t: dict) -> str:
    seeds = t["seeds"]
    shown = {k: ", ".join("-" if s is None else str(s) for s in v) for k, v in seeds.items()}
    if t["method"] == "paired-t-over-seeds":
        return f"paired t over seeds {shown['a']}"
    if t["method"] == "welch-t-over-seeds":
        return f"Welch t over seeds (a: {shown['a']}; b: {shown['b']})"
    if t["method"] == "bootstrap-basic-difference":
        ra, rb = t["replicates"]
        return f"bootstrap, {ra} x {rb} replicate pairs (one seed each: a {shown['a']}, b {shown['b']})"
    return f"normal from the intervals (one seed each: a {shown['a']}, b {shown['b']})"


def claims_table(results: list[dict]) -> pd.DataFrame:
    """One row per test, grouped by claim; a claim's id, words, evidence and verdict on its first row."""
    rows = []
    for claim in results:
        for j, t in enumerate(claim["tests"]):
            first = j == 0
            rows.append({"claim": claim["id"] if first else "", "statement": claim["claim"] if first else "",
                         "paper": claim["paper"] if first else "", "test": f"{j + 1}. {_test_text(t)}",
                         "a (ours)": t["a"]["text"], "b (ours)": t["b"]["text"],
                         "effect (95%)": format_interval(t["effect"], t["low"], t["high"]),
                         "method (seeds)": _method_text(t), "test verdict": t["verdict"],
                         "claim verdict": claim["verdict"] if first else ""})
    return pd.DataFrame(rows)


def ratios_table(results: list[dict]) -> pd.DataFrame:
    rows = []
    for claim in results:
        for r in claim["ratios"]:
            over = f" / {r['b']['run']} @ {r['b']['eval']}" if r["b"] else ""
            rows.append({"claim": claim["id"], "figure": r["label"],
                         "of": f"{r['quantity']}: {r['a']['run']} @ {r['a']['eval']}{over}",
                         "ours": _number(r["value"]), "paper": _number(r["paper"]) if r["paper"] is not None else "-"})
    return pd.DataFrame(rows)


def render_claims(suite, frame: pd.DataFrame, results: list[dict], dest: Path | None = None) -> tuple[str, str]:
    """(Markdown, LaTeX) of a claims report."""
    table = claims_table(results)
    counts = pd.Series([c["verdict"] for c in results]).value_counts()
    tally = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in (claims_mod.SUPPORTED, claims_mod.CONTRADICTED,
                                                                claims_mod.INCONCLUSIVE))
    samples = sorted({int(n) for n in frame["num_samples"].dropna()})
    header = (f"# {suite.title}\n\nscale: {', '.join(sorted(frame['scale'].unique()))}; samples per set: {samples}\n\n"
              f"Claims: {tally}.\n\n")
    if dest is not None:
        if (Path(dest) / "figure.png").is_file():
            header += "Effects and their intervals: [figure.png](figure.png)\n\n"
        if (Path(dest) / CONTACT_SHEET).is_file():
            header += f"Samples of every evaluation: [{CONTACT_SHEET}]({CONTACT_SHEET})\n\n"
    md = header + table.to_markdown(index=False)
    ratios = ratios_table(results)
    if not ratios.empty:
        md += "\n\nMeasured beside the claims (no verdict):\n\n" + ratios.to_markdown(index=False)
    md += f"\n\n{claims_mod.RULE} Cells a and b: {CELL_NOTE.removeprefix('Cells: ')}\n"
    latex = table.to_latex(index=False, escape=True, caption=suite.title, label=f"tab:{suite.name}")
    if not ratios.empty:
        latex += "\n" + ratios.to_latex(index=False, escape=True, caption=f"{suite.title}: measured ratios",
                                        label=f"tab:{suite.name}-ratios")
    return md, latex


def draw_forest(suite, results: list[dict], path_stem: Path) -> list[Path]:
    """Each test's effect relative to abs(b) (%) with its 95% interval, a zero line and the margin band, coloured by
    verdict; PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    tests = [(claim, j, t) for claim in results for j, t in enumerate(claim["tests"], 1)]
    fig, ax = plt.subplots(figsize=(7.5, 1.7 + 0.42 * len(tests)))
    labels, skipped = [], []
    for y, (claim, j, t) in enumerate(tests):
        labels.append(textwrap.shorten(f"{claim['id']}.{j} {t['a']['run']} @ {t['a']['eval']} vs "
                                       f"{t['b']['run']} @ {t['b']['eval']} ({METRIC_LABELS.get(t['metric'], t['metric'])})",
                                       60))
        scale = abs(t["b"]["value"])
        if not scale or not math.isfinite(scale):
            skipped.append(labels[-1])
            continue
        rel = [100 * v / scale for v in (t["effect"], t["low"], t["high"])]
        if t["margin"] and t["expect"] == "equivalent":
            ax.fill_betweenx([y - 0.3, y + 0.3], -100 * t["margin"], 100 * t["margin"], color="0.85", lw=0)
        elif t["margin"]:  # not worse: tolerated down to -margin
            ax.fill_betweenx([y - 0.3, y + 0.3], -100 * t["margin"], 0, color="0.85", lw=0)
        colour = VERDICT_COLOURS[t["verdict"]]
        ax.errorbar(rel[0], y, xerr=[[rel[0] - rel[1]], [rel[2] - rel[0]]], fmt="o", color=colour, capsize=3,
                    ms=5)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(tests)), labels, fontsize=7)
    ax.set_ylim(len(tests) - 0.5, -0.5)
    # short lines: the long test labels on the left leave the axes little width, and text wider than the
    # axes would be cut at the figure's edge
    ax.set_xlabel("effect: improvement of a over b, in % of abs(b)\nbars: 95% intervals; grey: the margin\n"
                  "(-m..m for equivalent, -m..0 for not worse)", fontsize=8)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    ax.legend(handles=handles, fontsize=7, loc="best")
    title = suite.title + (f" ({len(skipped)} test(s) with b = 0 not drawn)" if skipped else "")
    ax.set_title(textwrap.fill(title, 50), fontsize=9)
    return save_figure(fig, path_stem)


def _json_ready(obj):
    """NaN -> null, numpy scalars -> Python: verdicts.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_claims(suite, frame: pd.DataFrame, dest: Path) -> tuple[str, list[Path]]:
    """A claims report under DEST: samples.png, figure.png / .svg (forest plot), table.md, table.tex and
    verdicts.json, every verdict computed from the records in `frame` (`claims.claims_frame`)."""
    results = claims_mod.evaluate_claims(suite.report["claims"], frame)
    sheet = write_contact_sheet(suite, frame, dest / CONTACT_SHEET)
    figures = draw_forest(suite, results, dest / "figure")
    md, latex = render_claims(suite, frame, results, dest)
    scales = sorted(frame.loc[~frame["real_data"].astype(bool), "scale"].unique())
    verdicts = _json_ready({"suite": suite.name, "title": suite.title, "scale": scales[0] if scales else None,
                            "level": claims_mod.LEVEL, "rule": claims_mod.RULE, "claims": results})
    paths = [atomic_write(dest / name, lambda tmp, text=text: Path(tmp).write_text(text))
             for name, text in (("table.md", md), ("table.tex", latex),
                                (VERDICTS, json.dumps(verdicts, indent=1, allow_nan=False) + "\n"))]
    return md, paths + figures + ([sheet] if sheet else [])
