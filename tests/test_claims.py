"""Claims: suites state the paper's claims as tests, and every verdict is computed from the records' per-sample values.

Checked here, on tiny synthetic records with feature sidecars written to temporary folders: a difference of two
sets that share noise seeds is resampled paired and decides where the same sets resampled unpaired do not; each
expectation gives supported / contradicted / inconclusive by its one-sided tests; Holm's adjustment over the
suite's tests decides the verdicts; a missing, damaged or absent sidecar is a one-line error; bad claims are
refused at load time with the claim, test and key named; the table (with p and Holm p), verdicts.json and the
forest plot say the same; a tiny claims suite runs end to end; and the dry run's time estimate follows from the
timed steps and writes nothing.
"""

import hashlib
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from elit_bench.cli import main
from elit_bench.errors import UserError
from elit_bench.metrics.frechet import frechet_distance
from elit_bench.metrics.paired import Arm, cell_interval, difference_interval
from elit_bench.results import claims as claims_mod
from elit_bench.results.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    claim_verdict,
    claims_frame,
    evaluate_claims,
    verdict_of,
)
from elit_bench.results.records import load_records

SUITE = "claims-test"
SHARED_NOISE = "0-255"  # training seed 0's noise block: every set of seed 0 draws it
OTHER_NOISE = "1048576-1048831"  # another block: sets resampled on their own
D, N, M = 4, 256, 400
REFERENCE = np.random.default_rng(99).normal(size=(M, D))
BASE = np.random.default_rng(7).normal(size=(N, D))  # the samples' shared noise: sets of one noise block share it


