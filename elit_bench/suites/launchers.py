"""Launchers behind one interface: `run(runs, out, progress) -> [(run, error), ...]`.

- local: every run in this process, one after the other.
- torchrun: each run in `torch.distributed.run` over N processes (GPUs) per node, one run at a time;
  `--nodes M` with a rendezvous endpoint spans M nodes (start the same command on each).
- slurm: the suite's runs as one submitit job array; each job has `tasks_per_node` processes (one per
  GPU) on `nodes` nodes, joined into one DDP group by submitit's `TorchDistributedEnvironment`. A job
  preempted or out of time is requeued and resumes from its checkpoint (the run itself is resumable).
The same suite file runs under any of them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from elit_bench import distributed
from elit_bench.errors import UserError, choices_error
from elit_bench.suites.runner import describe_failure, execute_run
from elit_bench.suites.spec import RunSpec

log = logging.getLogger(__name__)

LAUNCHERS = ("local", "torchrun", "slurm")


def spec_to_json(run: RunSpec) -> str:
    return run.to_json()


def spec_from_json(text: str) -> RunSpec:
    return RunSpec.from_json(text)


class LocalLauncher:
    name = "local"

    def run(self, runs, out, progress=True):
        failures = []
        for i, run in enumerate(runs):
            log.info("[%d/%d] %s", i + 1, len(runs), run.id)
            try:
                execute_run(run, out, progress)
            except Exception as exc:  # one failing run does not stop the others
                failures.append((run, describe_failure(exc)))
        return failures


class TorchrunLauncher:
    """One run at a time over `nproc` processes per node (DDP training, sharded sampling and metrics)."""

    name = "torchrun"

    def __init__(self, nproc: int | None = None, nodes: int = 1, rdzv_endpoint: str | None = None):
        import torch

        if nodes > 1 and not rdzv_endpoint:
            raise UserError("--nodes > 1 with torchrun needs --rdzv-endpoint HOST:PORT, a host every node reaches; "
                            "then start the same command on every node")
        self.nproc = nproc or max(1, torch.cuda.device_count())
        self.nodes, self.rdzv_endpoint = nodes, rdzv_endpoint

    def command(self, run: RunSpec, spec_file: str, out, progress: bool) -> list[str]:
        if self.nodes == 1:
            rendezvous = ["--standalone"]
        else:  # every node runs the suite's runs in the same order and meets the others under the run's id
            rendezvous = [f"--nnodes={self.nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={self.rdzv_endpoint}",
                          f"--rdzv-id={run.id}"]
        return [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--nproc_per_node={self.nproc}",
                "-m", "elit_bench.suites.worker", spec_file, str(out)] + ([] if progress else ["--no-progress"])

    def run(self, runs, out, progress=True):
        failures = []
        for run in runs:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                f.write(spec_to_json(run))
            cmd = self.command(run, f.name, out, progress)
            log.debug("%s", " ".join(cmd))
            result = subprocess.run(cmd)
            os.unlink(f.name)
            if result.returncode:
                failures.append((run, f"torchrun exited with status {result.returncode}"))
        return failures


class SlurmLauncher:
    """The runs as one submitit job array: `tasks_per_node` x `nodes` processes per job; requeued on preemption."""

    name = "slurm"

    def __init__(self, partition: str | None = None, gpus: int = 0, tasks_per_node: int | None = None,
                 nodes: int = 1, timeout_min: int = 60, cpus: int = 2, folder: str | None = None, wait: bool = True):
        tasks = tasks_per_node or max(gpus, 1)
        if gpus and tasks != gpus:
            raise UserError(f"--tasks-per-node {tasks} with --gpus {gpus}: the slurm launcher runs one process per "
                            "GPU; drop --tasks-per-node")
        self.options = {"slurm_partition": partition, "gpus_per_node": gpus or None, "tasks_per_node": tasks,
                        "nodes": nodes, "timeout_min": timeout_min, "cpus_per_task": cpus,
                        "slurm_additional_parameters": {"requeue": True}}
        self.folder, self.wait = folder, wait

    def run(self, runs, out, progress=True):
        import submitit

        if not runs:
            return []
        executor = submitit.AutoExecutor(folder=self.folder or Path(out) / "slurm-logs", cluster="slurm")
        options = {k: v for k, v in self.options.items() if v is not None}
        executor.update_parameters(**options)
        # fine-tuning and distillation wait for the runs they start from, where those are in this submission
        ids = {run.id for run in runs}
        starts = {run.id: [i for i in getattr(run, "starts", []) if i in ids] for run in runs}
        first = [run for run in runs if not starts[run.id]]
        with executor.batch():  # one job array for the runs that start from nothing in this submission
            jobs = [(run, executor.submit(SlurmJob(spec_to_json(run), str(out), progress))) for run in first]
        submitted = {run.id: job for run, job in jobs}
        for run in (r for r in runs if r.id not in submitted):  # listed after the run they start from
            after = ":".join(submitted[i].job_id for i in starts[run.id])
            extra = {**options["slurm_additional_parameters"], "dependency": f"afterok:{after}"}
            executor.update_parameters(slurm_additional_parameters=extra)
            submitted[run.id] = executor.submit(SlurmJob(spec_to_json(run), str(out), progress))
            jobs.append((run, submitted[run.id]))
        executor.update_parameters(slurm_additional_parameters=options["slurm_additional_parameters"])
        for run, job in jobs:
            log.info("submitted %s as SLURM job %s", run.id, job.job_id)
        if not self.wait:
            return []
        failures = []
        for run, job in jobs:
            try:
                job.results()  # every task's, so a failure on any rank counts
            except Exception as exc:
                failures.append((run, describe_failure(exc)))
        return failures


class SlurmJob:
    """A picklable job: runs one run on every task; on preemption or timeout submitit requeues the same call."""

    def __init__(self, spec: str, out: str, progress: bool):
        self.spec, self.out, self.progress = spec, out, progress

    def __call__(self):
        import submitit

        env = submitit.helpers.TorchDistributedEnvironment()
        if env.world_size > 1:  # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT for torch.distributed (env://)
            env.export(set_cuda_visible_devices=False, overwrite=True)
        with distributed.job():  # one process group for the whole run, destroyed when it ends
            return str(execute_run(spec_from_json(self.spec), self.out, self.progress and env.rank == 0))

    def checkpoint(self, *args, **kwargs):
        import submitit

        # the run resumes from its own checkpoints, so requeueing the same call is enough
        return submitit.helpers.DelayedSubmission(self)


def make_launcher(name: str, nproc: int | None = None, nodes: int = 1, rdzv_endpoint: str | None = None,
                  partition: str | None = None, gpus: int = 0, tasks_per_node: int | None = None,
                  timeout_min: int = 60, cpus: int = 2):
    if name not in LAUNCHERS:
        raise choices_error("launcher", name, LAUNCHERS)
    if name == "local":
        return LocalLauncher()
    if name == "torchrun":
        return TorchrunLauncher(nproc, nodes, rdzv_endpoint)
    try:
        import submitit  # noqa: F401
    except ImportError as exc:
        raise UserError("the slurm launcher needs submitit: pip install submitit") from exc
    return SlurmLauncher(partition, gpus, tasks_per_node, nodes, timeout_min, cpus)
