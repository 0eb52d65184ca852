"""`elit-bench bench`: measurements come from the real code paths, carry their provenance, and bad input exits 2."""

import json

import pytest
import torch

from elit_bench.cli import main
from elit_bench.flops import TRAIN_MULTIPLIER, forward_flops
from elit_bench.models import create_model

TINY = ["--kw", "hidden_size=32", "--kw", "depth=3", "--kw", "num_heads=2"]


def test_train_bench_times_the_training_step_and_counts_its_flops(tmp_path, capsys):
    out = tmp_path / "train.json"
    argv = ["bench", "train", "DiT-S/2", "ELIT-DiT-S/2", "--resolution", "16", "--batch", "4", "--steps", "2",
            "--warmup", "1", "--rounds", "1", "--threads", "2", *TINY, "--out", str(out)]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    record = json.loads(out.read_text())
    assert record["torch_threads"] == 2
    assert record["command"].startswith("elit-bench bench train DiT-S/2")
    assert record["provenance"]["versions"]["torch"]
    rows = {r["model"]: r for r in record["results"]}
    assert set(rows) == {"DiT-S/2", "ELIT-DiT-S/2"}
    for name, row in rows.items():
        model = create_model(name, input_size=16, in_channels=1, num_classes=10, hidden_size=32, depth=3,
                             num_heads=2)
        assert row["params"] == sum(p.numel() for p in model.parameters())
        assert row["steps_per_s"] > 0 and row["images_per_s"] == pytest.approx(4 * row["steps_per_s"])
        # full budget every step: model FLOPs/s = analytic training FLOPs per step x steps/s
        expected = forward_flops(model) * TRAIN_MULTIPLIER * 4 * row["steps_per_s"] / 1e12
        assert row["model_tflops_per_s"] == pytest.approx(expected, rel=1e-9)
    assert "| DiT-S/2" in capsys.readouterr().out


def test_multi_budget_applies_to_elit_and_leaves_the_baseline_alone(tmp_path):
    out = tmp_path / "train.json"
    argv = ["bench", "train", "DiT-S/2", "ELIT-DiT-S/2", "--multi-budget", "--resolution", "16", "--batch", "4",
            "--steps", "3", "--warmup", "0", "--rounds", "1", *TINY, "--out", str(out)]
    assert main(argv) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["DiT-S/2"]["multi_budget"] is False and rows["ELIT-DiT-S/2"]["multi_budget"] is True
    elit = create_model("ELIT-DiT-S/2", input_size=16, in_channels=1, num_classes=10, hidden_size=32, depth=3,
                        num_heads=2)
    full = forward_flops(elit) * TRAIN_MULTIPLIER * 4 * rows["ELIT-DiT-S/2"]["steps_per_s"] / 1e12
    least = forward_flops(elit, 1) * TRAIN_MULTIPLIER * 4 * rows["ELIT-DiT-S/2"]["steps_per_s"] / 1e12
    # seed 0 draws budgets below the full J=4 in these 3 steps: fewer FLOPs than full-budget steps
    assert least * (1 - 1e-9) <= rows["ELIT-DiT-S/2"]["model_tflops_per_s"] < full * (1 - 1e-6)


def test_latency_bench_sweeps_budgets(tmp_path):
    out = tmp_path / "latency.json"
    argv = ["bench", "latency", "ELIT-DiT-S/2", "--resolution", "128", "--budgets", "1,all", "--batch", "2",
            "--warmup", "0", "--repeats", "1", *TINY, "--out", str(out)]
    assert main(argv) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["budget"] for r in rows] == [1, 4]
    assert rows[0]["forward_gflops"] < rows[1]["forward_gflops"]
    assert all(r["forward_ms"] > 0 for r in rows)


@pytest.mark.parametrize("argv, message", [
    (["bench", "train", "NoSuchModel/2", "--steps", "1"], "unknown model"),
    (["bench", "latency", "ELIT-DiT-S/2", "--resolution", "128", "--budgets", "99", *TINY], "outside 1..4"),
    (["bench", "latency", "DiT-S/2", "--kw", "hidden_size"], "key=value"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "r.json"
    assert main([*argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_out_must_be_a_file(tmp_path, capsys):
    assert main(["bench", "latency", "DiT-S/2", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_inception_bench_runs_both_pipelines_on_the_same_features(tmp_path):
    out = tmp_path / "inception.json"
    argv = ["bench", "inception", "--images", "4", "--size", "16", "--batch", "2", "--repeats", "1", "--out", str(out)]
    assert main(argv) == 0
    rows = {r["pipeline"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["ours"]["ours_speedup"] == 1.0 and len(rows) == 3
    for row in rows.values():
        assert row["features_per_s"] > 0
        assert row["max_abs_feature_diff"] < 1e-4  # the same network on the same images
