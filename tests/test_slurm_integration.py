"""The slurm launcher on a real SLURM cluster: the quickstart smoke suite runs as one job array (a job per run),
and a run of 2 tasks (CPU, gloo DDP) equals the same run in one process.

Needs a cluster the tests can submit to; `scripts/slurm_local.sh` brings up a single-node one on
this machine (Debian, root or sudo). Enabled with ELIT_BENCH_SLURM=1, as in CI.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from elit_bench.suites.options import parse_sets
from elit_bench.suites.runner import DONE, RECORDS, run_dir
from elit_bench.suites.spec import load_suite

pytestmark = pytest.mark.skipif(
    os.environ.get("ELIT_BENCH_SLURM") != "1",
    reason="needs a SLURM cluster: bash scripts/slurm_local.sh && ELIT_BENCH_SLURM=1 pytest tests/test_slurm_integration.py")

# a few steps of everything: the test is about the jobs, not the numbers
SETS = ["train.steps=5", "metrics.num_samples=16", "sample.steps=2"]
TIMEOUT_S = 540
SUBMITTED = re.compile(r"submitted (\S+) as SLURM job (\S+)")


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    """`elit-bench run quickstart --scale smoke --launcher slurm` -> (out dir, completed process, {run id: job id})."""
    if shutil.which("sbatch") is None:
        pytest.fail("ELIT_BENCH_SLURM=1 but sbatch is not on PATH: run bash scripts/slurm_local.sh first")
    out = tmp_path_factory.mktemp("slurm-suite")
    cmd = [sys.executable, "-m", "elit_bench.cli", "run", "quickstart", "--scale", "smoke", "--out", str(out),
           "--launcher", "slurm", "--timeout-min", "10", "--no-progress"]
    for item in SETS:
        cmd += ["--set", item]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        # leave no jobs of ours behind in the queue
        stdout = "".join(s.decode() if isinstance(s, bytes) else s or "" for s in (exc.stdout, exc.stderr))
        job_ids = [job for _, job in SUBMITTED.findall(stdout)]
        if job_ids:
            subprocess.run(["scancel", *job_ids], check=False)
        queue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
        pytest.fail(f"the suite did not finish in {TIMEOUT_S}s; jobs {job_ids}; squeue:\n{queue}\nstdout:\n{stdout}")
    return out, proc, {run: job for run, job in SUBMITTED.findall(proc.stderr)}


def expected_runs():
    overrides, variables = parse_sets(SETS)
    return load_suite("quickstart").runs("smoke", overrides, variables)


def test_smoke_suite_completes_through_slurm(suite_run):
    """Exit 0, every run marked DONE for all its evaluations, one JSON record per evaluation."""
    out, proc, _ = suite_run
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    runs = expected_runs()
    assert len(runs) == 2
    for run in runs:
        rdir = run_dir(out, run)
        done = json.loads((rdir / DONE).read_text())
        assert sorted(done["evals"]) == sorted(e.id for e in run.evals)
        for ev in run.evals:
            record = json.loads((rdir / RECORDS / f"{ev.id}.json").read_text())
            assert isinstance(record, dict) and record


def test_each_run_was_a_completed_slurm_job(suite_run):
    """One job per run, all in one array, run by submitit on the cluster and COMPLETED according to the controller."""
    out, proc, jobs = suite_run
    assert sorted(jobs) == sorted(run.id for run in expected_runs()), proc.stderr
    assert len(set(jobs.values())) == len(jobs)
    assert len({job.split("_")[0] for job in jobs.values()}) == 1  # one array
    for job in jobs.values():
        log = (out / "slurm-logs" / f"{job}_0_log.out").read_text()
        assert f"JobEnvironment(job_id={job}," in log, log
        assert "Job completed successfully" in log, log
        info = finished_job(job)
        assert "JobState=COMPLETED" in info and "ExitCode=0:0" in info, info


# tiny ELIT, multi-budget with random dropping and class dropout (as tests/test_training_ddp.py)
DDP_SUITE = """name: ddp
base:
  train: {model: ELIT-DiT-S/2, data: digits, resolution: 8, batch: 8, steps: 5, multi_budget: true, lr: 1.0e-3,
          warmup: 1, ema_decay: 0.9, log_every: 1,
          model_kwargs: {hidden_size: 32, depth: 3, num_heads: 2, group_size: 2, drop: random}}
  sample: {steps: 2, batch: 4}
  metrics: {names: [digits_fd, digits_acc], num_samples: 8, real: digits}
runs:
  - {label: ELIT}
scales: {smoke: {}}
"""


def finished_job(job: str, wait_s: int = 120) -> str:
    """`scontrol show job` once the job has left RUNNING (its results are written before its processes exit)."""
    deadline = time.time() + wait_s
    while True:
        info = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=True).stdout
        if not re.search(r"JobState=(PENDING|RUNNING|COMPLETING)", info) or time.time() > deadline:
            return info
        time.sleep(1)


def run_suite_file(path, out, *launcher):
    cmd = [sys.executable, "-m", "elit_bench.cli", "run", str(path), "--out", str(out), "--no-progress", *launcher]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def test_two_task_job_equals_one_process(tmp_path):
    """`--tasks-per-node 2`: one SLURM job of 2 processes joined by submitit's TorchDistributedEnvironment (gloo)
    trains, samples and scores exactly what one local process does."""
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from elit_bench.checkpoint import load_checkpoint

    path = tmp_path / "ddp.yaml"
    path.write_text(DDP_SUITE)
    run_suite_file(path, tmp_path / "local")
    proc = run_suite_file(path, tmp_path / "slurm", "--launcher", "slurm", "--tasks-per-node", "2", "--cpus", "1",
                          "--timeout-min", "10")
    (job,) = [job for _, job in SUBMITTED.findall(proc.stderr)]
    info = finished_job(job)
    assert "NumTasks=2" in info and "JobState=COMPLETED" in info, info
    run = load_suite(str(path)).runs("smoke")[0]
    one, two = run_dir(tmp_path / "local", run), run_dir(tmp_path / "slurm", run)
    ev = run.evals[0]
    assert json.loads(next((two / "evals" / ev.id).glob("step-5/samples.json")).read_text())["world_size"] == 2
    a, b = load_checkpoint(one / "train/checkpoints/last.pt"), load_checkpoint(two / "train/checkpoints/last.pt")
    assert a["data_position"] == b["data_position"] and a["step"] == b["step"] == 5
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    losses = []
    for rdir in (one, two):
        events = EventAccumulator(str(rdir / "train/tb"))
        events.Reload()
        losses.append([e.value for e in events.Scalars("train/loss")])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4, abs=1e-6)
    ra, rb = (json.loads((rdir / RECORDS / f"{ev.id}.json").read_text()) for rdir in (one, two))
    assert rb["metrics"] == pytest.approx(ra["metrics"], rel=1e-3, abs=1e-4)
