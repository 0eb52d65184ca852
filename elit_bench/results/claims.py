"""The paper's claims put to verdicts computed from records, never typed (docs/claims.md).

A suite's report names the claims and how each is tested:

    report:
      kind: claims
      claims:
        - id: C3
          claim: "at 25% tokens, tail dropping beats random dropping, which beats a multi-patch DiT"
          paper: "Table 5c: ..."                       # the paper's evidence, free text
          tests:
            - {metric: digits_fd, a: {run: ELIT-tail, eval: "25%"}, b: {run: ELIT-random, eval: "25%"},
               expect: better}
            - {metric: digits_fd, a: {run: ELIT-random, eval: "25%"}, b: {run: MP-DiT, eval: "4x4"},
               expect: not_worse, margin: 0.05}       # margin: a share of |b|
          ratios:                                      # measured figures shown beside the claim (no verdict)
            - {label: "sampling FLOPs CCFG / CFG", quantity: sample_gflops, a: {run: ELIT, eval: CCFG},
               b: {run: ELIT, eval: CFG}, paper: 0.67}

A test's effect is the improvement of a over b in the metric's better direction (b - a where lower is
better, a - b where higher is better), with a 95% interval:

- a and b are two evaluations of the same run with the same training seeds (>= 2): a paired t interval
  over the per-seed differences;
- both have >= 2 seeds otherwise: Welch's t interval of the difference of the means over seeds;
- both have one seed: the records' bootstrap replicates; the effect's replicates are the differences of
  every (a, b) pair of replicates (the two sets are drawn independently), and the interval is the basic
  bootstrap interval around the point effect, like the Frechet intervals; where a record has no bootstrap
  replicates (Wilson intervals of accuracies, IS over splits), a normal approximation from the two
  intervals' half-widths.

Verdicts (m = margin * |b|): `better` is supported when low > 0, contradicted when high < 0;
`not_worse` supported when low > -m, contradicted when high < -m; `equivalent` supported when
-m < low and high < m, contradicted when high < -m or low > m; otherwise `inconclusive at this scale`.
A claim is contradicted when any test is, supported when all are, inconclusive otherwise.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from elit_bench.errors import UserError
from elit_bench.metrics.compute import DEBIASED
from elit_bench.metrics.floor import REAL_DATA_LABEL
from elit_bench.metrics.frontier import HIGHER_IS_BETTER
from elit_bench.metrics.intervals import LEVEL, t_bounds
from elit_bench.results.records import aggregate_seeds, format_estimate, records_frame

EXPECTATIONS = ("better", "not_worse", "equivalent")
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive at this scale"
REPORT_KEYS = {"kind", "claims"}
CLAIM_KEYS = {"id", "claim", "paper", "tests", "ratios"}
TEST_KEYS = {"metric", "a", "b", "expect", "margin", "higher_is_better"}
SIDE_KEYS = {"run", "eval"}
RATIO_KEYS = {"label", "quantity", "a", "b", "paper"}
# ratios of these record columns (compute figures); any other quantity is a metric of the record
RATIO_COLUMNS = ("sample_gflops", "train_tflops_per_iter", "steps", "budget", "scale_l")
RULE = ("Verdicts, from the 95% interval [low, high] of the effect (the improvement of a over b: b - a where lower "
        "is better, a - b where higher is better) and m = margin x |b|: better: supported if low > 0, contradicted "
        "if high < 0; not worse: supported if low > -m, contradicted if high < -m; equivalent: supported if -m < low "
        "and high < m, contradicted if high < -m or low > m; otherwise inconclusive at this scale (the interval "
        "does not decide). A claim is contradicted if any of its tests is, supported if all are, else inconclusive "
        "at this scale. Intervals: paired t over the per-seed differences (two evaluations of one run, same seeds), "
        "Welch t over seeds (>= 2 seeds each), or, with one seed each, the basic bootstrap interval of the "
        "differences of the records' bootstrap replicates (a normal approximation from the intervals' half-widths "
        "where a record has no bootstrap replicates). docs/claims.md says why.")


# ---------------------------------------------------------------- validation (at load time)
def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_side(side, what: str, runs: set | None, evals: set | None) -> None:
    if not isinstance(side, dict) or set(side) != SIDE_KEYS:
        raise UserError(f"{what} must be a mapping {{run: RUN LABEL, eval: EVAL LABEL}}, got {side!r}")
    run, ev = (str(side[k]) if side[k] is not None else "" for k in ("run", "eval"))
    if not run or not ev:
        raise UserError(f"{what} needs a run label and an eval label, got {side!r}")
    if runs is not None and run not in runs and run != REAL_DATA_LABEL:
        raise UserError(f"{what} names run {run!r}, which is not a run of the suite; runs: "
                        f"{', '.join(sorted(runs))} (and {REAL_DATA_LABEL!r}, the floor)")
    if evals is not None and run != REAL_DATA_LABEL and ev not in evals:
        raise UserError(f"{what} names eval {ev!r}, which is not an evaluation of the suite; evals: "
                        f"{', '.join(sorted(evals))}")


def validate_claims(report: dict, runs: set | None = None, evals: set | None = None, where: str = "suite") -> None:
    """UserError naming the offending claim, test and key unless `report` is a well-formed claims report.

    runs / evals: the labels the suite can produce (None: not checked); a (run, eval) pair that the suite
    does not evaluate is found when the report is made (`evaluate_claims`).
    """
    bad = set(report) - REPORT_KEYS
    if bad:
        raise UserError(f"{where}: a claims report has unknown key(s) {sorted(bad)}; valid: {sorted(REPORT_KEYS)}")
    claims = report.get("claims")
    if not isinstance(claims, list) or not claims:
        raise UserError(f"{where}: a claims report needs 'claims', a non-empty list of "
                        "{id, claim, paper, tests: [...]}")
    seen = set()
    for i, claim in enumerate(claims, 1):
        if not isinstance(claim, dict):
            raise UserError(f"{where}: claim {i} must be a mapping with id, claim, paper and tests, got {claim!r}")
        name = claim.get("id")
        at = f"{where}: claim {name!r}" if _text(name) else f"{where}: claim {i}"
        bad = set(claim) - CLAIM_KEYS
        if bad:
            raise UserError(f"{at} has unknown key(s) {sorted(bad)}; valid: {sorted(CLAIM_KEYS)}")
        if not _text(name):
            raise UserError(f"{at} needs an 'id' (text, e.g. C1)")
        if name in seen:
            raise UserError(f"{at}: the id is used by another claim too")
        seen.add(name)
        if not _text(claim.get("claim")):
            raise UserError(f"{at} needs 'claim': the paper's claim in words")
        if "paper" in claim and not isinstance(claim["paper"], str):
            raise UserError(f"{at}: 'paper' (the paper's evidence) must be text, got {claim['paper']!r}")
        tests = claim.get("tests")
        if not isinstance(tests, list) or not tests:
            raise UserError(f"{at} needs 'tests': a non-empty list of "
                            "{metric, a: {run, eval}, b: {run, eval}, expect, margin}")
        for j, test in enumerate(tests, 1):
            _check_test(test, f"{at}, test {j}", runs, evals)
        ratios = claim.get("ratios") or []
        if not isinstance(ratios, list):
            raise UserError(f"{at}: 'ratios' must be a list of {{label, quantity, a, b, paper}}")
        for j, ratio in enumerate(ratios, 1):
            _check_ratio(ratio, f"{at}, ratio {j}", runs, evals)


def _check_mapping(entry, at: str, shape: str, allowed: set, required: tuple) -> None:
    """UserError unless `entry` is a mapping with only `allowed` keys and every `required` one."""
    if not isinstance(entry, dict):
        raise UserError(f"{at} must be a mapping {shape}, got {entry!r}")
    bad = set(entry) - allowed
    if bad:
        raise UserError(f"{at} has unknown key(s) {sorted(bad)}; valid: {sorted(allowed)}")
    for key in required:
        if key not in entry:
            raise UserError(f"{at} is missing {key!r}")


def _check_test(test, at: str, runs, evals) -> None:
    _check_mapping(test, at, "{metric, a, b, expect, margin}", TEST_KEYS, ("metric", "a", "b", "expect"))
    metric = test["metric"]
    if not _text(metric):
        raise UserError(f"{at}: metric must be a record's metric name (e.g. digits_fd), got {metric!r}")
    direction = test.get("higher_is_better")
    if direction is not None and not isinstance(direction, bool):
        raise UserError(f"{at}: higher_is_better must be true or false, got {direction!r}")
    if direction is None and metric not in HIGHER_IS_BETTER:
        raise UserError(f"{at}: metric {metric!r} has no known direction; known: {', '.join(HIGHER_IS_BETTER)}, "
                        "or say higher_is_better: true|false")
    if test["expect"] not in EXPECTATIONS:
        raise UserError(f"{at}: expect {test['expect']!r} is not one of {', '.join(EXPECTATIONS)}")
    margin = test.get("margin", 0)
    if not _number(margin) or margin < 0:
        raise UserError(f"{at}: margin must be a number >= 0 (a share of |b|, e.g. 0.05), got {margin!r}")
    if test["expect"] == "equivalent" and margin == 0:
        raise UserError(f"{at}: expect equivalent needs a margin > 0 (a share of |b|): an interval can only show "
                        "a difference smaller than a stated margin, never none at all")
    for key in ("a", "b"):
        _check_side(test[key], f"{at}: {key}", runs, evals)
    if {k: str(v) for k, v in test["a"].items()} == {k: str(v) for k, v in test["b"].items()}:
        raise UserError(f"{at}: a and b are the same cell {test['a']!r}; a test compares two")


def _check_ratio(ratio, at: str, runs, evals) -> None:
    _check_mapping(ratio, at, "{label, quantity, a, b, paper}", RATIO_KEYS, ("label", "quantity", "a"))
    if not _text(ratio["label"]) or not _text(ratio["quantity"]):
        raise UserError(f"{at}: label and quantity must be text (quantity: {', '.join(RATIO_COLUMNS)} or a metric)")
    if "paper" in ratio and not _number(ratio["paper"]):
        raise UserError(f"{at}: paper must be a number, got {ratio['paper']!r}")
    for key in ("a", "b"):
        if key in ratio:
            _check_side(ratio[key], f"{at}: {key}", runs, evals)


# ---------------------------------------------------------------- records -> cells
def claims_frame(records: list[dict]) -> pd.DataFrame:
    """`records_frame` plus each metric's bootstrap replicates (column `replicates`, None where there are none)."""
    frame = records_frame(records)
    if frame.empty:
        return frame
    reps = {}
    for r in records:
        for metric, bounds in (r.get("intervals") or {}).items():
            if isinstance(bounds, dict) and bounds.get("replicates") is not None:
                reps[(r["scale"], r["run_id"], r["eval_id"], metric)] = bounds["replicates"]
    frame["replicates"] = [reps.get(k) for k in zip(frame["scale"], frame["run_id"], frame["eval_id"],
                                                    frame["metric"])]
    return frame


