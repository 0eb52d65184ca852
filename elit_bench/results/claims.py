"""The paper's claims put to verdicts computed from records, never typed (docs/claims.md).

A suite's report names the claims and how each is tested:

    report:
      kind: claims
      alpha: 0.05                                      # one-sided, Holm over the suite's tests (default 0.05)
      claims:
        - id: C3
          claim: "at 25% tokens, tail dropping beats random dropping, which beats a multi-patch DiT"
          paper: "Table 5c: ..."                       # the paper's evidence, free text
          tests:
            - {metric: digits_fd, a: {run: ELIT-tail, eval: "25%"}, b: {run: ELIT-random, eval: "25%"},
               expect: better}
            - {metric: digits_fd, a: {run: ELIT-random, eval: "25%"}, b: {run: MP-DiT, eval: "4x4"},
               expect: not_worse, margin: 0.05}       # margin: a share of b's debiased estimate
            - {metric: digits_acc, a: ..., b: ..., expect: equivalent, margin_abs: 0.02}   # or in the metric's units
          ratios:                                      # measured figures shown beside the claim (no verdict)
            - {label: "sampling FLOPs CCFG / CFG", quantity: sample_gflops, a: {run: ELIT, eval: CCFG},
               b: {run: ELIT, eval: CFG}, paper: 0.67}

A cell (run, eval) is the mean over its training seeds of a per-seed statistic of the per-sample values the
records keep beside them: the debiased Frechet distance of the seed's features to the reference's, or the mean
of per-sample values (class accuracy). A test's effect is the improvement of a over b in the metric's better
direction (b - a where lower is better, a - b where higher is better) with the bootstrap of the difference
(`metrics.paired.difference_interval`: paired sample by sample where two sets share noise seeds, seed by seed
where two cells share training seeds). Each test is one-sided at the report's alpha:

    better       H1: effect > 0                     contradicted by H1': effect < 0
    not_worse    H1: effect > -m                    contradicted by H1': effect < -m
    equivalent   H1: -m < effect < m (TOST)         contradicted by H1': effect < -m or effect > m

with m = margin_abs, or margin x |b's debiased estimate|. The p-values of H1 over all tests of the suite are
Holm-adjusted as one family, those of H1' as another; a test is supported where its adjusted p <= alpha,
contradicted where its opposite's is, `inconclusive at this scale` otherwise. A claim is contradicted when any
test is, supported when all are, inconclusive otherwise.

`frame(suite, records)` and `write(suite, frame, dest)` make the report (table.md, table.tex, verdicts.json, the
forest plot and the contact sheet); `draw(suite, frame, path_stem)` draws the forest plot alone.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from elit_bench.checkpoint import atomic_write
from elit_bench.errors import UserError
from elit_bench.metrics.compute import HIGHER_IS_BETTER, METRICS
from elit_bench.metrics.intervals import LEVEL
from elit_bench.metrics.paired import (
    REPLICATES,
    difference_interval,
    holm,
    one_sided_p,
)
from elit_bench.results.records import aggregate_seeds, cell_arm, format_interval, records_frame
from elit_bench.results.report import CONTACT_SHEET, METRIC_LABELS, save_figure, write_contact_sheet
from elit_bench.suites.claims_format import (
    ALPHA,
    CONTRADICTED,
    EXPECTATIONS,
    INCONCLUSIVE,
    RATIO_COLUMNS,
    STATISTIC_OF_KIND,
    SUPPORTED,
    VERDICTS,
)

EXPECT_TEXT = {"better": "better", "not_worse": "not worse", "equivalent": "equivalent"}
VERDICT_COLOURS = {SUPPORTED: "#1a9641", CONTRADICTED: "#d7191c", INCONCLUSIVE: "0.45"}
VERDICTS_FILE = "verdicts.json"


def rule_text(alpha: float, tests: int, replicates: int = REPLICATES) -> str:
    """The verdict rule as the table states it under itself."""
    return (f"Effect: the improvement of a over b (b - a where lower is better, a - b where higher is better); a cell "
            "is the mean over its training seeds of the debiased Frechet distance (or of the per-sample values: "
            "accuracy). Its 95% interval and the p-values come from one bootstrap of both cells' per-sample values "
            f"({replicates} replicates; paired sample by sample where two sets share noise seeds, and seed by seed "
            "where the two cells share training seeds; the smallest p is 1/(replicates + 1)). One-sided tests at "
            f"alpha = {alpha:g}: better: H1 effect > 0; not worse: H1 effect > -m; equivalent: H1 -m < effect < m "
            "(two one-sided tests, p the larger). Supported where the Holm-adjusted p <= alpha; contradicted where "
            "the opposite test's Holm-adjusted p <= alpha (better: effect < 0; not worse: effect < -m; equivalent: "
            "effect outside [-m, m], p twice the smaller one-sided p); otherwise inconclusive at this scale. "
            f"Holm family: the suite's {tests} tests, one family for support and one for contradiction. m: the "
            "margin in the metric's units (margin_abs), or margin x abs(b's debiased estimate). A claim is "
            "contradicted if any of its tests is, supported if all are, else inconclusive at this scale. Cells a "
            "and b: estimate [95% interval] (\"±\": a 95% half-width), the training seeds, and FD@N, the plug-in "
            "Frechet distance at N samples per seed (the protocol's number, biased upward). docs/claims.md says why.")


# ---------------------------------------------------------------- records -> cells
def claims_frame(records: list[dict]) -> pd.DataFrame:
    """`records_frame` plus column `record`: the record each row came from (its per-sample values are beside it)."""
    frame = records_frame(records)
    if frame.empty:
        return frame
    by_set = {(r["scale"], r["run_id"], r["eval_id"]): r for r in records}
    frame["record"] = [by_set[k] for k in zip(frame["scale"], frame["run_id"], frame["eval_id"])]
    return frame


def frame(suite, records: list[dict]) -> pd.DataFrame:
    """The records as a claims report needs them (`claims_frame`); the report kind's entry point."""
    return claims_frame(records)


