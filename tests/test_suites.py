"""Suites: every paper item is a suite whose paper-scale plan matches `elit-bench flops`; bad suites exit 2."""

import json

import pytest
import torch

from elit_bench.cli import main
from elit_bench.data import EMBEDDED, describe_data, model_input_kwargs
from elit_bench.models import create_model
from elit_bench.models.cli import model_flops
from elit_bench.suites.spec import ComputeRun, list_suites, load_suite

PAPER_SUITES = {"table1-256", "table1-512", "table2-video", "table3-readwrite", "table4-mmdit-flops",
                "table5a-group-size", "table5b-block-alloc", "table5c-variable-budget", "table5d-batching",
                "table6-rho", "fig2-adaptive-compute", "fig4-convergence", "fig5-guidance", "fig7-steps-vs-tokens",
                "fig8-teacache", "fig9-latency", "fig10-flops", "quickstart", "elastic-zoo"}


def test_suites_json_lists_every_paper_item(capsys):
    assert main(["suites", "--json"]) == 0
    listed = {s["name"] for s in json.loads(capsys.readouterr().out)}
    assert PAPER_SUITES <= listed


def dry_run(capsys, suite, scale="paper", *extra):
    # the plan only: the wall-time estimate (which times each model) is tested in test_claims.py
    assert main(["run", suite, "--scale", scale, "--dry-run", "--json", "--no-estimate", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("suite", sorted(PAPER_SUITES))
def test_paper_dry_run_tf_equals_flops_command(suite, capsys):
    plan = dry_run(capsys, suite)
    spec = {r.id: r for r in load_suite(suite).runs("paper", strict_variables=False)}
    assert plan["runs"]
    for row in plan["runs"]:
        run = spec[row["run"]]
        if isinstance(run, ComputeRun):
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
        assert isinstance(run, ComputeRun) or run.train.get("data") in EMBEDDED
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


# ---------------------------------------------------------------- matched compute at every scale
@pytest.mark.parametrize("suite", sorted(PAPER_SUITES))
def test_every_scale_keeps_the_paper_batch_and_step_ratios(suite, capsys):
    """Between any two runs, batch and steps ratios equal the paper scale's, or the run says why not."""
    for scale in load_suite(suite).raw["scales"]:
        for row in dry_run(capsys, suite, scale)["runs"]:
            ratios = row.get("ratios")
            if "compute" in row:  # measurements train nothing
                continue
            for key in ("batch", "steps"):
                assert ratios[key] > 0 and (f"paper_{key}" in ratios or scale != "paper")
                if f"paper_{key}" in ratios and key not in ratios["unmatched"]:
                    assert ratios[key] == pytest.approx(ratios[f"paper_{key}"], rel=0.02), (scale, row)


def test_multi_budget_runs_keep_their_share_below_paper_scale(capsys):
    """The issue's example: DiT-B/2 17.7 TF vs ELIT-MB 39.4 TF at proxy (2.2x); now 1.5x the batch at every scale."""
    for scale, batch in (("paper", 256), ("proxy", 128), ("smoke", 32)):
        plan = {r["label"]: r for r in dry_run(capsys, "table1-256", scale)["runs"]}
        assert plan["DiT-XL"]["batch"] == batch and plan["ELIT-MB-DiT-XL"]["batch"] == 1.5 * batch
        tf = plan["ELIT-MB-DiT-XL"]["train_tflops_per_iter"] / plan["DiT-XL"]["train_tflops_per_iter"]
        assert tf < 1.4, (scale, tf)


def write_suite(tmp_path, runs: str, scales: str = "{paper: {}, smoke: {train: {batch: 8}}}", extra: str = "") -> str:
    path = tmp_path / "s.yaml"
    path.write_text(f"""name: s
base:
  train: {{data: digits, resolution: 8, batch: 16, steps: 4, model_kwargs: {{hidden_size: 32, depth: 3, num_heads: 2}}}}
  sample: {{steps: 2, batch: 8}}
  metrics: {{names: [digits_fd], num_samples: 8, real: digits}}
runs:
{runs}
scales: {scales}
{extra}""")
    return str(path)


def test_relative_batch_follows_the_scale_and_matched_flops(tmp_path, capsys):
    path = write_suite(tmp_path, """  - {label: DiT, train: {model: DiT-S/2}}
  - {label: MB, train: {model: ELIT-DiT-S/2, model_kwargs: {group_size: 2}, multi_budget: true, batch: {times: 1.5}}}
  - {label: MB-matched, train: {model: ELIT-DiT-S/2, model_kwargs: {group_size: 2}, multi_budget: true, batch: {match_flops: DiT}}}""")
    for scale, base in (("paper", 16), ("smoke", 8)):
        plan = {r["label"]: r for r in dry_run(capsys, path, scale)["runs"]}
        assert plan["MB"]["batch"] == 1.5 * base
        matched = plan["MB-matched"]
        assert matched["train_tflops_per_iter"] == pytest.approx(plan["DiT"]["train_tflops_per_iter"], rel=0.1)
        assert "matches the training FLOPs of 'DiT'" in matched["ratios"]["unmatched"]["batch"]


def test_a_broken_ratio_is_refused_unless_marked(tmp_path, capsys):
    runs = """  - {label: DiT, train: {model: DiT-S/2}}
  - {label: MB, train: {model: ELIT-DiT-S/2, model_kwargs: {group_size: 2}, multi_budget: true, batch: 24}%s}"""
    path = write_suite(tmp_path, runs % "")
    assert main(["run", path, "--scale", "smoke", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "run 'MB' has 3x the batch of 'DiT' but 1.5x at paper scale" in err and "{times: 1.5}" in err
    path = write_suite(tmp_path, runs % ", unmatched: {batch: a fixed batch on purpose}")
    plan = {r["label"]: r for r in dry_run(capsys, path, "smoke")["runs"]}
    assert plan["MB"]["ratios"]["unmatched"] == {"batch": "a fixed batch on purpose"}


def test_seeds_expand_into_runs_of_one_label(tmp_path):
    path = write_suite(tmp_path, "  - {label: DiT, seeds: [0, 1, 2], train: {model: DiT-S/2}}")
    runs = load_suite(path).runs("smoke")
    assert [r.label for r in runs] == ["DiT"] * 3
    assert [r.train["seed"] for r in runs] == [0, 1, 2]
    assert len({r.id for r in runs}) == 3


def test_run_id_is_the_training_identity(tmp_path):
    """Run-control keys (steps, checkpoint and log intervals, progress) do not change the id; what is trained does."""
    path = write_suite(tmp_path, "  - {label: DiT, train: {model: DiT-S/2}}")
    suite = load_suite(path)
    base = suite.runs("smoke")[0].id
    for sets in ({"steps": 400}, {"ckpt_every": 7, "log_every": 3, "progress": False}):
        assert suite.runs("smoke", {"train": sets})[0].id == base
    for sets in ({"seed": 1}, {"lr": 1e-3}, {"model_kwargs": {"depth": 4}}):
        assert suite.runs("smoke", {"train": sets})[0].id != base


BAD_INPUT = [
    (["--set", "train.stepz=5"], "unknown key 'train.stepz'; did you mean 'train.steps'?"),
    (["--set", "train.steps=-5"], "train.steps: input should be greater than or equal to 1, got -5"),
    (["--set", "sample.bugdet=2"], "unknown key 'sample.bugdet'; did you mean 'sample.budget'?"),
    (["--set", "metrics.num_sample=8"], "unknown key 'metrics.num_sample'; did you mean 'metrics.num_samples'?"),
    (["--set", "metrics.names=[fdi]"], "metrics.names: unknown metric 'fdi'"),
    (["--set", "train.steps=[1,"], "the value of --set 'train.steps=[1,' is not valid YAML"),
    (["--set", "train.resolution=-16"], "train.resolution: input should be greater than or equal to 1, got -16"),
    (["--set", "train.resolution=17"], "input size (17, 17) is not divisible by patch size (2, 2)"),
    (["--set", "train.budget_range=1:99"], "budget range 1:99 must satisfy"),
    (["--set", "sample.budget=9"], "budget 9 is outside 1..4"),
    (["--set", "sample.guidance=ccfg"], "DiT-S/2"),
    (["--set", "train.logger=mlflow"], "train.logger: input should be 'tensorboard' or 'wandb'"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUT, ids=[m for _, m in BAD_INPUT])
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
def test_bad_input_exits_2_with_one_line_before_anything_runs(tmp_path, capsys, argv, message, dry):
    """A dry run fails where the real run would; the real run writes, trains and submits nothing."""
    path = write_suite(tmp_path, """  - {label: DiT, train: {model: DiT-S/2}}
  - {label: ELIT, train: {model: ELIT-DiT-S/2, model_kwargs: {group_size: 2}, multi_budget: true}}""")
    if "budget" in message or "budget_range" in argv[1]:  # budgets apply to the ELIT run only
        path = write_suite(tmp_path, "  - {label: ELIT, train: {model: ELIT-DiT-S/2, model_kwargs: {group_size: 2}, multi_budget: true}}")
    out = tmp_path / "out"
    assert main(["run", path, "--scale", "smoke", "--out", str(out), *argv] + (["--dry-run"] if dry else [])) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_dry_run_prints_ratios(tmp_path, capsys):
    assert main(["run", "table1-256", "--scale", "proxy", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "vs DiT-XL: batch 1.5x (paper 1.5x), steps 1x (paper 1x)" in out


# ---------------------------------------------------------------- run kinds, and one expansion per command
def test_run_kinds_round_trip_through_a_launched_process(tmp_path):
    from elit_bench.suites.spec import CheckpointRun, RunSpec, TrainingRun

    path = tmp_path / "kinds.yaml"
    path.write_text("name: kinds\nruns:\n"
                    "  - {label: T, train: {model: DiT-S/2, data: digits, resolution: 16, steps: 2}}\n"
                    "  - {label: F, compute: {kind: forward_flops, model: ELIT-DiT-S/2, budget: 2}}\n"
                    "  - {label: C, checkpoint: /nowhere/last.pt}\n"
                    "evals: [{label: e, metrics: {num_samples: 8}}]\nscales: {smoke: {}}\n")
    suite = load_suite(str(path))
    t, f = suite._expand("smoke", None, {}, True)[:2]  # the checkpoint is not there: not validated here
    c = suite._expand("smoke", None, {}, True)[2]
    assert [type(r) for r in (t, f, c)] == [TrainingRun, ComputeRun, CheckpointRun]
    assert f.evals == [] and f.settings.budget == 2 and t.evals[0].metrics_settings.num_samples == 8
    for run in (t, f, c):
        again = RunSpec.from_json(run.to_json())
        assert type(again) is type(run) and again == run and again.id == run.id
    assert t.config["steps"] == 2 and t.config_hash == t.id.rsplit("-", 1)[1]


def test_a_bad_compute_setting_fails_at_expansion(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nruns: [{label: F, compute: {kind: latency, model: DiT-S/2, repeat: 3}}]\n"
                    "scales: {smoke: {}}\n")
    assert main(["run", str(path), "--dry-run", "--no-estimate"]) == 2
    err = capsys.readouterr().err
    assert "run 'F'" in err and "compute.repeat" in err


def test_a_command_expands_its_suite_once(tmp_path, monkeypatch, capsys):
    """`elit-bench table` on the committed quickstart records: the report asks for the suite's runs three times
    (order, metric names, figure), the suite is expanded and validated once."""
    import shutil

    from elit_bench.suites.spec import Suite

    out = tmp_path / "runs"
    shutil.copytree(__import__("pathlib").Path(__file__).resolve().parents[1] / "results" / "quickstart" / "smoke",
                    out / "quickstart" / "smoke", ignore=shutil.ignore_patterns("report"))
    shutil.copytree(__import__("pathlib").Path(__file__).resolve().parents[1] / "results" / "_shared", out / "_shared")
    calls = []
    validated = Suite._validated
    monkeypatch.setattr(Suite, "_validated", lambda self, *a: calls.append(a[0]) or validated(self, *a))
    assert main(["table", "quickstart", "--out", str(out), "--scale", "smoke"]) == 0
    assert "DiT" in capsys.readouterr().out and calls == ["smoke"]
    suite = load_suite("quickstart")
    strict = suite.runs("smoke")
    assert suite.runs("smoke", strict_variables=False) == strict  # a strict expansion serves a dry one
    assert suite.runs("smoke", {"train": {"steps": 3}})[0].train["steps"] == 3  # other overrides: their own
