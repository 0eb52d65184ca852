"""`elit-bench plan SUITE`: how many training seeds (and samples per set) each claims test needs, from pilot records.

For each test of the suite's claims report (docs/claims.md) the planner reads the per-sample values the pilot
records keep (`results.records.cell_arm`) and splits the noise of the compared quantity into two components
(docs/intervals.md, "Planning"):

- within-seed sampling variance w: the bootstrap variance of one seed's estimate over its samples (and the
  reference), averaged over seeds; it shrinks as 1 / N with the samples per set;
- between-seed (model-level) variance b: the variance of the per-seed estimates over seeds minus w (method of
  moments, clipped at 0; unknown with one seed, then taken as 0, so the seeds it prints are a lower bound).

Where a and b pair (the same training seeds, the same noise seeds), the components are those of the per-seed
paired difference; otherwise each arm's, added. With k seeds per arm the effect's standard error is
sqrt((b + w N0 / N) / k), and a one-sided test at level alpha' decides (supported or contradicted) with
power P when |effect - boundary| >= (z_{1 - alpha'} + z_P) se: boundary 0 for `better`, -margin for
`not_worse`, and for `equivalent` the margin's distance from |effect|. alpha' = alpha / m over the suite's m
tests: Bonferroni, which Holm's adjustment is never stricter than, so the plan is conservative. The margin
is `margin_abs` (the metric's units) or `margin` times b's debiased estimate. The effect is the pilot's
observed one: if the truth is smaller, more seeds are needed.

Wall time: each run's training and sampling time from the dry-run estimator (`suites.estimate.estimate_runs`,
measured on this machine; sampling scaled by N / N0), times the seeds each run label needs (the most any test
asks of it), summed over the labels the tests name.
"""

from __future__ import annotations

import json
import math

import numpy as np
from scipy import stats as scipy_stats

from elit_bench.errors import UserError
from elit_bench.metrics.compute import HIGHER_IS_BETTER
from elit_bench.metrics.paired import Arm, cell_interval, difference_interval, pairs
from elit_bench.results.records import cell_arm
from elit_bench.suites.claims_format import ALPHA

SAMPLE_FACTORS = (1, 2, 4)  # samples per set considered: the pilot's N times these
REPLICATES = 200  # per seed: enough for a variance (about +-10%)
MIN_SEEDS = 2  # a mean over seeds needs two to show its model-level spread


def _single(arm: Arm, seed: int) -> Arm:
    return Arm({seed: arm.values[seed]}, {seed: arm.noise[seed]})


def components(per_seed: list[tuple[float, float]]) -> dict:
    """{"estimate", "within_var", "between_var", "seeds"} from [(a seed's estimate, its sampling variance)]."""
    estimates, variances = np.array([e for e, _ in per_seed]), np.array([v for _, v in per_seed])
    within = float(variances.mean())
    between = float(max(0.0, estimates.var(ddof=1) - within)) if len(estimates) > 1 else None
    return {"estimate": float(estimates.mean()), "within_var": within, "between_var": between,
            "seeds": len(estimates), "per_seed": estimates.tolist()}


def arm_components(arm: Arm, statistic: str, reference, replicates: int = REPLICATES, seed: int = 0) -> dict:
    """Variance components of one arm: each seed's debiased estimate and bootstrap variance."""
    cells = [cell_interval(_single(arm, s), statistic, reference, replicates, seed) for s in arm.seeds]
    return components([(c["estimate"], float(np.var(c["replicates"], ddof=1))) for c in cells])


def difference_components(a: Arm, b: Arm, statistic: str, reference, replicates: int = REPLICATES,
                          seed: int = 0) -> dict:
    """Variance components of the per-seed paired difference a - b (a and b must pair)."""
    diffs = [difference_interval(_single(a, s), _single(b, s), statistic, reference, replicates, seed)
             for s in a.seeds]
    return components([(d["estimate"], float(np.var(d["replicates"], ddof=1))) for d in diffs])


def seeds_needed(variance_per_seed: float, gap: float, z: float) -> float:
    """Seeds per arm so that (z_alpha + z_power) * sqrt(variance_per_seed / k) <= gap; inf when gap <= 0."""
    if gap <= 0:
        return math.inf
    return float(max(MIN_SEEDS, math.ceil(variance_per_seed * (z / gap) ** 2)))


class MissingPilot(UserError):
    """A test names a cell the pilot has no records of: the plan skips that test and says so."""


def _cell_records(records: list[dict], side: dict, at: str) -> list[dict]:
    rows = [r for r in records if r["run_label"] == str(side["run"]) and r["eval_label"] == str(side["eval"])]
    if not rows:
        raise MissingPilot(f"{at}: no pilot records for (run, eval) = ({side['run']!r}, {side['eval']!r}); run the "
                        "suite (a pilot: a few seeds at a small scale) first")
    return rows