def _cell(agg: pd.DataFrame, side: dict, metric: str, at: str) -> pd.Series:
    """The aggregated row of one (run, eval, metric); UserError naming the claim and the pair if missing."""
    run, ev = str(side["run"]), str(side["eval"])
    rows = agg[(agg["run"] == run) & (agg["eval"] == ev) & (agg["metric"] == metric)]
    if rows.empty:
        have = agg[agg["run"] == run]
        if have.empty:
            raise UserError(f"{at}: no records of run {run!r} (missing (run, eval) = ({run!r}, {ev!r})); "
                            f"run the suite first, or check the label")
        held = have[have["eval"] == ev]
        if held.empty:
            raise UserError(f"{at}: no records for (run, eval) = ({run!r}, {ev!r}); run {run!r} has evals "
                            f"{', '.join(repr(e) for e in dict.fromkeys(have['eval']))}")
        raise UserError(f"{at}: the records of (run, eval) = ({run!r}, {ev!r}) have no {metric!r}; they have "
                        f"{', '.join(dict.fromkeys(held['metric']))}")
    return rows.iloc[0]


def _seeds(row) -> list:
    return [None if pd.isna(s) else int(s) for s, *_ in row["per_seed"]]


def _values(row) -> dict:
    return {(None if pd.isna(s) else int(s)): float(v) for s, v, *_ in row["per_seed"]}