def _rows(frame: pd.DataFrame, side: dict, metric: str, at: str) -> pd.DataFrame:
    """The rows of one (run, eval, metric), one per training seed; UserError naming the claim and the pair if none."""
    run, ev = str(side["run"]), str(side["eval"])
    rows = frame[(frame["run"] == run) & (frame["eval"] == ev) & (frame["metric"] == metric)]
    if rows.empty:
        have = frame[frame["run"] == run]
        if have.empty:
            raise UserError(f"{at}: no records of run {run!r} (missing (run, eval) = ({run!r}, {ev!r})); "
                            f"run the suite first, or check the label")
        held = have[have["eval"] == ev]
        if held.empty:
            raise UserError(f"{at}: no records for (run, eval) = ({run!r}, {ev!r}); run {run!r} has evals "
                            f"{', '.join(repr(e) for e in dict.fromkeys(have['eval']))}")
        raise UserError(f"{at}: the records of (run, eval) = ({run!r}, {ev!r}) have no {metric!r}; they have "
                        f"{', '.join(dict.fromkeys(held['metric']))}")
    return rows.sort_values("seed", kind="stable", na_position="first").drop_duplicates("seed")


class _Cells:
    """The arms of one report, each read once (a cell can appear in several tests)."""

    def __init__(self, frame: pd.DataFrame, replicates: int, seed: int):
        self.frame, self.replicates, self.seed = frame, replicates, seed
        self.arms = {}

    def arm(self, side: dict, metric: str, at: str):
        """(Arm, reference features or None, rows) of a side; UserError naming the test where values are missing."""
        key = (str(side["run"]), str(side["eval"]), metric)
        if key not in self.arms:
            rows = _rows(self.frame, side, metric, at)
            arm, reference = cell_arm(list(rows["record"]), metric, at)
            self.arms[key] = (arm, reference, rows)
        return self.arms[key]


# ---------------------------------------------------------------- effects, p-values, verdicts
def _p(diff: dict, sign: int, boundary: float, alternative: str) -> float:
    """One-sided p of H1: effect <alternative> boundary, effect = sign x (a - b), from the interval of a - b."""
    if sign < 0:
        boundary, alternative = -boundary, {"greater": "less", "less": "greater"}[alternative]
    return one_sided_p(diff, boundary, alternative)


