"""End to end: the quickstart suite runs, survives SIGKILL, and resumes without redoing finished runs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

TINY = ["--set", "train.steps=4", "--set", "train.ckpt_every=2", "--set", "train.model_kwargs.hidden_size=32",
        "--set", "train.model_kwargs.depth=4", "--set", "metrics.num_samples=16", "--set", "sample.steps=2",
        "--set", "sample.batch=16", "--no-progress"]


def quickstart(out):
    env = dict(os.environ, OMP_NUM_THREADS="1", ELIT_BENCH_CACHE=str(out / "cache"))
    return subprocess.Popen([sys.executable, "-m", "elit_bench.cli", "run", "quickstart", "--out", str(out), *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def test_sigkill_mid_suite_then_same_command_completes(tmp_path):
    out = tmp_path / "runs"
    proc = quickstart(out)
    root = out / "quickstart" / "smoke"
    deadline = time.time() + 600
    while time.time() < deadline and not list(root.glob("*/DONE")):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    first_done = list(root.glob("*/DONE"))
    assert len(first_done) == 1, "the first run should be done while the second is still going"
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = first_done[0].parent
    stamps = {p: p.stat().st_mtime_ns for p in finished.rglob("*") if p.is_file()}

    rerun = quickstart(out)
    log, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, log
    assert "1 already done" in log
    # the finished run was not touched: same files, same modification times
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("*") if p.is_file()} == stamps
    runs = sorted(root.glob("*/DONE"))
    assert len(runs) == 2
    records = sorted(p for p in root.glob("*/records/*.json") if p.parts[-3] != "real-data")
    assert len(records) == 2 + 6  # DiT: J=all, CFG; ELIT-MB: J=1..4, CFG, CCFG
    floor = json.loads((root / "real-data" / "records" / "digits-16px-n16.json").read_text())
    assert floor["run_label"] == "real data" and set(floor["intervals"]) == {"digits_fd_debiased", "digits_acc"}
    for path in records:
        record = json.loads(path.read_text())
        assert {"digits_fd", "digits_acc"} <= set(record["metrics"])
        assert record["provenance"]["config_hash"] and record["flops"]["sample_flops_per_sample"] > 0
    assert (root / "report" / "table.md").is_file() and (root / "report" / "figure.png").is_file()


def test_compute_suites_run_and_draw_measured_axes(tmp_path, monkeypatch):
    """Fig. 9 and 10 plot one measured quantity against another (x is a metric of the same record)."""
    # catches: a figure whose x axis is not the record's measured quantity (e.g. sampling FLOPs instead of forward
    # GFLOPs), lines not split by the hue, or relative FLOPs that are not F(J~) / F(J) of the suite's model
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.colors import to_hex
    from test_guidance_modes import reference_forward_macs

    from elit_bench.cli import main
    from elit_bench.flops import forward_flops
    from elit_bench.models import create_model
    from elit_bench.suites.spec import load_suite

    figures = {}
    for suite in ("fig9-latency", "fig10-flops", "table4-mmdit-flops"):
        drawn = []
        monkeypatch.setattr(plt, "close", lambda fig=None, drawn=drawn: drawn.append(fig))
        assert main(["run", suite, "--scale", "smoke", "--out", str(tmp_path), "--no-progress"]) == 0
        assert (tmp_path / suite / "smoke" / "report" / "table.md").is_file()
        figures[suite] = drawn
    lines = {}
    for suite in ("fig9-latency", "fig10-flops"):
        ax, = figures[suite][0].axes
        report = load_suite(suite).report
        assert (ax.get_xlabel(), ax.get_ylabel()) == (report["xlabel"], report["ylabel"]), suite
        legend = {to_hex(h.get_color()): h.get_label() for h in ax.lines if len(h.get_xydata()) == 0}
        lines[suite] = {legend[to_hex(line.get_color())]: line.get_xydata()
                        for line in ax.lines if line.get_label().startswith("_child")}

    # Fig. 9 smoke: ELIT-DiT-S/2 at 64 px, groups of 2x2 tokens, budgets 1, 2, 4: x = its forward GFLOPs
    (model, points), = lines["fig9-latency"].items()
    assert model == "ELIT-DiT-S/2"
    with torch.device("meta"):
        m = create_model("ELIT-DiT-S/2", resolution=64, group_size=2)
    assert points[:, 0].tolist() == pytest.approx([forward_flops(m, b) / 1e9 for b in (1, 2, 4)], rel=1e-9)
    assert (points[:, 1] > 0).all()  # measured milliseconds

    # Fig. 10: ELIT-DiT-XL/2 with 8x8-token groups (N / 64 groups, J = 64) at 256/512/1024 px, FLOPs relative to J = 64,
    # against the formulas of docs/conventions.md#flops written out independently
    budgets = [4, 8, 16, 24, 32, 48, 64]
    assert set(lines["fig10-flops"]) == {"256", "512", "1024"}
    for res, points in lines["fig10-flops"].items():
        n = (int(res) // 16) ** 2  # 8x down, patch 2
        full = reference_forward_macs(28, (4, 20, 4), 1152, n, n // 64, 64, patch_in=2 * 2 * 16)
        expected = [reference_forward_macs(28, (4, 20, 4), 1152, n, n // 64, j, patch_in=64) / full for j in budgets]
        assert points[:, 0].tolist() == budgets, res
        assert points[:, 1].tolist() == pytest.approx(expected, rel=2e-3), res
