"""End to end: the quickstart suite runs, survives SIGKILL, and resumes without redoing finished runs."""

import json
import os
import signal
import subprocess
import sys
import time

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
    assert floor["run_label"] == "real data" and set(floor["intervals"]) == {"digits_fd", "digits_acc"}
    for path in records:
        record = json.loads(path.read_text())
        assert {"digits_fd", "digits_acc"} <= set(record["metrics"])
        assert record["provenance"]["config_hash"] and record["flops"]["sample_flops_per_sample"] > 0
    assert (root / "report" / "table.md").is_file() and (root / "report" / "figure.png").is_file()


def test_compute_suites_run_and_draw_measured_axes(tmp_path):
    """Fig. 9 and 10 plot one measured quantity against another (x is a metric of the same record)."""
    from elit_bench.cli import main

    for suite in ("fig9-latency", "fig10-flops", "table4-mmdit-flops"):
        assert main(["run", suite, "--scale", "smoke", "--out", str(tmp_path), "--no-progress"]) == 0
        report = tmp_path / suite / "smoke" / "report"
        assert (report / "table.md").is_file()
    for suite in ("fig9-latency", "fig10-flops"):
        assert (tmp_path / suite / "smoke" / "report" / "figure.png").stat().st_size > 1000