def pvalues_of(expect: str, diff: dict, sign: int, m: float) -> tuple[float, float]:
    """(p of the claim's H1, p of its opposite) for one test: see the module's table."""
    if expect == "better":
        return _p(diff, sign, 0.0, "greater"), _p(diff, sign, 0.0, "less")
    if expect == "not_worse":
        return _p(diff, sign, -m, "greater"), _p(diff, sign, -m, "less")
    if expect == "equivalent":
        # TOST: inside (-m, m) needs both one-sided tests; outside is either side, Bonferroni over the two
        inside = max(_p(diff, sign, -m, "greater"), _p(diff, sign, m, "less"))
        outside = min(1.0, 2 * min(_p(diff, sign, -m, "less"), _p(diff, sign, m, "greater")))
        return inside, outside
    raise UserError(f"expect {expect!r} is not one of {', '.join(EXPECTATIONS)}")


def verdict_of(p_holm: float, p_opposite_holm: float, alpha: float = ALPHA) -> str:
    """supported / contradicted / inconclusive at this scale, from the Holm-adjusted p-values of a test and of its
    opposite (at alpha < 0.5 both cannot be <= alpha: their raw p-values sum to about 1)."""
    if p_holm <= alpha:
        return SUPPORTED
    return CONTRADICTED if p_opposite_holm <= alpha else INCONCLUSIVE


def claim_verdict(verdicts: list[str]) -> str:
    """contradicted if any test is, supported if all are, else inconclusive at this scale."""
    if any(v == CONTRADICTED for v in verdicts):
        return CONTRADICTED
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return INCONCLUSIVE


def _side_out(side: dict, cell: dict, rows: pd.DataFrame, metric: str) -> dict:
    """A test's side as verdicts.json keeps it: the cell's estimate and interval, its seeds, and per seed the
    record's protocol value at N (FD@N for a Frechet metric)."""
    seeds = [None if pd.isna(s) else int(s) for s in rows["seed"]]
    at_n = [float(v) for v in rows["value"]]
    num = rows["num_samples"].dropna()
    out = {"run": str(side["run"]), "eval": str(side["eval"]), "estimate": cell["estimate"], "low": cell["low"],
           "high": cell["high"], "interval_method": cell["method"], "level": cell["level"], "seeds": seeds,
           "value_at_n": at_n, "num_samples": int(num.iloc[0]) if len(num) else None}
    text = f"{format_interval(cell['estimate'], cell['low'], cell['high'])} (seed{'s' * (len(seeds) > 1)} " \
           f"{', '.join('-' if s is None else str(s) for s in seeds)}"
    if METRICS[metric].kind == "frechet":
        text += f"; FD@{out['num_samples']}: {', '.join(f'{v:.4g}' for v in at_n)}"
    return {**out, "text": text + ")"}


