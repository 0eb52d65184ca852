"""The elastic-compute zoo end to end (`elit-bench run elastic-zoo --scale smoke`): every method and combination
goes through the runner into records whose sampling FLOPs say what each knob saved, DyDiT fine-tunes from the
suite's DiT and counts its realised FLOPs, the report draws one figure, and the same command resumes to nothing."""

import json

import pytest

from elit_bench.cli import main
from elit_bench.suites.spec import load_suite


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    assert main(["run", "elastic-zoo", "--scale", "smoke", "--out", str(out), "--no-progress"]) == 0
    return out / "elastic-zoo" / "smoke"


def records(root) -> dict[tuple[str, str], dict]:
    return {(r["run_label"], r["eval_label"]): r for r in
            (json.loads(p.read_text()) for p in root.glob("*/records/*.json")) if r["run_label"] != "real data"}


def gflops(rec: dict) -> float:
    return rec["flops"]["sample_flops_per_sample"]


def test_every_evaluation_has_a_record_with_its_series(zoo):
    recs = records(zoo)
    expected = {(run.label, ev.label) for run in load_suite("elastic-zoo").runs("smoke") for ev in run.evals}
    assert set(recs) == expected
    assert {r["series"] for r in recs.values()} >= {"DiT: steps", "TREAD: steps", "ELIT-MB: budget", "DyDiT: lambda",
                                                    "DiT + TaylorSeer", "DiT + ToMe", "ELIT-MB J=2 + TaylorSeer"}
    assert (zoo / "report" / "figure.png").is_file() and (zoo / "report" / "table.md").is_file()


def test_each_knob_saves_what_its_method_says(zoo):
    recs = records(zoo)
    dit = gflops(recs[("DiT", "8 steps")])
    assert gflops(recs[("DiT", "4 steps")]) == pytest.approx(dit / 2)
    assert recs[("DiT", "ToMe 0.5")]["sample"]["tome_ratio"] == 0.5 and gflops(recs[("DiT", "ToMe 0.5")]) < dit
    ts = recs[("DiT", "TaylorSeer N=3")]
    assert ts["sample"]["taylorseer_forecast_evaluations"] > 0 and gflops(ts) < 0.7 * dit
    assert gflops(recs[("TREAD", "8 steps")]) == dit  # TREAD samples as the DiT it is
    elit = {j: gflops(recs[("ELIT-MB", f"J={j}")]) for j in (1, 4)}
    assert elit[1] < elit[4]
    combined = recs[("ELIT-MB", "J=2 + TaylorSeer N=3")]
    assert combined["sample"]["budget"] == 2 and gflops(combined) < elit[1]  # step- and token-level savings compose


def test_dydit_fine_tunes_from_the_suites_dit_and_counts_what_it_computed(zoo):
    dit, dydit = (next(r for r in load_suite("elastic-zoo").runs("smoke") if r.label == label)
                  for label in ("DiT", "DyDiT 0.5"))
    resolved = json.loads((zoo / dydit.id / "run.json").read_text())["resolved"]
    assert resolved["init"] == str(zoo / dit.id / "train" / "checkpoints" / "last.pt")
    sample_record = next((zoo / dydit.id / "evals").glob("*/step-*/samples.json"))
    assert json.loads(sample_record.read_text())["flops_realised"] is True


def test_the_same_command_resumes_to_nothing(zoo, capsys):
    before = {p: p.stat().st_mtime_ns for p in zoo.glob("*/records/*.json")}
    assert main(["run", "elastic-zoo", "--scale", "smoke", "--out", str(zoo.parents[1]), "--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in zoo.glob("*/records/*.json")} == before
