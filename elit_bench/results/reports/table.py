"""The `table` report kind: the paper's layout, ours beside the published numbers (Markdown, LaTeX).

    report: {kind: table}                                                  # layout: wide with a paper table, else long
    report: {kind: table, rho: {LOW-COMPUTE RUN: HIGH-COMPUTE RUN, ...}}   # Table 6: rho from our records

Tables put each published number (suite `paper: {table, setting}`) next to
ours with the relative change; runs map to published rows by `paper_row`
and evaluations to published columns by `paper_guidance`. Every number
carries its 95% interval, records of several training seeds show their
mean, std and each seed, and a suite's `real data` record (the floor of a
digits suite) is the first row of its table. The contact sheet of every
sample set goes beside the table.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from elit_bench.checkpoint import atomic_write
from elit_bench.errors import UserError
from elit_bench.metrics.compute import DEBIASED, HIGHER_IS_BETTER, METRICS, record_key
from elit_bench.metrics.frontier import rho
from elit_bench.results.records import aggregate_seeds, format_estimate, published, records_frame
from elit_bench.results.report import (
    CONTACT_SHEET,
    METRIC_LABELS,
    suite_order,
    write_contact_sheet,
)
from elit_bench.suites.floor import REAL_DATA_LABEL

CELL_NOTE = ("Cells: value ± half-width of its 95% interval, or value [low, high] where the interval is not centred "
             "on the value (Frechet distances: a basic bootstrap interval for the distance itself, which sits below "
             "the biased plug-in value); with several training seeds, the estimate over seeds with its 95% "
             "interval (over seeds and samples, or a t interval over seeds that omits sampling noise for records "
             "without per-sample values), the sd over seeds, labelled sd, then each seed, named. "
             "Methods: docs/intervals.md.")
# records with debiased Frechet estimates: their plug-in column is the protocol's value at N
AT_N_NOTE = (" FD@N: the plug-in Frechet distance at the set's N samples, the protocol's (and the paper's) number, "
             "biased upward by the finite sample sizes of both sides; (debiased): the estimate of the population "
             "distance with its 95% interval (both sides resampled), on which the real-data floor reads about 0.")
NOT_COMPARABLE = "†"  # marks a published number measured under another protocol
_NAME_OF_VALUE = {spec.keys[0]: name for name, spec in METRICS.items()}  # "is_mean" -> "is"


def rho_key(metric: str) -> str:
    """The published name of a metric's rho column: rho_ and the name of the metric whose value it is (rho_is for
    is_mean)."""
    return "rho_" + _NAME_OF_VALUE.get(metric, metric)


# column headers: every metric key's label, then rho of each quality ("FD(digits)" -> "rho(FD digits)")
LABELS = {**METRIC_LABELS, **{rho_key(key): "rho({})".format(re.sub(r" ?\((.*)\)", r" \1", METRIC_LABELS[key]))
                              for key in HIGHER_IS_BETTER}}


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


def render_table(suite, frame: pd.DataFrame, dest: Path | None = None) -> tuple[str, str]:
    """(Markdown, LaTeX). Layout "wide" (the paper's: a row per run, a column per metric and evaluation;
    the default when the suite names a paper table) or "long" (a row per run and evaluation).
    With `dest` (where the Markdown goes) the long layout links each evaluation's sample grid."""
    cmp = comparison(suite, frame)
    cmp["cell"] = [_cell(format_estimate(r), r["paper"], r["change_pct"]) for _, r in cmp.iterrows()]
    debiased = {m.removesuffix(DEBIASED) for m in cmp["metric"] if m.endswith(DEBIASED)}
    cmp["label"] = cmp["metric"].map(lambda m: LABELS.get(m, m) + ("@N" if m in debiased else ""))
    # rows and columns in the suite's order: runs and evaluations as written, metrics as the paper prints them
    specs = suite.runs(cmp["scale"].iloc[0], strict_variables=False)
    # wide columns: evaluations in first-seen order; long rows: each run's own evaluation order
    run_rank, eval_rank, run_eval_rank = suite_order(suite, cmp["scale"].iloc[0])
    names = [n for r in specs for e in r.evals for n in e.metrics.get("names", [])]
    keys = [k for n in names for k in (record_key(n), n + DEBIASED)]  # the debiased beside the value at N
    metric_rank = {m: i for i, m in enumerate(dict.fromkeys(keys + list(LABELS)))}
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
            if suite.paper.get("table") and (cmp["paper"].notna().any() or
                                             ("paper_tf" in cmp and cmp["paper_tf"].notna().any()))
            else "No published counterpart: cells are ours.")
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


def frame(suite, records: list[dict]) -> pd.DataFrame:
    """The records as a table needs them: one row per (record, metric) (`records_frame`)."""
    return records_frame(records)


def write(suite, frame: pd.DataFrame, dest: Path) -> tuple[str, list[Path]]:
    """DEST/samples.png (the contact sheet, when there are samples), DEST/table.md and DEST/table.tex;
    returns the Markdown and the paths."""
    dest = Path(dest)
    sheet = write_contact_sheet(suite, frame, dest / CONTACT_SHEET)
    md, latex = render_table(suite, frame, dest)
    paths = [atomic_write(dest / name, lambda tmp, text=text: Path(tmp).write_text(text))
             for name, text in (("table.md", md), ("table.tex", latex))]
    return md, paths + ([sheet] if sheet else [])

