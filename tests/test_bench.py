"""`elit-bench bench`: measurements come from the real code paths, carry their provenance, and bad input exits 2."""

import json

import pytest
import torch

from elit_bench.bench import forward_latency, peak_flops
from elit_bench.cli import main
from elit_bench.flops import TRAIN_MULTIPLIER, forward_flops
from elit_bench.models import create_model
from elit_bench.models.precision import DEFAULT_SAMPLE_PRECISION

TINY = ["--kw", "hidden_size=32", "--kw", "depth=3", "--kw", "num_heads=2"]


def test_train_bench_times_the_training_step_on_latents_and_counts_its_flops(tmp_path, capsys):
    out = tmp_path / "train.json"
    argv = ["bench", "train", "DiT-S/2", "ELIT-DiT-S/2", "--resolution", "64", "--batch", "4", "--steps", "2",
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
        # 64 px -> random 4x8x8 latents (the autoencoder's 8x down), ImageNet's 1000 classes
        assert row["latent_shape"] == [4, 8, 8] and row["compile"] is False
        model = create_model(name, input_size=8, in_channels=4, num_classes=1000, hidden_size=32, depth=3,
                             num_heads=2)
        assert row["params"] == sum(p.numel() for p in model.parameters())
        assert row["mfu"] is None and row["peak_tflops"] is None  # no known peak on CPU
        assert row["steps_per_s"] > 0 and row["images_per_s"] == pytest.approx(4 * row["steps_per_s"])
        # full budget every step: model FLOPs/s = analytic training FLOPs per step x steps/s
        expected = forward_flops(model) * TRAIN_MULTIPLIER * 4 * row["steps_per_s"] / 1e12
        assert row["model_tflops_per_s"] == pytest.approx(expected, rel=1e-9)
    assert "| DiT-S/2" in capsys.readouterr().out


def test_multi_budget_applies_to_elit_and_leaves_the_baseline_alone(tmp_path):
    out = tmp_path / "train.json"
    argv = ["bench", "train", "DiT-S/2", "ELIT-DiT-S/2", "--multi-budget", "--resolution", "128", "--batch", "4",
            "--steps", "3", "--warmup", "0", "--rounds", "1", *TINY, "--out", str(out)]
    assert main(argv) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["DiT-S/2"]["multi_budget"] is False and rows["ELIT-DiT-S/2"]["multi_budget"] is True
    elit = create_model("ELIT-DiT-S/2", input_size=16, in_channels=4, num_classes=1000, hidden_size=32, depth=3,
                        num_heads=2)
    full = forward_flops(elit) * TRAIN_MULTIPLIER * 4 * rows["ELIT-DiT-S/2"]["steps_per_s"] / 1e12
    least = forward_flops(elit, 1) * TRAIN_MULTIPLIER * 4 * rows["ELIT-DiT-S/2"]["steps_per_s"] / 1e12
    # seed 0 draws budgets below the full J=4 in these 3 steps: fewer FLOPs than full-budget steps
    assert least * (1 - 1e-9) <= rows["ELIT-DiT-S/2"]["model_tflops_per_s"] < full * (1 - 1e-6)


def test_latency_bench_sweeps_budgets_at_the_samplers_precision(tmp_path):
    out = tmp_path / "latency.json"
    argv = ["bench", "latency", "ELIT-DiT-S/2", "--resolution", "128", "--budgets", "1,all", "--batch", "2",
            "--warmup", "0", "--repeats", "1", *TINY, "--out", str(out)]
    assert main(argv) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["budget"] for r in rows] == [1, 4]
    assert rows[0]["forward_gflops"] < rows[1]["forward_gflops"]
    assert all(r["forward_ms"] > 0 for r in rows)
    assert {r["precision"] for r in rows} == {DEFAULT_SAMPLE_PRECISION}
    assert main([*argv, "--precision", "bf16"]) == 0
    assert {r["precision"] for r in json.loads(out.read_text())["results"]} == {"bf16"}


def test_bf16_latency_runs_the_forward_under_autocast(monkeypatch):
    model = create_model("DiT-S/2", input_size=8, in_channels=4, hidden_size=32, depth=1, num_heads=2)
    seen = []
    model.final_layers[0].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    forward_latency(model, 1, warmup=0, repeats=1, precision="bf16")
    forward_latency(model, 1, warmup=0, repeats=1, precision="fp32")
    assert seen == [torch.bfloat16, torch.float32]


def test_compiled_train_bench_reports_graphs_breaks_and_fallbacks(tmp_path, monkeypatch):
    monkeypatch.setattr("elit_bench.models.compile.DEFAULT_BACKEND", "eager")  # tracing without codegen
    out = tmp_path / "train.json"
    argv = ["bench", "train", "ELIT-DiT-S/2", "--multi-budget", "--compile", "--resolution", "128", "--batch", "4",
            "--steps", "2", "--warmup", "4", "--rounds", "1", "--peak-tflops", "1", *TINY, "--out", str(out)]
    assert main(argv) == 0
    row = json.loads(out.read_text())["results"][0]
    assert row["compile"] is True and row["graph_breaks"] == 0 and row["fallbacks"] == 0
    assert 1 <= row["graphs"] <= 4  # one per budget drawn (J = 4), each compiled once
    assert row["mfu"] == pytest.approx(row["model_tflops_per_s"] / 1.0)


def test_peak_table_matches_device_names(monkeypatch):
    cuda = torch.device("cuda", 0)
    for name, peak in [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
                       ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA L40S", 362e12), ("NVIDIA L4", 121e12),
                       ("NVIDIA GeForce RTX 3090", None)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, name=name: name)
        assert peak_flops(cuda) == peak, name
    assert peak_flops(torch.device("cpu")) is None
    assert peak_flops(torch.device("cpu"), 100.0) == 100e12


def test_cuda_graphs_need_a_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    argv = ["bench", "latency", "ELIT-DiT-S/2", "--resolution", "128", "--cuda-graphs", *TINY]
    assert main(argv) == 2
    assert "--cuda-graphs needs a CUDA device" in capsys.readouterr().err


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