def evaluate_test(test: dict, cells: _Cells, at: str) -> dict:
    """One test: both cells, the effect with its 95% interval and the raw p-values (Holm comes over the suite)."""
    metric = test["metric"]
    statistic = STATISTIC_OF_KIND[METRICS[metric].kind]
    higher = test.get("higher_is_better", HIGHER_IS_BETTER.get(metric))
    arm_a, ref_a, rows_a = cells.arm(test["a"], metric, at)
    arm_b, ref_b, rows_b = cells.arm(test["b"], metric, at)
    na, nb = set(rows_a["num_samples"].dropna()), set(rows_b["num_samples"].dropna())
    if na and nb and na != nb:
        # every interval's width (and what is left of a Frechet distance's bias) depends on the sample count
        raise UserError(f"{at}: a has {', '.join(map(str, sorted(map(int, na))))} samples per set and b "
                        f"{', '.join(map(str, sorted(map(int, nb))))}: compare cells scored at the same sample count")
    if (ref_a is None) != (ref_b is None) or (ref_a is not None and not np.array_equal(ref_a, ref_b)):
        raise UserError(f"{at}: a and b are scored against different {metric} references: compare cells of one "
                        "reference")
    try:
        diff = difference_interval(arm_a, arm_b, statistic, ref_a, cells.replicates, cells.seed)
    except UserError as exc:
        raise UserError(f"{at}: {exc}") from None
    # each cell's interval from the same drawing (for a and for a paired b, the drawing `cell_interval` makes)
    cell_a, cell_b = diff["a"], diff["b"]
    sign = 1 if higher else -1
    effect, low, high = (sign * diff[k] for k in ("estimate", "low", "high"))
    low, high = min(low, high), max(low, high)
    if "margin_abs" in test:
        margin, m = None, float(test["margin_abs"])
    else:
        margin = float(test.get("margin", 0))
        m = margin * abs(cell_b["estimate"])
    p, p_opposite = pvalues_of(test["expect"], diff, sign, m)
    return {"metric": metric, "statistic": statistic, "higher_is_better": bool(higher), "expect": test["expect"],
            "margin": margin, "margin_abs": m, "a": _side_out(test["a"], cell_a, rows_a, metric),
            "b": _side_out(test["b"], cell_b, rows_b, metric), "effect": effect, "low": low, "high": high,
            "level": diff["level"], "method": diff["method"], "pairing": diff["pairing"],
            "seeds": diff["seeds"], "replicates": len(diff["replicates"]), "p": p, "p_opposite": p_opposite}


def _quantity(frame: pd.DataFrame, side: dict, quantity: str, at: str) -> float:
    agg = aggregate_seeds(frame.drop(columns=["record"], errors="ignore"))
    if quantity in RATIO_COLUMNS:
        rows = agg[(agg["run"] == str(side["run"])) & (agg["eval"] == str(side["eval"]))]
        if rows.empty:
            raise UserError(f"{at}: no records for (run, eval) = ({side['run']!r}, {side['eval']!r})")
        return float(rows.iloc[0][quantity])
    _rows(frame, side, quantity, at)  # names a missing cell
    rows = agg[(agg["run"] == str(side["run"])) & (agg["eval"] == str(side["eval"])) & (agg["metric"] == quantity)]
    return float(rows.iloc[0]["value"])


def evaluate_ratio(ratio: dict, frame: pd.DataFrame, at: str) -> dict:
    """A measured figure shown beside a claim: quantity of a over that of b (or a's alone)."""
    a = _quantity(frame, ratio["a"], ratio["quantity"], at)
    b = _quantity(frame, ratio["b"], ratio["quantity"], at) if ratio.get("b") else None
    value = a / b if b not in (None, 0) else (a if b is None else math.nan)
    return {"label": ratio["label"], "quantity": ratio["quantity"], "a": ratio["a"], "b": ratio.get("b"),
            "value": value, "paper": ratio.get("paper")}


def evaluate_claims(claims: list[dict], frame: pd.DataFrame, alpha: float = ALPHA, replicates: int = REPLICATES,
                    seed: int = 0) -> list[dict]:
    """Every claim of a report with its tests' effects, p-values (raw and Holm-adjusted over all tests of the
    report) and verdicts, from a records frame (`claims_frame`)."""
    if frame.empty:
        raise UserError("no records to put the claims to: run the suite first")
    scales = sorted(frame.loc[~frame["real_data"].astype(bool), "scale"].unique())
    if len(scales) > 1:
        raise UserError(f"the records hold scales {', '.join(scales)}: claims compare one scale; choose it "
                        "with --scale")
    cells = _Cells(frame, replicates, seed)
    out = []
    for claim in claims:
        at = f"claim {claim['id']!r}"
        tests = [evaluate_test(t, cells, f"{at}, test {j}") for j, t in enumerate(claim["tests"], 1)]
        ratios = [evaluate_ratio(r, frame, f"{at}, ratio {j}") for j, r in enumerate(claim.get("ratios") or [], 1)]
        out.append({"id": claim["id"], "claim": claim["claim"], "paper": claim.get("paper", ""), "tests": tests,
                    "ratios": ratios})
    family = [t for claim in out for t in claim["tests"]]
    for key in ("p", "p_opposite"):
        for t, adjusted in zip(family, holm([t[key] for t in family])):
            t[f"{key}_holm"] = adjusted
    for claim in out:
        for t in claim["tests"]:
            t["alpha"], t["family"] = alpha, len(family)
            t["verdict"] = verdict_of(t["p_holm"], t["p_opposite_holm"], alpha)
        claim["verdict"] = claim_verdict([t["verdict"] for t in claim["tests"]])
    return out