# ---------------------------------------------------------------- effects and their intervals
def welch_bounds(a, b, level: float = LEVEL) -> tuple[float, float]:
    """Welch's t interval of mean(a) - mean(b) for independent samples of >= 2 values each."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise UserError(f"a Welch interval needs at least 2 values on each side, got {len(a)} and {len(b)}")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff, se = a.mean() - b.mean(), math.sqrt(va + vb)
    if se == 0:
        return float(diff), float(diff)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = scipy_stats.t.ppf(1 - (1 - level) / 2, df) * se
    return float(diff - half), float(diff + half)


def bootstrap_difference_bounds(effect: float, replicates, level: float = LEVEL) -> tuple[float, float]:
    """Basic bootstrap interval (2 e - q_hi, 2 e - q_lo) of an effect from its replicates."""
    q_low, q_high = np.quantile(np.asarray(replicates, dtype=np.float64), [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(2 * effect - q_high), float(2 * effect - q_low)


def _half_sd(row, level: float) -> float:
    """The standard error a record's interval implies, as a normal interval's half-width / z (0 without one)."""
    if pd.isna(row["low"]) or pd.isna(row["high"]):
        return 0.0
    return (float(row["high"]) - float(row["low"])) / 2 / scipy_stats.norm.ppf(1 - (1 - level) / 2)


def _bootstrap_replicates(row):
    reps = row.get("replicates")
    method = row.get("method") or ""
    if reps is None or not isinstance(reps, (list, tuple, np.ndarray)) or len(reps) < 2:
        return None
    return np.asarray(reps, dtype=np.float64) if str(method).startswith("bootstrap") else None


def effect_interval(a, b, sign: int, same_run: bool, level: float = LEVEL) -> dict:
    """The effect sign * (a - b) of two aggregated cells with its interval, method and the seeds it used."""
    seeds_a, seeds_b = _seeds(a), _seeds(b)
    na, nb = len(seeds_a), len(seeds_b)
    effect = sign * (float(a["value"]) - float(b["value"]))
    out = {"effect": effect, "seeds": {"a": seeds_a, "b": seeds_b}}
    if na >= 2 and nb >= 2 and same_run and sorted(seeds_a) == sorted(seeds_b):
        va, vb = _values(a), _values(b)
        diffs = [sign * (va[s] - vb[s]) for s in sorted(va)]
        low, high = t_bounds(diffs, level)
        return {**out, "low": low, "high": high, "method": "paired-t-over-seeds", "differences": diffs}
    if na >= 2 and nb >= 2:
        low, high = welch_bounds(list(_values(a).values()), list(_values(b).values()), level)
        low, high = (low, high) if sign > 0 else (-high, -low)
        return {**out, "low": low, "high": high, "method": "welch-t-over-seeds"}
    if na == 1 and nb == 1:
        ra, rb = _bootstrap_replicates(a), _bootstrap_replicates(b)
        if ra is not None and rb is not None:
            # every (a, b) pair: the distribution of independently drawn replicate pairs, without the draw
            diffs = sign * np.subtract.outer(ra, rb).ravel()
            low, high = bootstrap_difference_bounds(effect, diffs, level)
            return {**out, "low": low, "high": high, "method": "bootstrap-basic-difference",
                    "replicates": [len(ra), len(rb)]}
        z = scipy_stats.norm.ppf(1 - (1 - level) / 2)
        half = z * math.hypot(_half_sd(a, level), _half_sd(b, level))
        return {**out, "low": effect - half, "high": effect + half, "method": "normal-from-intervals"}
    raise UserError(f"a has {na} training seed(s) and b has {nb}: compare cells with one seed each (bootstrap) or "
                    ">= 2 seeds each (t over seeds), not a mix")


def verdict_of(expect: str, low: float, high: float, margin: float = 0.0) -> str:
    """supported / contradicted / inconclusive at this scale, from the effect's interval and the margin m (>= 0)."""
    m = abs(margin)
    if expect == "better":
        return SUPPORTED if low > 0 else CONTRADICTED if high < 0 else INCONCLUSIVE
    if expect == "not_worse":
        return SUPPORTED if low > -m else CONTRADICTED if high < -m else INCONCLUSIVE
    if expect == "equivalent":
        return SUPPORTED if -m < low and high < m else CONTRADICTED if high < -m or low > m else INCONCLUSIVE
    raise UserError(f"expect {expect!r} is not one of {', '.join(EXPECTATIONS)}")


