"""Suites: every paper item is a suite whose paper-scale plan matches `elit-bench flops`; bad suites exit 2."""

import json

import pytest
import torch

from elit_bench.cli import main
from elit_bench.data import EMBEDDED, describe_data, model_input_kwargs
from elit_bench.models import create_model
from elit_bench.models.cli import model_flops
from elit_bench.suites.spec import list_suites, load_suite

PAPER_SUITES = {"table1-256", "table1-512", "table2-video", "table3-readwrite", "table4-mmdit-flops",
                "table5a-group-size", "table5b-block-alloc", "table5c-variable-budget", "table5d-batching",
                "table6-rho", "fig2-adaptive-compute", "fig4-convergence", "fig5-guidance", "fig7-steps-vs-tokens",
                "fig8-teacache", "fig9-latency", "fig10-flops", "quickstart"}


def test_suites_json_lists_every_paper_item(capsys):
    assert main(["suites", "--json"]) == 0
    listed = {s["name"] for s in json.loads(capsys.readouterr().out)}
    assert PAPER_SUITES <= listed


def dry_run(capsys, suite, scale="paper", *extra):
    assert main(["run", suite, "--scale", scale, "--dry-run", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("suite", sorted(PAPER_SUITES))
def test_paper_dry_run_tf_equals_flops_command(suite, capsys):
    plan = dry_run(capsys, suite)
    spec = {r.id: r for r in load_suite(suite).runs("paper", strict_variables=False)}
    assert plan["runs"]
    for row in plan["runs"]:
        run = spec[row["run"]]
        if run.compute:
            continue
        train = run.train
        variants = "MultiPatch" in train["model"] or train.get("batch_mode") == "scaled"
        if variants:  # patch or batch varies per iteration: checked by the runner's own expectation
            assert row["train_tflops_per_iter"] > 0
            continue
        kwargs = dict(train.get("model_kwargs") or {})
        if train.get("data") in EMBEDDED:  # the model is shaped by the data: 1 channel, 10 classes
            kwargs = {**model_input_kwargs(describe_data(train["data"], train.get("resolution"))), **kwargs}
        with torch.device("meta"):
            model = create_model(train["model"], resolution=train.get("resolution", 256), **kwargs)
        budgets = train.get("budget_range") or (f"1:{model.max_budget}" if train.get("multi_budget") else None)
        flops = model_flops(train["model"], train.get("resolution", 256), batch=train["batch"], overrides=kwargs,
                            budget_spec=budgets)
        assert row["train_tflops_per_iter"] == pytest.approx(flops["train_tflops"], rel=1e-9), row


def test_table1_plan_reproduces_paper_tf(capsys):
    plan = {r["label"]: r for r in dry_run(capsys, "table1-256")["runs"]}
    assert plan["DiT-XL"]["train_tflops_per_iter"] == pytest.approx(182, rel=0.01)
    assert plan["ELIT-DiT-XL"]["train_tflops_per_iter"] == pytest.approx(188, rel=0.01)
    assert plan["ELIT-MB-DiT-XL"]["train_tflops_per_iter"] == pytest.approx(190, rel=0.03)


@pytest.mark.parametrize("suite", sorted(PAPER_SUITES))
def test_smoke_scale_runs_on_embedded_data(suite, capsys):
    plan = dry_run(capsys, suite, "smoke")
    for run in load_suite(suite).runs("smoke"):
        assert run.compute or run.train.get("data") in EMBEDDED
    assert plan["runs"]


def test_quickstart_runs_have_equal_training_flops(capsys):
    tf = [r["train_tflops_per_iter"] for r in dry_run(capsys, "quickstart")["runs"]]
    assert tf[1] == pytest.approx(tf[0], rel=0.01)


def test_unresolved_variables_are_named(tmp_path, capsys):
    assert main(["run", "table3-readwrite", "--scale", "paper", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "IMAGENET256" in err and "--set var.IMAGENET256" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("text, match", [
    ("name: x\nruns: [\n", "not valid YAML"),
    ("- just a list\n", "must be a mapping"),
    ("name: x\nscales: {paper: {}}\n", "missing 'runs'"),
    ("name: x\nruns: [{label: a, train: {model: DiT-S/2}}]\nscales: {huge: {}}\n", "valid choices: paper, proxy, smoke"),
    ("name: x\nruns: [{label: a, trian: {}}]\nscales: {paper: {}}\n", "unknown key"),
    ("name: x\nbogus: 1\nruns: [{label: a}]\nscales: {paper: {}}\n", "unknown key"),
])
def test_malformed_suite_exits_2_and_touches_nothing(tmp_path, capsys, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["run", str(path), "--out", str(out)]) == 2
    assert match in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"


def test_unknown_suite_scale_and_model_exit_2(tmp_path, capsys):
    assert main(["run", "table9-nope", "--dry-run"]) == 2
    assert "valid choices" in capsys.readouterr().err
    assert main(["run", "quickstart", "--scale", "huge", "--dry-run"]) == 2
    assert "valid choices" in capsys.readouterr().err
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nruns: [{label: a, train: {model: DiT-XXL/9, data: digits}}]\nscales: {smoke: {}}\n")
    assert main(["run", str(path), "--dry-run"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_every_suite_file_loads():
    for name in list_suites():
        suite = load_suite(name)
        assert suite.name == name