# ---------------------------------------------------------------- the report: table, forest plot, verdicts.json
def _alpha(suite) -> float:
    return float(suite.report.get("alpha", ALPHA))


def _boundary_text(t: dict) -> str:
    m = f"{t['margin_abs']:.3g}"
    return {"better": "H1 effect > 0", "not_worse": f"H1 effect > -{m}",
            "equivalent": f"H1 -{m} < effect < {m}"}[t["expect"]]


def _test_text(t: dict) -> str:
    metric = METRIC_LABELS.get(t["metric"], t["metric"])
    metric += ", debiased" if t["statistic"] == "frechet" else ""
    way = "higher" if t["higher_is_better"] else "lower"
    text = (f"{t['a']['run']} @ {t['a']['eval']} vs {t['b']['run']} @ {t['b']['eval']}: {metric} ({way} is better), "
            f"expect {EXPECT_TEXT[t['expect']]}")
    if t["margin"]:
        text += f", margin {t['margin']:.3g} x abs(b's debiased estimate) = {t['margin_abs']:.3g}"
    elif t["margin_abs"]:
        text += f", margin {t['margin_abs']:.3g} (absolute)"
    return f"{text}; {_boundary_text(t)}"


def _method_text(t: dict) -> str:
    seeds = {k: ", ".join(map(str, v)) for k, v in t["seeds"].items()}
    how = ("paired sample by sample (shared noise seeds)" if t["pairing"] == "paired"
           else "unpaired (each side resampled on its own)")
    if t["pairing"] == "paired" and len(t["seeds"]["a"]) > 1:
        how += " and seed by seed"
    return f"bootstrap of the difference, {t['replicates']} replicates, {how}; seeds a: {seeds['a']}, b: {seeds['b']}"


def _p_text(p: float) -> str:
    return f"{p:.2g}"


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
                         "method (seeds)": _method_text(t), "p": _p_text(t["p"]), "Holm p": _p_text(t["p_holm"]),
                         "p opposite": _p_text(t["p_opposite"]), "Holm p opposite": _p_text(t["p_opposite_holm"]),
                         "test verdict": t["verdict"], "claim verdict": claim["verdict"] if first else ""})
    return pd.DataFrame(rows)


def ratios_table(results: list[dict]) -> pd.DataFrame:
    rows = []
    for claim in results:
        for r in claim["ratios"]:
            over = f" / {r['b']['run']} @ {r['b']['eval']}" if r["b"] else ""
            rows.append({"claim": claim["id"], "figure": r["label"],
                         "of": f"{r['quantity']}: {r['a']['run']} @ {r['a']['eval']}{over}",
                         "ours": _figure(r["value"]), "paper": _figure(r["paper"]) if r["paper"] is not None else "-"})
    return pd.DataFrame(rows)


def _figure(value) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.4g}"


def render_claims(suite, frame: pd.DataFrame, results: list[dict], dest: Path | None = None) -> tuple[str, str]:
    """(Markdown, LaTeX) of a claims report."""
    table = claims_table(results)
    counts = pd.Series([c["verdict"] for c in results]).value_counts()
    tally = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in VERDICTS)
    samples = sorted({int(n) for n in frame["num_samples"].dropna()})
    family = sum(len(c["tests"]) for c in results)
    header = (f"# {suite.title}\n\nscale: {', '.join(sorted(frame['scale'].unique()))}; samples per set: {samples}\n\n"
              f"Claims: {tally}. One-sided tests at alpha = {_alpha(suite):g}, Holm-adjusted over the family of "
              f"this suite's {family} tests.\n\n")
    if dest is not None:
        if (Path(dest) / "figure.png").is_file():
            header += "Effects and their intervals: [figure.png](figure.png)\n\n"
        if (Path(dest) / CONTACT_SHEET).is_file():
            header += f"Samples of every evaluation: [{CONTACT_SHEET}]({CONTACT_SHEET})\n\n"
    md = header + table.to_markdown(index=False)
    ratios = ratios_table(results)
    if not ratios.empty:
        md += "\n\nMeasured beside the claims (no verdict):\n\n" + ratios.to_markdown(index=False)
    md += f"\n\n{rule_text(_alpha(suite), family)}\n"
    latex = table.to_latex(index=False, escape=True, caption=suite.title, label=f"tab:{suite.name}")
    if not ratios.empty:
        latex += "\n" + ratios.to_latex(index=False, escape=True, caption=f"{suite.title}: measured ratios",
                                        label=f"tab:{suite.name}-ratios")
    return md, latex