def claim_verdict(verdicts: list[str]) -> str:
    """contradicted if any test is, supported if all are, else inconclusive at this scale."""
    if any(v == CONTRADICTED for v in verdicts):
        return CONTRADICTED
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return INCONCLUSIVE


def _side_out(row, side: dict) -> dict:
    """A test's side as verdicts.json keeps it: the cell's value, interval, each seed, and its text in tables."""
    per_seed = [[None if pd.isna(s) else int(s), float(v), float(lo), float(hi)] for s, v, lo, hi in row["per_seed"]]
    return {"run": str(side["run"]), "eval": str(side["eval"]), "value": float(row["value"]),
            "low": float(row["low"]), "high": float(row["high"]), "interval_method": row["method"],
            "seeds": _seeds(row), "per_seed": per_seed, "text": format_estimate(row),
            "num_samples": None if pd.isna(row["num_samples"]) else int(row["num_samples"])}


def evaluate_test(test: dict, agg: pd.DataFrame, at: str, level: float = LEVEL) -> dict:
    """One test of a claim against the aggregated records: both cells, the effect, its interval, the verdict."""
    metric = test["metric"]
    if (agg["metric"] == metric + DEBIASED).any():  # records with a Frechet metric's debiased estimate: compare those
        metric += DEBIASED
    higher = test.get("higher_is_better", HIGHER_IS_BETTER.get(metric))
    if higher is None:
        raise UserError(f"{at}: metric {metric!r} has no known direction: say higher_is_better: true|false")
    a, b = _cell(agg, test["a"], metric, at), _cell(agg, test["b"], metric, at)
    if not pd.isna(a["num_samples"]) and not pd.isna(b["num_samples"]) and a["num_samples"] != b["num_samples"]:
        # a Frechet distance's bias and every interval's width depend on the sample count
        raise UserError(f"{at}: a has {int(a['num_samples'])} samples per set and b {int(b['num_samples'])}: compare "
                        "cells scored at the same sample count")
    sign = 1 if higher else -1
    same = str(test["a"]["run"]) == str(test["b"]["run"])
    try:
        effect = effect_interval(a, b, sign, same, level)
    except UserError as exc:
        raise UserError(f"{at}: {exc}") from None
    margin = float(test.get("margin", 0))
    m = margin * abs(float(b["value"]))
    return {"metric": metric, "higher_is_better": bool(higher), "expect": test["expect"], "margin": margin,
            "margin_abs": m, "a": _side_out(a, test["a"]), "b": _side_out(b, test["b"]), **effect,
            "level": level, "verdict": verdict_of(test["expect"], effect["low"], effect["high"], m)}