# ---------------------------------------------------------------- synthetic records with sidecars
def _save(path: Path, array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return {"sha256": hashlib.sha256(buffer.getvalue()).hexdigest(), "shape": list(np.shape(array))}


def write_record(out: Path, run: str, ev: str, values: np.ndarray, metric: str = "digits_fd", seed: int = 0,
                 noise: str | None = SHARED_NOISE, scale: str = "cpu", suite: str = SUITE) -> Path:
    """A record of (run, eval, training seed) under OUT/<suite>/<scale>/ with `values` beside it as the sidecar of
    `metric` ((N, D) features against REFERENCE for digits_fd, (N, 1) per-sample values for digits_acc) and its
    plug-in value at N as the metric; a second metric of the same set joins the same record file."""
    folder = out / suite / scale / f"{run}-s{seed}".replace(" ", "-") / "records"
    path = folder / f"{ev}-id.json".replace(" ", "-")
    values = np.asarray(values, dtype=np.float64)
    sidecar = {"file": f"{path.stem}.{metric}.features.npy", **_save(folder / f"{path.stem}.{metric}.features.npy",
                                                                       values)}
    if metric == "digits_fd":
        shared = out / "_shared" / "features" / "reference.npy"
        sidecar["reference"] = {"file": Path("../../../../_shared/features/reference.npy").as_posix(),
                                **_save(shared, REFERENCE)}
        ref = np.load(shared).astype(np.float64)
        fake = np.load(folder / sidecar["file"]).astype(np.float64)
        value = frechet_distance(fake.mean(0), np.cov(fake, rowvar=False), ref.mean(0), np.cov(ref, rowvar=False))
    else:
        value = float(values.mean())
    record = {"suite": suite, "scale": scale, "run_id": f"{run}-s{seed}", "run_label": run, "paper_row": None,
              "paper_setting": None, "eval_id": f"{ev}-id", "eval_label": ev, "paper_guidance": "", "series": None,
              "model": "DiT-S/4", "train_step": 10, "metrics": {}, "intervals": {}, "features": {},
              "num_samples": len(values), "sample": {"steps": 2, "guidance": "none", "scale": 0.0, "budget": None,
                                                     "seeds": noise},
              "flops": {"sample_flops_per_sample": 1e6, "train_tflops_per_iter": 1e-3},
              "provenance": {"code_version": "test", "train_config": {"seed": seed,
                                                                      "data": {"name": "digits", "resolution": 16}}}}
    if path.is_file():
        record = json.loads(path.read_text())
    record["metrics"][metric] = value
    record["features"][metric] = sidecar
    path.write_text(json.dumps(record))
    return path


def features(shift: float, jitter: float = 0.0, seed: int = 1) -> np.ndarray:
    """(N, D) features of a set drawn from the shared noise BASE, shifted (a worse model: larger shift) and jittered
    (the part of two models' samples that is not shared)."""
    return BASE + shift + jitter * np.random.default_rng(seed).normal(size=(N, D))


def correct(p: float, jitter: float = 0.0, seed: int = 1) -> np.ndarray:
    """(N, 1) per-sample values with mean about p, sharing BASE's first column (paired sets move together)."""
    return (p + 0.05 * BASE[:, :1] + jitter * np.random.default_rng(seed).normal(size=(N, 1)))


def claim(*tests, cid="C") -> dict:
    return {"id": cid, "claim": "a claim", "paper": "evidence", "tests": list(tests)}


def claim_test(expect="better", metric="digits_fd", a=("A", "e"), b=("B", "e"), **margin) -> dict:
    return {"metric": metric, "a": {"run": a[0], "eval": a[1]}, "b": {"run": b[0], "eval": b[1]}, "expect": expect,
            **margin}


def evaluate(out: Path, claims: list[dict], alpha: float = 0.05) -> list[dict]:
    return evaluate_claims(claims, claims_frame(load_records(out, SUITE)), alpha)


# ---------------------------------------------------------------- pairing
def test_a_paired_difference_on_shared_noise_is_narrower_and_decides_where_unpaired_does_not(tmp_path):
    paired, unpaired = tmp_path / "paired", tmp_path / "unpaired"
    a, b = features(0.30), features(0.38, jitter=0.05)  # a is closer to the reference: better by about 0.18
    for out, noise_b in ((paired, SHARED_NOISE), (unpaired, OTHER_NOISE)):
        write_record(out, "A", "e", a)
        write_record(out, "B", "e", b, noise=noise_b)
    (p,), (u,) = (evaluate(out, [claim(claim_test("better"))])[0]["tests"] for out in (paired, unpaired))
    assert p["pairing"] == "paired" and u["pairing"] == "unpaired"
    assert p["high"] - p["low"] < 0.5 * (u["high"] - u["low"])
    assert p["low"] > 0 and p["verdict"] == SUPPORTED and p["p"] < 0.01
    assert u["low"] < 0 < u["high"] and u["verdict"] == INCONCLUSIVE and u["p"] > 0.05
    # the effect is the improvement of a over b (lower is better: b - a) of the debiased estimates
    stored = {name: x.astype(np.float32) for name, x in (("a", a), ("b", b), ("reference", REFERENCE))}
    arm_a, arm_b = (Arm({0: stored[k]}, {0: SHARED_NOISE}) for k in "ab")
    diff = difference_interval(arm_a, arm_b, "frechet", stored["reference"])
    assert p["effect"] == pytest.approx(-diff["estimate"], rel=1e-9) and p["effect"] > 0.1
    assert p["a"]["estimate"] == pytest.approx(cell_interval(arm_a, "frechet", stored["reference"])["estimate"])


# ---------------------------------------------------------------- verdicts from one-sided tests
@pytest.mark.parametrize("expect, margin, shift_a, expected", [
    # digits FD, lower is better; b's shift 0.4; shared noise, a little jitter: a tight paired difference
    ("better", {}, 0.30, SUPPORTED),
    ("better", {}, 0.50, CONTRADICTED),
    ("better", {}, 0.40, INCONCLUSIVE),
    ("not_worse", {"margin": 0.2}, 0.42, SUPPORTED),        # slightly worse, within 20% of b's estimate
    ("not_worse", {"margin": 0.2}, 0.60, CONTRADICTED),     # far worse than the margin
    ("equivalent", {"margin_abs": 0.2}, 0.41, SUPPORTED),
    ("equivalent", {"margin_abs": 0.05}, 0.20, CONTRADICTED),  # much better: not the same
])
def test_frechet_verdicts_for_each_expectation(tmp_path, expect, margin, shift_a, expected):
    write_record(tmp_path, "A", "e", features(shift_a, jitter=0.02, seed=3))
    write_record(tmp_path, "B", "e", features(0.40, jitter=0.02, seed=4))
    (result,) = evaluate(tmp_path, [claim(claim_test(expect, **margin))])
    (t,) = result["tests"]
    assert t["verdict"] == expected and result["verdict"] == expected
    assert t["statistic"] == "frechet" and not t["higher_is_better"] and t["pairing"] == "paired"
    if "margin" in margin:  # a share of b's debiased estimate
        assert t["margin_abs"] == pytest.approx(margin["margin"] * abs(t["b"]["estimate"]))
    assert t["low"] <= t["effect"] <= t["high"]


@pytest.mark.parametrize("expect, margin, delta, expected", [
    # accuracy-like per-sample values, higher is better: effect = a - b, b about 0.80
    ("better", {}, 0.02, SUPPORTED),
    ("better", {}, -0.02, CONTRADICTED),
    ("not_worse", {"margin_abs": 0.02}, -0.01, SUPPORTED),
    ("not_worse", {"margin_abs": 0.02}, -0.04, CONTRADICTED),
    ("not_worse", {"margin_abs": 0.02}, -0.02, INCONCLUSIVE),  # on the margin
    ("equivalent", {"margin_abs": 0.02}, 0.0, SUPPORTED),
    ("equivalent", {"margin_abs": 0.02}, 0.06, CONTRADICTED),   # better by more than the margin
    ("equivalent", {"margin_abs": 0.02}, -0.06, CONTRADICTED),  # worse by more than the margin
    ("equivalent", {"margin_abs": 0.02}, 0.02, INCONCLUSIVE),   # on the margin
])
def test_mean_verdicts_for_each_expectation(tmp_path, expect, margin, delta, expected):
    write_record(tmp_path, "A", "e", correct(0.80 + delta, jitter=0.01, seed=5), metric="digits_acc")
    write_record(tmp_path, "B", "e", correct(0.80, jitter=0.01, seed=6), metric="digits_acc")
    (result,) = evaluate(tmp_path, [claim(claim_test(expect, metric="digits_acc", **margin))])
    (t,) = result["tests"]
    assert t["verdict"] == expected, t
    assert t["statistic"] == "mean" and t["higher_is_better"] and t["effect"] == pytest.approx(delta, abs=0.003)
    # supported and contradicted each come from a one-sided test that rejects after Holm
    assert (t["p_holm"] <= 0.05) == (expected == SUPPORTED)
    assert (t["p_opposite_holm"] <= 0.05) == (expected == CONTRADICTED)


def test_holm_over_the_suites_tests_decides_the_verdicts(tmp_path, monkeypatch):
    # planted raw p-values: Holm by hand gives (0.03, 0.06, 0.06, 0.02): 0.04 and 0.03 are under alpha raw, not
    # after the adjustment; the opposite tests are one family too
    for run, shift in (("A", 0.3), ("B", 0.4)):
        write_record(tmp_path, run, "e", features(shift))
    planted = iter([(0.01, 0.99), (0.04, 0.96), (0.03, 0.0125), (0.005, 0.995)])
    monkeypatch.setattr(claims_mod, "pvalues_of", lambda *args: next(planted))
    results = evaluate(tmp_path, [claim(claim_test(), claim_test(), cid="C1"), claim(claim_test(), claim_test(), cid="C2")])
    tests = [t for c in results for t in c["tests"]]
    assert [t["p"] for t in tests] == [0.01, 0.04, 0.03, 0.005]
    assert [t["p_holm"] for t in tests] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [t["p_opposite_holm"] for t in tests] == pytest.approx([1.0, 1.0, 0.05, 1.0])
    assert [t["verdict"] for t in tests] == [SUPPORTED, INCONCLUSIVE, CONTRADICTED, SUPPORTED]
    assert [c["verdict"] for c in results] == [INCONCLUSIVE, CONTRADICTED]
    assert {t["family"] for t in tests} == {4} and {t["alpha"] for t in tests} == {0.05}


def test_the_verdict_and_claim_rules():
    assert verdict_of(0.05, 0.9) == SUPPORTED and verdict_of(0.051, 0.9) == INCONCLUSIVE
    assert verdict_of(0.9, 0.04) == CONTRADICTED and verdict_of(0.02, 0.9, alpha=0.01) == INCONCLUSIVE
    assert claim_verdict([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert claim_verdict([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert claim_verdict([SUPPORTED, INCONCLUSIVE, CONTRADICTED]) == CONTRADICTED


def test_equivalence_is_two_one_sided_tests():
    # the confidence distribution 2 d - r of a difference with point d = 1 and replicates r: inside (-2, 2) at both
    # ends needs both one-sided tests; its p is the larger one, outside is the smaller one twice
    reps = 1.0 + np.random.default_rng(0).normal(0, 0.5, 999)
    diff = {"value_at_n": 1.0, "replicates": reps.tolist()}
    inside, outside = claims_mod.pvalues_of("equivalent", diff, 1, 2.0)
    lower = (1 + np.sum(2 - reps <= -2.0)) / 1000
    upper = (1 + np.sum(2 - reps >= 2.0)) / 1000
    assert inside == pytest.approx(max(lower, upper)) and inside == pytest.approx(upper)
    assert outside == pytest.approx(min(1.0, 2 * min(1 - lower + 2 / 1000, 1 - upper + 2 / 1000)), abs=2e-3)
    # lower is better: the effect is b - a, so H1 effect > -m is a - b < m
    better, worse = claims_mod.pvalues_of("not_worse", diff, -1, 0.5)
    assert better == pytest.approx((1 + np.sum(2 - reps >= 0.5)) / 1000)
    assert worse == pytest.approx((1 + np.sum(2 - reps <= 0.5)) / 1000)


# ---------------------------------------------------------------- records without (good) per-sample values
def test_a_missing_damaged_or_absent_sidecar_is_one_line_naming_the_file(tmp_path):
    path = write_record(tmp_path, "A", "e", features(0.3))
    write_record(tmp_path, "B", "e", features(0.4))
    sidecar = path.parent / "e-id.digits_fd.features.npy"
    sidecar.write_bytes(sidecar.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(UserError, match=r"claim 'C', test 1: .*e-id\.digits_fd\.features\.npy.* SHA-256") as info:
        evaluate(tmp_path, [claim(claim_test())])
    assert "\n" not in str(info.value)
    sidecar.unlink()
    with pytest.raises(UserError, match=r"e-id\.digits_fd\.features\.npy.* cannot be read \(No such file"):
        evaluate(tmp_path, [claim(claim_test())])
    record = json.loads(path.read_text())  # a record written before records kept per-sample values
    del record["features"]
    path.write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"keeps no per-sample values for 'digits_fd'.*rerun the suite"):
        evaluate(tmp_path, [claim(claim_test())])


def test_missing_cells_sample_counts_and_scales_are_errors_naming_the_claim(tmp_path):
    write_record(tmp_path, "A", "e", features(0.3))
    write_record(tmp_path, "B", "e", features(0.4))
    with pytest.raises(UserError, match=r"claim 'C', test 1: no records for \(run, eval\) = \('B', 'J=4'\)"):
        evaluate(tmp_path, [claim(claim_test(b=("B", "J=4")))])
    write_record(tmp_path, "B", "small", features(0.4)[:128])
    with pytest.raises(UserError, match="claim 'C', test 1: a has 256 samples per set and b 128"):
        evaluate(tmp_path, [claim(claim_test(b=("B", "small")))])
    write_record(tmp_path, "A", "e", features(0.3), scale="smoke")
    with pytest.raises(UserError, match="scales cpu, smoke"):
        evaluate(tmp_path, [claim(claim_test())])


# ---------------------------------------------------------------- suite files
TINY_SUITE = """
name: tiny-claims
title: "Tiny claims on digits"
report:
  kind: claims
  alpha: 0.05
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
    ("margin: 0.5", "margin: 0.5, margin_abs: 3", "claim 'T1', test 1: give margin (a share of b's debiased "
                                                  "estimate) or margin_abs"),
    ("expect: not_worse, margin: 0.5", "expect: equivalent", "claim 'T1', test 1: expect equivalent needs a margin > 0"),
    ("expect: better}\n    - id: T2", "expect: better, margin_abs: 0.1}\n    - id: T2",
     "claim 'T1', test 2: expect better tests effect > 0 and takes no margin"),
    ("metric: digits_acc", "metric: digits_kid", "claim 'T1', test 2: metric 'digits_kid' has no per-sample values"),
    ("alpha: 0.05", "alpha: 0.5", "the claims report's alpha must be a number in (0, 0.5)"),
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
    """Synthetic records on disk -> `elit-bench table`: each test's verdict and p-values in table.md, verdicts.json
    and the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = write_suite(tmp_path)
    out = tmp_path / "runs"
    for run, ev, shift in (("A", "plain", 0.5), ("B", "plain", 0.3), ("A", "cfg", 0.5)):
        write_record(out, run, ev, features(shift, jitter=0.02, seed=len(run + ev)), suite="tiny-claims")
    write_record(out, "A", "plain", correct(0.85, jitter=0.01, seed=8), metric="digits_acc", suite="tiny-claims")
    write_record(out, "B", "plain", correct(0.80, jitter=0.01, seed=9), metric="digits_acc", suite="tiny-claims")
    drawn = []
    monkeypatch.setattr(plt, "close", lambda fig=None: drawn.append(fig))
    dest = tmp_path / "report"
    assert main(["table", str(path), "--out", str(out), "--dest", str(dest)]) == 0
    md = (dest / "table.md").read_text()
    verdicts = json.loads((dest / "verdicts.json").read_text())
    t1, t2 = verdicts["claims"]
    # T1: FD closer to the reference (not worse: supported); accuracy 0.80 vs 0.85 (better: contradicted)
    assert [t["verdict"] for t in t1["tests"]] == [SUPPORTED, CONTRADICTED] and t1["verdict"] == CONTRADICTED
    # T2: the same shift, only the jitter differs: inconclusive
    assert t2["tests"][0]["verdict"] == INCONCLUSIVE and t2["verdict"] == INCONCLUSIVE
    assert t2["ratios"][0]["value"] == pytest.approx(1.0) and t2["ratios"][0]["paper"] == 2.0
    assert verdicts["alpha"] == 0.05 and verdicts["family"] == 3
    lines = [line for line in md.splitlines() if line.startswith("|")]
    col = {c: i for i, c in enumerate(x.strip() for x in lines[0].split("|"))}
    cells = [[x.strip() for x in line.split("|")] for line in lines[2:5]]
    tests = t1["tests"] + t2["tests"]
    assert [c[col["test verdict"]] for c in cells] == [SUPPORTED, CONTRADICTED, INCONCLUSIVE]
    assert [c[col["claim verdict"]] for c in cells] == [CONTRADICTED, "", INCONCLUSIVE]
    assert [c[col["p"]] for c in cells] == [f"{t['p']:.2g}" for t in tests]
    assert [c[col["Holm p"]] for c in cells] == [f"{t['p_holm']:.2g}" for t in tests]
    assert [c[col["Holm p opposite"]] for c in cells] == [f"{t['p_opposite_holm']:.2g}" for t in tests]
    assert cells[0][col["claim"]] == "T1" and cells[0][col["paper"]] == "made up for the test"
    assert "B @ plain vs A @ plain" in cells[0][col["test"]] and "margin 0.5 x abs(b's debiased" in cells[0][col["test"]]
    assert "(seed 0; FD@256: " in cells[0][col["a (ours)"]] and "FD@" not in cells[1][col["a (ours)"]]
    assert "paired" in cells[0][col["method (seeds)"]]
    assert "Claims: 0 supported, 1 contradicted, 1 inconclusive at this scale." in md
    assert "alpha = 0.05, Holm-adjusted over the family of this suite's 3 tests" in md
    assert "\\begin{tabular}" in (dest / "table.tex").read_text()
    assert (dest / "figure.png").is_file() and (dest / "figure.svg").is_file()
    # the forest plot: one point per test at its effect relative to abs(b's estimate), in its verdict's colour
    ax = drawn[-1].axes[0]
    points = [c for c in ax.lines if c.get_marker() == "o" and len(c.get_xdata()) == 1]
    xs = [float(p.get_xdata()[0]) for p in points]
    assert xs == pytest.approx([100 * t["effect"] / abs(t["b"]["estimate"]) for t in tests])
    assert [p.get_color() for p in points] == [claims_mod.VERDICT_COLOURS[t["verdict"]] for t in tests]
    assert [t.get_text() for t in ax.get_yticklabels()][0].startswith("T1.1 B @ plain vs A @ plain")


# ---------------------------------------------------------------- end to end and the dry run
def test_tiny_claims_suite_runs_end_to_end_and_its_effects_follow_from_its_sidecars(tmp_path, monkeypatch, capsys):
    from elit_bench.results.records import cell_arm

    monkeypatch.setenv("ELIT_BENCH_CACHE", str(tmp_path / "cache"))
    path = write_suite(tmp_path)
    out = tmp_path / "runs"
    assert main(["run", str(path), "--out", str(out), "--no-progress", "-q"]) == 0
    report = out / "tiny-claims" / "cpu" / "report"
    assert {"table.md", "table.tex", "verdicts.json", "figure.png", "figure.svg", "samples.png"} <= \
        {p.name for p in report.iterdir()}
    assert main(["table", str(path), "--out", str(out), "--dest", str(tmp_path / "again")]) == 0
    written = json.loads((tmp_path / "again" / "verdicts.json").read_text())
    assert written == json.loads((report / "verdicts.json").read_text())  # the bootstrap is seeded
    records = {(r["run_label"], r["eval_label"]): r for r in load_records(out, "tiny-claims")}
    tests = [t for c in written["claims"] for t in c["tests"]]
    for t in tests:  # one training seed each: a cell's estimate is the same drawing in both calls
        (arm_a, ref), (arm_b, _) = (cell_arm([records[(t[k]["run"], t[k]["eval"])]], t["metric"], k) for k in "ab")
        statistic = "frechet" if t["metric"] == "digits_fd" else "mean"
        est = [cell_interval(arm, statistic, ref)["estimate"] for arm in (arm_a, arm_b)]
        sign = -1 if t["metric"] == "digits_fd" else 1
        assert t["effect"] == pytest.approx(sign * (est[0] - est[1]), rel=1e-6, abs=1e-9)
        assert t["pairing"] == "paired"  # every set of training seed 0 draws the same noise block
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


def test_the_claims_suite_plans_its_seeds_and_evaluates_every_cell_it_tests():
    # catches: a claims test naming a cell the suite never evaluates, or a run that lost its seeds (ten for the
    # models C1 and C2 compare, as `plan` asked of the three-seed pilot; three for the others)
    from elit_bench.suites.spec import load_suite

    suite = load_suite("claims")
    runs = suite.runs("cpu")
    seeds = {}
    for run in runs:
        seeds.setdefault(run.label, set()).add(run.train["seed"])
    ten = {"DiT", "ELIT-MB"}
    assert len(runs) == 38 and all(s == set(range(10 if label in ten else 3)) for label, s in seeds.items())
    cells = {(run.label, ev.label) for run in runs for ev in run.evals}
    for c in suite.report["claims"]:
        for test in c["tests"]:
            for side in (test["a"], test["b"]):
                assert (side["run"], side["eval"]) in cells, (c["id"], side)
