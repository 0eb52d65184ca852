"""Claims: suites state the paper's claims as tests, and every verdict is computed from records.

Checked here: bad claims are refused at load time with the claim, test and key named; a planted effect gives
`supported` (reversed: `contradicted`) for better / not_worse / equivalent, an interval across the line gives
`inconclusive at this scale`; the paired, Welch, bootstrap and normal intervals equal ones computed here from
their definitions; the table, verdicts.json and the forest plot say the same; a tiny claims suite runs end to
end; and the dry run's time estimate follows from the timed steps and writes nothing.
"""

import json
import math
import textwrap

import numpy as np
import pytest
from scipy import stats

from elit_bench.cli import main
from elit_bench.errors import UserError
from elit_bench.results.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    claim_verdict,
    claims_frame,
    evaluate_claims,
    verdict_of,
)

# ---------------------------------------------------------------- synthetic records


def record(run, ev, value, seed=0, reps=None, metric="digits_fd", half=2.0, scale="cpu", num=64):
    """A record of one (run, eval, seed): `value` with an interval of half-width `half`, and bootstrap replicates
    when given (a Frechet distance), else a Wilson-like interval without replicates (an accuracy)."""
    interval = {"low": value - half, "high": value + half, "level": 0.95,
                "method": "bootstrap-basic" if reps is not None else "wilson"}
    if reps is not None:
        interval["replicates"] = [float(r) for r in reps]
    return {"suite": "claims-test", "scale": scale, "run_id": f"{run}-s{seed}", "run_label": run, "paper_row": None,
            "paper_setting": None, "eval_id": f"{ev}-id", "eval_label": ev, "paper_guidance": "", "series": None,
            "model": "DiT-S/4", "train_step": 10, "metrics": {metric: value}, "intervals": {metric: interval},
            "num_samples": num, "sample": {"steps": 2, "guidance": "none", "scale": 0.0, "budget": None},
            "flops": {"sample_flops_per_sample": 1e6, "train_tflops_per_iter": 1e-3},
            "provenance": {"code_version": "test", "train_config": {"seed": seed,
                                                                    "data": {"name": "digits", "resolution": 16}}}}


def reps_around(value, sd=0.3, n=200, seed=0):
    return value + np.random.default_rng(seed).normal(0, sd, n)


def one_test(expect="better", margin=0.0, metric="digits_fd", a=("A", "e"), b=("B", "e")):
    test = {"metric": metric, "a": {"run": a[0], "eval": a[1]}, "b": {"run": b[0], "eval": b[1]}, "expect": expect}
    if margin:
        test["margin"] = margin
    return [{"id": "C", "claim": "a claim", "paper": "evidence", "tests": [test]}]


def verdict(records, **kw):
    (claim,) = evaluate_claims(one_test(**kw), claims_frame(records))
    return claim["tests"][0], claim["verdict"]


# ---------------------------------------------------------------- verdict rules
@pytest.mark.parametrize("expect, margin, a, b, expected", [
    # FD, lower is better: effect = b - a
    ("better", 0.0, 100.0, 120.0, SUPPORTED),
    ("better", 0.0, 120.0, 100.0, CONTRADICTED),
    ("not_worse", 0.05, 121.0, 120.0, SUPPORTED),      # 1 worse, m = 6
    ("not_worse", 0.05, 140.0, 120.0, CONTRADICTED),   # 20 worse
    ("equivalent", 0.05, 120.5, 120.0, SUPPORTED),
    ("equivalent", 0.05, 100.0, 120.0, CONTRADICTED),  # 20 better: not the same
    ("equivalent", 0.05, 140.0, 120.0, CONTRADICTED),
])
def test_planted_effects_give_supported_and_reversed_contradicted(expect, margin, a, b, expected):
    records = [record("A", "e", a, reps=reps_around(a, seed=1)), record("B", "e", b, reps=reps_around(b, seed=2))]
    test, claim = verdict(records, expect=expect, margin=margin)
    assert test["verdict"] == expected and claim == expected
    assert test["method"] == "bootstrap-basic-difference"
    assert test["effect"] == pytest.approx(b - a)  # the improvement of a over b where lower is better