def draw_forest(suite, results: list[dict], path_stem: Path) -> list[Path]:
    """Each test's effect in % of abs(b's estimate) with its 95% interval, a zero line and the margin band,
    coloured by verdict; PNG and SVG."""
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
        scale = abs(t["b"]["estimate"])
        if not scale or not math.isfinite(scale):
            skipped.append(labels[-1])
            continue
        rel = [100 * v / scale for v in (t["effect"], t["low"], t["high"])]
        band = 100 * t["margin_abs"] / scale
        if band and t["expect"] == "equivalent":
            ax.fill_betweenx([y - 0.3, y + 0.3], -band, band, color="0.85", lw=0)
        elif band:  # not worse: tolerated down to -m
            ax.fill_betweenx([y - 0.3, y + 0.3], -band, 0, color="0.85", lw=0)
        ax.errorbar(rel[0], y, xerr=[[rel[0] - rel[1]], [rel[2] - rel[0]]], fmt="o", color=VERDICT_COLOURS[t["verdict"]],
                    capsize=3, ms=5)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(tests)), labels, fontsize=7)
    ax.set_ylim(len(tests) - 0.5, -0.5)
    # short lines: the long test labels on the left leave the axes little width, and text wider than the
    # axes would be cut at the figure's edge
    ax.set_xlabel("effect: improvement of a over b, in % of abs(b's debiased estimate)\nbars: 95% intervals; grey: "
                  "the margin\n(-m..m for equivalent, -m..0 for not worse)", fontsize=8)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    ax.legend(handles=handles, fontsize=7, loc="best")
    title = suite.title + (f" ({len(skipped)} test(s) with b = 0 not drawn)" if skipped else "")
    ax.set_title(textwrap.fill(title, 50), fontsize=9)
    return save_figure(fig, path_stem)


def draw(suite, frame: pd.DataFrame, path_stem: Path) -> list[Path]:
    """The forest plot alone (`elit-bench plot`)."""
    return draw_forest(suite, evaluate_claims(suite.report["claims"], frame, _alpha(suite)), path_stem)


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


def write(suite, frame: pd.DataFrame, dest: Path) -> tuple[str, list[Path]]:
    """A claims report under DEST: samples.png, figure.png / .svg (forest plot), table.md, table.tex and
    verdicts.json, every verdict computed from the records in `frame` (`claims_frame`); returns the Markdown and
    the paths."""
    dest = Path(dest)
    alpha = _alpha(suite)
    results = evaluate_claims(suite.report["claims"], frame, alpha)
    sheet = write_contact_sheet(suite, frame, dest / CONTACT_SHEET)
    figures = draw_forest(suite, results, dest / "figure")
    md, latex = render_claims(suite, frame, results, dest)
    scales = sorted(frame.loc[~frame["real_data"].astype(bool), "scale"].unique())
    family = sum(len(c["tests"]) for c in results)
    verdicts = _json_ready({"suite": suite.name, "title": suite.title, "scale": scales[0] if scales else None,
                            "alpha": alpha, "level": LEVEL, "family": family, "rule": rule_text(alpha, family),
                            "claims": results})
    paths = [atomic_write(dest / name, lambda tmp, text=text: Path(tmp).write_text(text))
             for name, text in (("table.md", md), ("table.tex", latex),
                                (VERDICTS_FILE, json.dumps(verdicts, indent=1, allow_nan=False) + "\n"))]
    return md, paths + figures + ([sheet] if sheet else [])