def _quantity(agg: pd.DataFrame, side: dict, quantity: str, at: str) -> float:
    if quantity in RATIO_COLUMNS:
        rows = agg[(agg["run"] == str(side["run"])) & (agg["eval"] == str(side["eval"]))]
        if rows.empty:
            raise UserError(f"{at}: no records for (run, eval) = ({side['run']!r}, {side['eval']!r})")
        return float(rows.iloc[0][quantity])
    return float(_cell(agg, side, quantity, at)["value"])


def evaluate_ratio(ratio: dict, agg: pd.DataFrame, at: str) -> dict:
    """A measured figure shown beside a claim: quantity of a over that of b (or a's alone)."""
    a = _quantity(agg, ratio["a"], ratio["quantity"], at)
    b = _quantity(agg, ratio["b"], ratio["quantity"], at) if ratio.get("b") else None
    value = a / b if b not in (None, 0) else (a if b is None else math.nan)
    return {"label": ratio["label"], "quantity": ratio["quantity"], "a": ratio["a"], "b": ratio.get("b"),
            "value": value, "paper": ratio.get("paper")}


def evaluate_claims(claims: list[dict], frame: pd.DataFrame, level: float = LEVEL) -> list[dict]:
    """Every claim of a report with its tests' effects and verdicts, from a records frame (`claims_frame`)."""
    if frame.empty:
        raise UserError("no records to put the claims to: run the suite first")
    scales = sorted(frame.loc[~frame["real_data"].astype(bool), "scale"].unique())
    if len(scales) > 1:
        raise UserError(f"the records hold scales {', '.join(scales)}: claims compare one scale; choose it "
                        "with --scale")
    if "replicates" not in frame.columns:
        frame = frame.assign(replicates=None)
    agg = aggregate_seeds(frame)
    out = []
    for claim in claims:
        at = f"claim {claim['id']!r}"
        tests = [evaluate_test(t, agg, f"{at}, test {j}", level) for j, t in enumerate(claim["tests"], 1)]
        ratios = [evaluate_ratio(r, agg, f"{at}, ratio {j}") for j, r in enumerate(claim.get("ratios") or [], 1)]
        out.append({"id": claim["id"], "claim": claim["claim"], "paper": claim.get("paper", ""),
                    "verdict": claim_verdict([t["verdict"] for t in tests]), "tests": tests, "ratios": ratios})
    return out