def plan_test(test: dict, records: list[dict], z: float, at: str, replicates: int = REPLICATES) -> dict:
    """One test's effect, variance components and the seeds per arm it needs at each samples-per-set factor."""
    metric = test["metric"]
    higher = test.get("higher_is_better", HIGHER_IS_BETTER.get(metric))
    if higher is None:
        raise UserError(f"{at}: metric {metric!r} has no known direction: say higher_is_better: true|false")
    sign = 1.0 if higher else -1.0
    (a, ref_a), (b, ref_b) = (cell_arm(_cell_records(records, test[k], f"{at}, {k}"), metric, f"{at}, {k}")
                                  for k in ("a", "b"))
    if (ref_a is None) != (ref_b is None) or (ref_a is not None and not np.array_equal(ref_a, ref_b)):
        raise UserError(f"{at}: a and b are scored against different references; compare cells of one reference")
    statistic = "frechet" if ref_a is not None else "mean"
    n0 = {len(v) for arm in (a, b) for v in arm.values.values()}
    if len(n0) != 1:
        raise UserError(f"{at}: a and b have different samples per set ({sorted(n0)}); compare equal sets")
    n0 = n0.pop()
    sides = {k: arm_components(arm, statistic, ref_a, replicates) for k, arm in (("a", a), ("b", b))}
    paired = pairs(a, b)
    if paired:
        diff = difference_components(a, b, statistic, ref_a, replicates)
        effect, between, within = sign * diff["estimate"], diff["between_var"], diff["within_var"]
    else:
        effect = sign * (sides["a"]["estimate"] - sides["b"]["estimate"])
        between = (None if None in (sides["a"]["between_var"], sides["b"]["between_var"]) else
                   sides["a"]["between_var"] + sides["b"]["between_var"])
        within = sides["a"]["within_var"] + sides["b"]["within_var"]
    # a margin in the metric's units, or a share of b's debiased estimate
    margin = (float(test["margin_abs"]) if test.get("margin_abs") is not None else
              float(test.get("margin", 0)) * abs(sides["b"]["estimate"]))
    expect = test["expect"]
    if expect == "equivalent":
        gap, toward = abs(margin - abs(effect)), "supported" if abs(effect) < margin else "contradicted"
    else:
        boundary = -margin if expect == "not_worse" else 0.0
        gap, toward = abs(effect - boundary), "supported" if effect > boundary else "contradicted"
    seeds = {f: seeds_needed((between or 0.0) + within / f, gap, z) for f in SAMPLE_FACTORS}
    return {"metric": metric, "statistic": statistic, "a": test["a"], "b": test["b"], "expect": expect,
            "margin": float(test.get("margin", 0)), "margin_abs": margin, "effect": effect, "gap": gap,
            "toward": toward, "pairing": "paired" if paired else "unpaired", "samples": n0,
            "between_var": between, "within_var": within, "sides": sides,
            "seeds_needed": {str(f * n0): k for f, k in seeds.items()},
            "note": None if between is not None else "one pilot seed: model-level variance unknown, taken as 0 "
                                                     "(the seeds are a lower bound)"}


def plan_tests(tests: list[tuple[str, dict]], records: list[dict], power: float = 0.8, alpha: float = 0.05,
               run_seconds: dict | None = None, replicates: int = REPLICATES) -> dict:
    """The plan of named tests [(where, test)] from pilot records; run_seconds: run label -> (train, sample)
    seconds of one run at the pilot's samples (None: no wall time)."""
    if not 0 < power < 1 or not 0 < alpha < 1:
        raise UserError(f"--power and --alpha must lie in (0, 1), got {power} and {alpha}")
    if not tests:
        raise UserError("the claims report has no tests to plan")
    each = alpha / len(tests)  # the family is every test of the report, planned or not
    z = float(scipy_stats.norm.ppf(1 - each) + scipy_stats.norm.ppf(power))
    planned, skipped = [], []
    for at, test in tests:
        try:
            planned.append({"test": at, **plan_test(test, records, z, at, replicates)})
        except MissingPilot as exc:
            skipped.append({"test": at, "reason": str(exc)})
    if not planned:
        raise UserError(f"no test of the claims report has pilot records; first: {skipped[0]['reason']}")
    out = {"power": power, "alpha": alpha, "tests": len(tests), "alpha_per_test": each, "z": z, "plan": planned,
           "skipped": skipped}
    if run_seconds is not None:
        out["run_seconds"] = {label: {"train": t, "sample": s} for label, (t, s) in run_seconds.items()}
        out["wall"] = wall_time(planned, run_seconds)
    return out


def wall_time(planned: list[dict], run_seconds: dict) -> dict:
    """Per samples-per-set option: the seeds each run label needs (the most its tests ask) and the total seconds."""
    options = {}
    for key in planned[0]["seeds_needed"]:
        labels = {}
        for p in planned:
            factor = int(key) / p["samples"]
            for side in ("a", "b"):
                label = str(p[side]["run"])
                labels[label] = max(labels.get(label, 0), p["seeds_needed"][key])
        seconds = 0.0
        for label, k in labels.items():
            train, sample = run_seconds.get(label, (0.0, 0.0))
            seconds += k * (train + sample * factor)
        options[key] = {"seeds": labels, "seconds": seconds}
    return options


