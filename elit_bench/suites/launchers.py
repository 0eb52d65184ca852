"""Launchers behind one interface: `run(runs, out, progress) -> [(run, error), ...]`.

- local: every run in this process, one after the other.
- torchrun: each run in `torch.distributed.run` over N processes (GPUs), one run at a time.
- slurm: one submitit job per run; a job preempted or out of time is requeued
  and resumes from its checkpoint (the run itself is resumable).
The same suite file runs under any of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from elit_bench.errors import UserError, choices_error
from elit_bench.suites.runner import describe_failure, execute_run
from elit_bench.suites.spec import EvalSpec, RunSpec

LAUNCHERS = ("local", "torchrun", "slurm")


def spec_to_json(run: RunSpec) -> str:
    return json.dumps(asdict(run))


def spec_from_json(text: str) -> RunSpec:
    raw = json.loads(text)
    raw["evals"] = [EvalSpec(**e) for e in raw["evals"]]
    return RunSpec(**raw)


class LocalLauncher:
    name = "local"

    def run(self, runs, out, progress=True):
        failures = []
        for i, run in enumerate(runs):
            print(f"[{i + 1}/{len(runs)}] {run.id}", flush=True)
            try:
                execute_run(run, out, progress)
            except Exception as exc:  # one failing run does not stop the others
                failures.append((run, describe_failure(exc)))
        return failures


class TorchrunLauncher:
    """One run at a time over `nproc` processes on this node (DDP training, sharded sampling and metrics)."""

    name = "torchrun"

    def __init__(self, nproc: int | None = None):
        import torch

        self.nproc = nproc or max(1, torch.cuda.device_count())

    def run(self, runs, out, progress=True):
        failures = []
        for run in runs:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                f.write(spec_to_json(run))
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}",
                   "-m", "elit_bench.suites.worker", f.name, str(out)] + ([] if progress else ["--no-progress"])
            result = subprocess.run(cmd)
            os.unlink(f.name)
            if result.returncode:
                failures.append((run, f"torchrun exited with status {result.returncode}"))
        return failures


class SlurmLauncher:
    """One SLURM job per run through submitit; requeued on preemption or timeout."""

    name = "slurm"

    def __init__(self, partition: str | None = None, gpus: int = 0, timeout_min: int = 60, cpus: int = 2,
                 folder: str | None = None, wait: bool = True):
        self.options = {"slurm_partition": partition, "gpus_per_node": gpus or None, "timeout_min": timeout_min,
                        "cpus_per_task": cpus, "slurm_additional_parameters": {"requeue": True}}
        self.folder, self.wait = folder, wait

    def run(self, runs, out, progress=True):
        import submitit

        executor = submitit.AutoExecutor(folder=self.folder or Path(out) / "slurm-logs", cluster="slurm")
        executor.update_parameters(**{k: v for k, v in self.options.items() if v is not None})
        jobs = [(run, executor.submit(SlurmJob(spec_to_json(run), str(out), progress))) for run in runs]
        for run, job in jobs:
            print(f"submitted {run.id} as SLURM job {job.job_id}", flush=True)
        if not self.wait:
            return []
        failures = []
        for run, job in jobs:
            try:
                job.result()
            except Exception as exc:
                failures.append((run, describe_failure(exc)))
        return failures


class SlurmJob:
    """A picklable job: runs one run; on preemption or timeout submitit requeues the same call."""

    def __init__(self, spec: str, out: str, progress: bool):
        self.spec, self.out, self.progress = spec, out, progress

    def __call__(self):
        return str(execute_run(spec_from_json(self.spec), self.out, self.progress))

    def checkpoint(self, *args, **kwargs):
        import submitit

        # the run resumes from its own checkpoints, so requeueing the same call is enough
        return submitit.helpers.DelayedSubmission(self)


def make_launcher(name: str, **options):
    if name not in LAUNCHERS:
        raise choices_error("launcher", name, LAUNCHERS)
    if name == "local":
        return LocalLauncher()
    if name == "torchrun":
        return TorchrunLauncher(options.get("nproc"))
    try:
        import submitit  # noqa: F401
    except ImportError as exc:
        raise UserError("the slurm launcher needs submitit: pip install submitit") from exc
    return SlurmLauncher(options.get("partition"), options.get("gpus", 0), options.get("timeout_min", 60),
                         options.get("cpus", 2))
