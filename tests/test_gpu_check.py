"""scripts/gpu_check.sh, the GPU acceptance check, runs end to end on the CPU at its tiny size (as CI keeps it working)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_every_step_and_writes_measurements(tmp_path):
    out = tmp_path / "check.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", ELIT_BENCH_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--tiny", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    results = record["results"]
    assert record["size"] == "tiny" and set(results) == {"mfu", "latency", "memory", "features", "smoke"}
    assert not [name for name, r in results.items() if "error" in r]
    # training: both models, eager and compiled, measured rates; compiled runs report dynamo's counts
    mfu = results["mfu"]["rows"]
    assert {(r["model"], r["compile"]) for r in mfu} == {(m, c) for m in ("DiT-S/2", "ELIT-DiT-S/2") for c in (0, 1)}
    assert all(r["steps_per_s"] > 0 and r["model_tflops_per_s"] > 0 for r in mfu)
    assert all(r["fallbacks"] == 0 for r in mfu if r["compile"])
    # latency: one row per budget, cost rising with the budget
    latency = results["latency"]["rows"]
    flops = [r["forward_gflops"] for r in sorted(latency, key=lambda r: r["budget"])]
    assert len(latency) >= 3 and flops == sorted(flops) and flops[0] < flops[-1]
    assert all(r["precision"] == "bf16" and r["forward_ms"] > 0 for r in latency)
    # memory: the dry run's plan for the step it ran
    memory = results["memory"]
    assert memory["micro_batch"] >= 1 and memory["estimated_peak_gib"] > 0
    features = {r["extractor"]: r["features_per_s"] for r in results["features"]["rows"]}
    assert set(features) == {"inception-v3-tf", "dinov2-vitl14"} and min(features.values()) > 0
    # the smoke suite ran and its records say where their metrics ran
    smoke = results["smoke"]
    assert smoke["records"] > 0 and [d.split()[0] for d in smoke["metrics_device"]] == ["cpu"]
    assert all(value is not None for value in smoke["metrics"].values())
    assert "wrote" in proc.stdout and "smoke" in proc.stdout