@pytest.mark.parametrize("expect, margin, a", [
    ("better", 0.0, 120.2),     # effect -0.2 with an interval about +-0.8: crosses 0
    ("not_worse", 0.05, 126.0),  # effect -6 = -m: crosses -m
    ("equivalent", 0.05, 114.0),  # effect +6 = m: crosses m
])
def test_an_interval_across_the_line_is_inconclusive(expect, margin, a):
    records = [record("A", "e", a, reps=reps_around(a, seed=1)), record("B", "e", 120.0, reps=reps_around(120.0, seed=2))]
    test, claim = verdict(records, expect=expect, margin=margin)
    assert test["low"] < test["effect"] < test["high"]
    assert test["verdict"] == INCONCLUSIVE and claim == INCONCLUSIVE


def test_verdict_rule_at_its_edges_and_the_claim_rule():
    assert verdict_of("better", -1.0, 2.0) == INCONCLUSIVE
    assert verdict_of("better", 0.1, 2.0) == SUPPORTED and verdict_of("better", -2.0, -0.1) == CONTRADICTED
    assert verdict_of("not_worse", -0.9, 3.0, margin=1.0) == SUPPORTED
    assert verdict_of("not_worse", -3.0, -1.1, margin=1.0) == CONTRADICTED
    assert verdict_of("not_worse", -1.5, 0.5, margin=1.0) == INCONCLUSIVE
    assert verdict_of("equivalent", -0.5, 0.5, margin=1.0) == SUPPORTED
    assert verdict_of("equivalent", 1.1, 2.0, margin=1.0) == CONTRADICTED
    assert verdict_of("equivalent", -0.5, 1.5, margin=1.0) == INCONCLUSIVE
    # an interval merely containing zero never supports "equivalent" without a margin
    assert verdict_of("equivalent", -0.5, 0.5, margin=0.0) == INCONCLUSIVE
    assert claim_verdict([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert claim_verdict([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert claim_verdict([SUPPORTED, INCONCLUSIVE, CONTRADICTED]) == CONTRADICTED


# ---------------------------------------------------------------- the intervals, against their definitions
def test_paired_t_over_seeds_for_two_evaluations_of_one_run():
    a = {0: 100.0, 1: 104.0, 2: 98.0}
    b = {0: 110.0, 1: 111.0, 2: 109.5}
    records = [record("X", "small", a[s], seed=s) for s in a] + [record("X", "full", b[s], seed=s) for s in b]
    test, _ = verdict(records, a=("X", "small"), b=("X", "full"))
    d = np.array([b[s] - a[s] for s in (0, 1, 2)])  # lower is better: b - a
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert test["method"] == "paired-t-over-seeds" and test["seeds"] == {"a": [0, 1, 2], "b": [0, 1, 2]}
    assert (test["effect"], test["low"], test["high"]) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half))


def test_welch_t_over_seeds_for_two_runs():
    a = [0.80, 0.84, 0.82]  # accuracy: higher is better, effect = a - b
    b = [0.70, 0.78, 0.71, 0.75]
    records = ([record("X", "e", v, seed=s, metric="digits_acc", half=0.05) for s, v in enumerate(a)]
               + [record("Y", "e", v, seed=s, metric="digits_acc", half=0.05) for s, v in enumerate(b)])
    test, claim = verdict(records, metric="digits_acc", a=("X", "e"), b=("Y", "e"))
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    diff = np.mean(a) - np.mean(b)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert test["method"] == "welch-t-over-seeds" and test["seeds"] == {"a": [0, 1, 2], "b": [0, 1, 2, 3]}
    assert (test["effect"], test["low"], test["high"]) == pytest.approx((diff, diff - half, diff + half))
    assert test["verdict"] == claim == (SUPPORTED if diff - half > 0 else INCONCLUSIVE)


def test_bootstrap_interval_from_every_pair_of_replicates():
    ra, rb = reps_around(50.0, sd=2.0, n=200, seed=3), reps_around(53.0, sd=1.0, n=150, seed=4)
    records = [record("A", "e", 50.0, reps=ra), record("B", "e", 53.0, reps=rb)]
    test, _ = verdict(records)
    effect = 53.0 - 50.0
    pairs = np.array([y - x for x in ra for y in rb])  # effect replicates: b - a for every pair
    q_lo, q_hi = np.quantile(pairs, [0.025, 0.975])
    assert test["method"] == "bootstrap-basic-difference" and test["replicates"] == [200, 150]
    assert (test["low"], test["high"]) == pytest.approx((2 * effect - q_hi, 2 * effect - q_lo))


def test_normal_approximation_where_records_have_no_replicates():
    # Wilson intervals of accuracies: no replicates; the half-widths give the standard errors
    records = [record("A", "e", 0.90, metric="digits_acc", half=0.03),
               record("B", "e", 0.85, metric="digits_acc", half=0.04)]
    test, _ = verdict(records, metric="digits_acc")
    assert test["method"] == "normal-from-intervals"
    # z * sqrt((ha / z)^2 + (hb / z)^2) = sqrt(ha^2 + hb^2)
    assert (test["low"], test["high"]) == pytest.approx((0.05 - 0.05, 0.05 + 0.05))


def test_mixed_seed_counts_and_missing_cells_are_errors_naming_the_claim():
    records = ([record("X", "e", 100.0 + s, seed=s) for s in range(3)] + [record("Y", "e", 90.0, reps=reps_around(90))])
    with pytest.raises(UserError, match=r"claim 'C', test 1: a has 3 training seed\(s\) and b has 1"):
        verdict(records, a=("X", "e"), b=("Y", "e"))
    with pytest.raises(UserError, match=r"claim 'C', test 1: no records for \(run, eval\) = \('Y', 'J=4'\)"):
        verdict(records, a=("X", "e"), b=("Y", "J=4"))
    with pytest.raises(UserError, match="claim 'C', test 1: a has 64 samples per set and b 128"):
        verdict([record("A", "e", 1.0, reps=reps_around(1.0)), record("B", "e", 1.0, reps=reps_around(1.0), num=128)])
    with pytest.raises(UserError, match="scales cpu, smoke"):
        evaluate_claims(one_test(), claims_frame(records + [record("A", "e", 1.0, scale="smoke")]))


# ---------------------------------------------------------------- suite files
TINY_SUITE = """
name: tiny-claims
title: "Tiny claims on digits"
report:
  kind: claims
  claims:
    - id: T1
      claim: "B samples at least as well as A at equal steps"
      paper: "made up for the test"
      tests:
        - {metric: digits_fd, a: {run: B, eval: plain}, b: {run: A, eval: plain}, expect: not_worse, margin: 0.5}
        - {metric: digits_acc, a: {run: B, eval: plain}, b: {run: A, eval: plain}, expect: better}
    - id: T2
      claim: "CFG beats no guidance"
      paper: "Fig. 5"
      tests:
        - {metric: digits_fd, a: {run: A, eval: cfg}, b: {run: A, eval: plain}, expect: better}
      ratios:
        - {label: "sampling FLOPs CFG / none", quantity: sample_gflops, a: {run: A, eval: cfg}, b: {run: A, eval: plain}, paper: 2.0}
base:
  train: {data: digits, resolution: 16, model_kwargs: {hidden_size: 32, depth: 2, num_heads: 2}, steps: 3, batch: 8,
          lr: 1.0e-3, warmup: 1, ckpt_every: 3, log_every: 1, ema_decay: 0.5}
  sample: {steps: 2, batch: 32}
  metrics: {names: [digits_fd, digits_acc], num_samples: 32, real: digits}
runs:
  - {label: A, train: {model: DiT-S/4}}
  - {label: B, train: {model: DiT-S/4, model_kwargs: {hidden_size: 48}}}
evals:
  - {label: plain}
  - {label: cfg, sample: {guidance: cfg, scale: 1.0}, only: [A]}
scales:
  cpu: {}
"""


def write_suite(tmp_path, text=TINY_SUITE, name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("old, new, message", [
    ("expect: better}\n    - id: T2", "expect: bettr}\n    - id: T2",
     "claim 'T1', test 2: expect 'bettr' is not one of better, not_worse, equivalent"),
    ("a: {run: B, eval: plain}, b: {run: A, eval: plain}, expect: not_worse",
     "a: {run: C, eval: plain}, b: {run: A, eval: plain}, expect: not_worse",
     "claim 'T1', test 1: a names run 'C', which is not a run of the suite; runs: A, B"),
    ("margin: 0.5", "margin: -0.1", "claim 'T1', test 1: margin must be a number >= 0"),
    ("expect: not_worse, margin: 0.5", "expect: equivalent", "claim 'T1', test 1: expect equivalent needs a margin > 0"),
    ("a: {run: A, eval: cfg}, b: {run: A, eval: plain}, paper", "a: {run: A, eval: CFG}, b: {run: A, eval: plain}, paper",
     "claim 'T2', ratio 1: a names eval 'CFG', which is not an evaluation of the suite"),
    ("paper: \"Fig. 5\"", "paper: \"Fig. 5\"\n      verdict: supported",
     "claim 'T2' has unknown key(s) ['verdict']"),  # verdicts are computed, never typed
    ("kind: claims", "kind: claim", "unknown report kind"),
    ("a: {run: B, eval: plain}, b: {run: A, eval: plain}, expect: not_worse",
     "a: {run: A, eval: plain}, b: {run: A, eval: plain}, expect: not_worse", "claim 'T1', test 1: a and b are the same"),
])
def test_bad_claims_exit_2_naming_the_problem(tmp_path, capsys, old, new, message):
    text = TINY_SUITE.replace(old, new, 1)
    assert text != TINY_SUITE
    path = write_suite(tmp_path, text)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--dry-run", "--no-estimate"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_table_verdicts_json_and_forest_plot_say_the_same(tmp_path, capsys, monkeypatch):
    """Synthetic records on disk -> `elit-bench table`: each test's verdict in table.md, verdicts.json and the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = write_suite(tmp_path)
    out = tmp_path / "runs"
    records = [record("A", "plain", 120.0, reps=reps_around(120.0, seed=1)),
               record("B", "plain", 100.0, reps=reps_around(100.0, seed=2)),
               record("A", "cfg", 119.9, reps=reps_around(119.9, seed=3)),
               record("A", "plain", 0.80, metric="digits_acc", half=0.05),
               record("B", "plain", 0.60, metric="digits_acc", half=0.05)]
    for r in records:  # one file per (run, eval): metrics of one evaluation together
        r["suite"] = "tiny-claims"
        target = out / "tiny-claims" / "cpu" / r["run_id"] / "records" / f"{r['eval_id']}.json"
        if target.is_file():
            old = json.loads(target.read_text())
            r = {**old, "metrics": {**old["metrics"], **r["metrics"]}, "intervals": {**old["intervals"], **r["intervals"]}}
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(r))
    drawn = []
    monkeypatch.setattr(plt, "close", lambda fig=None: drawn.append(fig))
    dest = tmp_path / "report"
    assert main(["table", str(path), "--out", str(out), "--dest", str(dest)]) == 0
    md = (dest / "table.md").read_text()
    verdicts = json.loads((dest / "verdicts.json").read_text())
    t1, t2 = verdicts["claims"]
    # T1: FD 100 vs 120 (not worse: supported); accuracy 0.6 vs 0.8 (better: contradicted) -> contradicted
    assert [t["verdict"] for t in t1["tests"]] == [SUPPORTED, CONTRADICTED] and t1["verdict"] == CONTRADICTED
    # T2: FD 119.9 vs 120 with intervals of about +-0.8: inconclusive
    assert t2["tests"][0]["verdict"] == INCONCLUSIVE and t2["verdict"] == INCONCLUSIVE
    assert t2["ratios"][0]["value"] == pytest.approx(1.0) and t2["ratios"][0]["paper"] == 2.0
    lines = [line for line in md.splitlines() if line.startswith("|")]
    row = {c: i for i, c in enumerate(x.strip() for x in lines[0].split("|"))}
    cells = [[x.strip() for x in line.split("|")] for line in lines[2:5]]
    assert [c[row["test verdict"]] for c in cells] == [SUPPORTED, CONTRADICTED, INCONCLUSIVE]
    assert [c[row["claim verdict"]] for c in cells] == [CONTRADICTED, "", INCONCLUSIVE]
    assert cells[0][row["claim"]] == "T1" and cells[0][row["paper"]] == "made up for the test"
    assert "B @ plain vs A @ plain" in cells[0][row["test"]] and "margin 0.5" in cells[0][row["test"]]
    assert "bootstrap" in cells[0][row["method (seeds)"]] and "normal" in cells[1][row["method (seeds)"]]
    assert "Claims: 0 supported, 1 contradicted, 1 inconclusive at this scale." in md
    assert "contradicted if high < 0" in md and "\\begin{tabular}" in (dest / "table.tex").read_text()
    assert (dest / "figure.png").is_file() and (dest / "figure.svg").is_file()
    # the forest plot: one point per test at its effect relative to abs(b), in its verdict's colour
    ax = drawn[-1].axes[0]
    points = [c for c in ax.lines if c.get_marker() == "o" and len(c.get_xdata()) == 1]
    xs = [float(p.get_xdata()[0]) for p in points]
    assert xs == pytest.approx([100 * 20 / 120, 100 * -0.2 / 0.8, 100 * 0.1 / 120])
    assert [t.get_text() for t in ax.get_yticklabels()][0].startswith("T1.1 B @ plain vs A @ plain")


# ---------------------------------------------------------------- end to end and the dry run
def _expected_verdict(test, records):
    """A verdict recomputed from the record files, by the rule of docs/claims.md (one seed each)."""
    a = records[(test["a"]["run"], test["a"]["eval"])]
    b = records[(test["b"]["run"], test["b"]["eval"])]
    metric = test["metric"]
    sign = 1 if metric == "digits_acc" else -1
    metric += "_debiased" if metric + "_debiased" in a["metrics"] else ""  # Frechet: the debiased estimate
    effect = sign * (a["metrics"][metric] - b["metrics"][metric])
    ia, ib = a["intervals"][metric], b["intervals"][metric]
    if "replicates" in ia and "replicates" in ib:
        pairs = sign * np.subtract.outer(np.array(ia["replicates"]), np.array(ib["replicates"])).ravel()
        q_lo, q_hi = np.quantile(pairs, [0.025, 0.975])
        low, high = 2 * effect - q_hi, 2 * effect - q_lo
    else:
        half = math.hypot((ia["high"] - ia["low"]) / 2, (ib["high"] - ib["low"]) / 2)
        low, high = effect - half, effect + half
    m = test.get("margin", 0) * abs(b["metrics"][metric])
    if test["expect"] == "better":
        return SUPPORTED if low > 0 else CONTRADICTED if high < 0 else INCONCLUSIVE
    return SUPPORTED if low > -m else CONTRADICTED if high < -m else INCONCLUSIVE


def test_tiny_claims_suite_runs_end_to_end_and_its_verdicts_follow_from_its_records(tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.setenv("ELIT_BENCH_CACHE", str(tmp_path / "cache"))
    path = write_suite(tmp_path)
    out = tmp_path / "runs"
    assert main(["run", str(path), "--out", str(out), "--no-progress", "-q"]) == 0
    report = out / "tiny-claims" / "cpu" / "report"
    assert {"table.md", "table.tex", "verdicts.json", "figure.png", "figure.svg", "samples.png"} <= \
        {p.name for p in report.iterdir()}
    assert main(["table", str(path), "--out", str(out), "--dest", str(tmp_path / "again")]) == 0
    written = json.loads((tmp_path / "again" / "verdicts.json").read_text())
    assert written == json.loads((report / "verdicts.json").read_text())
    records = {}
    for file in (out / "tiny-claims" / "cpu").glob("*/records/*.json"):
        r = json.loads(file.read_text())
        records[(r["run_label"], r["eval_label"])] = r
    claims = yaml.safe_load(TINY_SUITE)["report"]["claims"]
    for claim, got in zip(claims, written["claims"]):
        expected = [_expected_verdict(t, records) for t in claim["tests"]]
        assert [t["verdict"] for t in got["tests"]] == expected, got
        assert got["verdict"] == claim_verdict(expected)
    assert written["claims"][0]["tests"][0]["method"] == "bootstrap-basic-difference"
    assert written["claims"][0]["tests"][1]["method"] == "normal-from-intervals"  # accuracy: Wilson intervals
    cfg, plain = records[("A", "cfg")], records[("A", "plain")]
    ratio = cfg["flops"]["sample_flops_per_sample"] / plain["flops"]["sample_flops_per_sample"]
    assert written["claims"][1]["ratios"][0]["value"] == pytest.approx(ratio) == pytest.approx(2.0)


def test_dry_run_estimate_follows_from_timed_steps_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from elit_bench.flops import TRAIN_MULTIPLIER, forward_flops
    from elit_bench.suites import estimate
    from elit_bench.suites.spec import load_suite, run_model

    calls = []

    def step(name, kwargs, cfg, variant, batch, device):
        calls.append(("train", kwargs["hidden_size"], batch))
        return 0.25

    def forward(name, kwargs, budget, patch, batch, device):
        calls.append(("forward", kwargs["hidden_size"], batch))
        return 0.001 * batch

    monkeypatch.setattr(estimate, "time_train_step", step)
    monkeypatch.setattr(estimate, "time_forward", forward)
    path = write_suite(tmp_path)
    out = tmp_path / "runs"

    def dry(*extra):
        assert main(["run", str(path), "--out", str(out), "--dry-run", "--json", *extra]) == 0
        return {r["label"]: r["estimate"] for r in json.loads(capsys.readouterr().out)["runs"]}

    plan = dry()
    a, b = plan["A"], plan["B"]
    # A: 3 steps x 0.25 s; plain: 1 batch of 32 x 2 solver steps; cfg: 2 passes per step
    assert a["how"] == "measured" and a["step_seconds"] == 0.25 and a["train_seconds"] == pytest.approx(0.75)
    assert [e["seconds"] for e in a["evals"]] == pytest.approx([2 * 0.032, 4 * 0.032])
    assert a["seconds"] == pytest.approx(0.75 + 6 * 0.032)
    assert b["seconds"] == pytest.approx(0.75 + 2 * 0.032)
    assert {c[1] for c in calls if c[0] == "train"} == {32, 48}  # each model configuration timed once
    assert not out.exists()

    # too slow to time (at the rate measured on A): B is extrapolated from its FLOPs
    runs = {r.label: r for r in load_suite(str(path)).runs("cpu")}
    flops = {}
    for label, run in runs.items():
        model, cfg = run_model(run.train)
        flops[label] = (forward_flops(model) * TRAIN_MULTIPLIER * cfg["batch"], forward_flops(model))
    monkeypatch.setattr(estimate, "MAX_TIMED_SECONDS", 0.25 * (flops["A"][0] + flops["B"][0]) / 2 / flops["A"][0])
    calls.clear()
    plan = dry()
    b = plan["B"]
    train_rate = flops["A"][0] / 0.25
    forward_rate = flops["A"][1] * 32 / 0.032
    assert b["how"] == "extrapolated" and b["extrapolated_from"] == "A"
    assert b["step_seconds"] == pytest.approx(flops["B"][0] / train_rate)
    assert b["evals"][0]["seconds"] == pytest.approx(32 * 2 * flops["B"][1] / forward_rate)
    assert {c[1] for c in calls} == {32}  # B was not run
    assert main(["run", str(path), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "extrapolated from FLOPs at the rate of A" in text and "estimated wall time on this machine" in text
    assert not out.exists()


def test_the_claims_suite_plans_three_seeds_of_every_run_and_evaluates_every_cell_it_tests():
    # catches: a claims test naming a cell the suite never evaluates, or a run that lost its seeds
    from elit_bench.suites.spec import load_suite

    suite = load_suite("claims")
    runs = suite.runs("cpu")
    seeds = {}
    for run in runs:
        seeds.setdefault(run.label, set()).add(run.train["seed"])
    assert len(runs) == 24 and all(s == {0, 1, 2} for s in seeds.values())
    cells = {(run.label, ev.label) for run in runs for ev in run.evals}
    for claim in suite.report["claims"]:
        for test in claim["tests"]:
            for side in (test["a"], test["b"]):
                assert (side["run"], side["eval"]) in cells, (claim["id"], side)