def plan_suite(suite, out, scale: str | None = None, power: float = 0.8, alpha: float | None = None,
               estimate: bool = True) -> dict:
    """`plan_tests` of a suite's claims report against its records under OUT (the wall time from the dry-run
    estimator, unless estimate is False)."""
    from elit_bench.results.records import load_records

    report = suite.raw.get("report") or {}
    if report.get("kind") != "claims":
        raise UserError(f"suite {suite.name!r} has no claims report (report.kind: claims) to plan for; "
                        "plan works on suites that test claims, e.g. claims")
    records = load_records(out, suite.name, scale)
    if not records:
        raise UserError(f"no records of suite {suite.name!r}{f' at scale {scale}' if scale else ''} under "
                        f"{str(out)!r}: run a pilot first (elit-bench run {suite.name} --scale ...)")
    scales = sorted({r["scale"] for r in records})
    if len(scales) > 1:
        raise UserError(f"the records of {suite.name!r} hold scales {', '.join(scales)}: choose one with --scale")
    scale = scales[0]
    tests = [(f"claim {c['id']}, test {j}", t) for c in report["claims"] for j, t in enumerate(c["tests"], 1)]
    run_seconds = None
    if estimate:
        from elit_bench.suites.estimate import estimate_runs

        runs = suite.runs(scale, strict_variables=False)
        estimated = estimate_runs(runs)["runs"]
        per_label: dict[str, list] = {}
        for run in runs:
            e = estimated.get(run.id) or {}
            per_label.setdefault(run.label, []).append((e.get("train_seconds", 0.0), e.get("sample_seconds", 0.0)))
        run_seconds = {label: tuple(np.mean(v, axis=0).tolist()) for label, v in per_label.items()}
    alpha = report.get("alpha", ALPHA) if alpha is None else alpha  # the suite's own, fixed before its run
    return {"suite": suite.name, "scale": scale, **plan_tests(tests, records, power, alpha, run_seconds)}


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else "inf" if value == math.inf else f"{value:.{digits}g}"


def render(plan: dict) -> str:
    """The plan as text: one row per test, then the wall time of each samples-per-set option."""
    from elit_bench.suites.estimate import duration

    lines = [f"{plan.get('suite', '')} {plan.get('scale', '')}: seeds per arm for {plan['power']:.0%} power, one-sided "
             f"tests at alpha {plan['alpha']:g} / {plan['tests']} tests = {plan['alpha_per_test']:.3g} each "
             "(Bonferroni: conservative for Holm)", ""]
    keys = list(plan["plan"][0]["seeds_needed"])
    lines.append("| test | a vs b | expect | effect | margin | pairing | between sd | within sd | " +
                 " | ".join(f"seeds @ N={k}" for k in keys) + " |")
    lines.append("|---" * (8 + len(keys)) + "|")
    for p in plan["plan"]:
        sd = [None if v is None else math.sqrt(v) for v in (p["between_var"], p["within_var"])]
        lines.append(f"| {p['test']} | {p['a']['run']} {p['a']['eval']} vs {p['b']['run']} {p['b']['eval']} | "
                     f"{p['expect']} ({p['toward']}) | {_num(p['effect'])} | {_num(p['margin_abs'])} | {p['pairing']} | "
                     f"{_num(sd[0])} | {_num(sd[1])} | " +
                     " | ".join(_num(p["seeds_needed"][k]) for k in keys) + " |")
    notes = sorted({p["note"] for p in plan["plan"] if p["note"]})
    lines += [f"note: {n}" for n in notes]
    lines += [f"not planned: {s['reason']}" for s in plan.get("skipped", ())]
    if "wall" in plan:
        lines.append("")
        for key, option in plan["wall"].items():
            seeds = ", ".join(f"{label} x{_num(k)}" for label, k in option["seeds"].items())
            lines.append(f"N={key}: {duration(option['seconds'])} ({seeds}; training and sampling, this machine)")
    lines.append("sd: standard deviations of one seed's estimate (between: model-level; within: sampling, at the "
                 "pilot's N)")
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser("plan", help="seeds and samples each claims test needs for a given power, from pilot records")
    p.add_argument("suite")
    p.add_argument("--scale", help="the pilot records' scale (default: the one scale the records hold)")
    p.add_argument("--out", default="runs", help="where the suite's runs live")
    p.add_argument("--power", type=float, default=0.8, help="power of each one-sided test (default 0.8)")
    p.add_argument("--alpha", type=float, default=None,
                   help="family-wise error rate over the suite's tests (default: the claims report's alpha, else 0.05)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--no-estimate", action="store_true",
                   help="skip the wall time (the dry-run estimator times a training step of every model: minutes)")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args) -> int:
    from elit_bench.suites.spec import load_suite

    plan = plan_suite(load_suite(args.suite), args.out, args.scale, args.power, args.alpha, not args.no_estimate)
    print(json.dumps(plan, indent=1, default=str) if args.json else render(plan))
    return 0
