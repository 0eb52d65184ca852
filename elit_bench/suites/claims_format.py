"""The claims report's file format: its keys, expectations and metrics, checked when a suite loads.

The suite layer validates a suite's `report:` before anything runs; the verdicts are computed from records by
`elit_bench.results.claims` (docs/claims.md).
"""

from __future__ import annotations

import math
import numbers

from elit_bench.errors import UserError
from elit_bench.metrics.compute import HIGHER_IS_BETTER, METRICS
from elit_bench.suites.floor import REAL_DATA_LABEL

EXPECTATIONS = ("better", "not_worse", "equivalent")
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive at this scale"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
ALPHA = 0.05
REPORT_KEYS = {"kind", "claims", "alpha"}
CLAIM_KEYS = {"id", "claim", "paper", "tests", "ratios"}
TEST_KEYS = {"metric", "a", "b", "expect", "margin", "margin_abs", "higher_is_better"}
SIDE_KEYS = {"run", "eval"}
RATIO_KEYS = {"label", "quantity", "a", "b", "paper"}
# ratios of these record columns (compute figures); any other quantity is a metric of the record
RATIO_COLUMNS = ("sample_gflops", "train_tflops_per_iter", "steps", "budget", "scale_l")
# a metric kind -> the per-seed statistic of its per-sample values (`metrics.paired`)
STATISTIC_OF_KIND = {"frechet": "frechet", "accuracy": "mean"}


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
    alpha = report.get("alpha", ALPHA)
    if not _number(alpha) or not 0 < alpha < 0.5:
        raise UserError(f"{where}: the claims report's alpha must be a number in (0, 0.5) (one-sided, e.g. 0.05), "
                        f"got {alpha!r}")
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
                            "{metric, a: {run, eval}, b: {run, eval}, expect, margin | margin_abs}")
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
    _check_mapping(test, at, "{metric, a, b, expect, margin | margin_abs}", TEST_KEYS, ("metric", "a", "b", "expect"))
    metric = test["metric"]
    if not _text(metric):
        raise UserError(f"{at}: metric must be a record's metric name (e.g. digits_fd), got {metric!r}")
    if metric not in METRICS or METRICS[metric].kind not in STATISTIC_OF_KIND:
        testable = ", ".join(m for m, s in METRICS.items() if s.kind in STATISTIC_OF_KIND)
        raise UserError(f"{at}: metric {metric!r} has no per-sample values to test a claim on; testable: {testable}")
    direction = test.get("higher_is_better")
    if direction is not None and not isinstance(direction, bool):
        raise UserError(f"{at}: higher_is_better must be true or false, got {direction!r}")
    if direction is None and metric not in HIGHER_IS_BETTER:
        raise UserError(f"{at}: metric {metric!r} has no known direction; known: {', '.join(HIGHER_IS_BETTER)}, "
                        "or say higher_is_better: true|false")
    expect = test["expect"]
    if expect not in EXPECTATIONS:
        raise UserError(f"{at}: expect {expect!r} is not one of {', '.join(EXPECTATIONS)}")
    if "margin" in test and "margin_abs" in test:
        raise UserError(f"{at}: give margin (a share of b's debiased estimate) or margin_abs (in the metric's "
                        "units), not both")
    key = "margin_abs" if "margin_abs" in test else "margin"
    margin = test.get(key, 0)
    if not _number(margin) or margin < 0:
        raise UserError(f"{at}: {key} must be a number >= 0, got {margin!r}")
    if expect == "better" and margin:
        raise UserError(f"{at}: expect better tests effect > 0 and takes no margin; for 'at most m worse' say "
                        "expect: not_worse")
    if expect == "equivalent" and margin == 0:
        raise UserError(f"{at}: expect equivalent needs a margin > 0 (margin or margin_abs): a test can only show a "
                        "difference smaller than a stated margin, never none at all")
    for side in ("a", "b"):
        _check_side(test[side], f"{at}: {side}", runs, evals)
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
