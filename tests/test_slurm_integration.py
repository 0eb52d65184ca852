"""The slurm launcher on a real SLURM cluster: the quickstart smoke suite runs as one job per run.

Needs a cluster the tests can submit to; `scripts/slurm_local.sh` brings up a single-node one on
this machine (Debian, root or sudo). Enabled with ELIT_BENCH_SLURM=1, as in CI.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from elit_bench.suites.cli import parse_sets
from elit_bench.suites.runner import DONE, RECORDS, run_dir
from elit_bench.suites.spec import load_suite

pytestmark = pytest.mark.skipif(
    os.environ.get("ELIT_BENCH_SLURM") != "1",
    reason="needs a SLURM cluster: bash scripts/slurm_local.sh && ELIT_BENCH_SLURM=1 pytest tests/test_slurm_integration.py")

# a few steps of everything: the test is about the jobs, not the numbers
SETS = ["train.steps=5", "metrics.num_samples=16", "sample.steps=2"]
TIMEOUT_S = 540
SUBMITTED = re.compile(r"submitted (\S+) as SLURM job (\d+)")


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
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        job_ids = [job for _, job in SUBMITTED.findall(stdout)]
        if job_ids:
            subprocess.run(["scancel", *job_ids], check=False)
        queue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
        pytest.fail(f"the suite did not finish in {TIMEOUT_S}s; jobs {job_ids}; squeue:\n{queue}\nstdout:\n{stdout}")
    return out, proc, {run: job for run, job in SUBMITTED.findall(proc.stdout)}


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
    """One job per run, run by submitit on the cluster and COMPLETED according to the controller."""
    out, proc, jobs = suite_run
    assert sorted(jobs) == sorted(run.id for run in expected_runs()), proc.stdout
    assert len(set(jobs.values())) == len(jobs)
    for job in jobs.values():
        log = (out / "slurm-logs" / f"{job}_0_log.out").read_text()
        assert f"JobEnvironment(job_id={job}," in log, log
        assert "Job completed successfully" in log, log
        info = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=True)
        assert "JobState=COMPLETED" in info.stdout and "ExitCode=0:0" in info.stdout, info.stdout
