"""One process group per job: joined once where the job starts, reused by every phase, destroyed at exit.

Under `torchrun` or a SLURM job of several tasks (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT in the environment) every process runs the same
job: training (DDP), sampling and feature extraction (sharded), each phase
after the other. The group is created by the first `join()` and every later
`join()` returns the live one: re-creating it per phase fails when ranks
arrive at different times (gloo refuses the connection of a late rank), and
at scale they always do (each rank loads a large checkpoint first). The job's
entry (`elit-bench train/sample/metrics`, the suite worker, the SLURM job)
wraps its work in `job()`, which destroys the group once at exit.

Collectives wait up to ELIT_BENCH_DIST_TIMEOUT_S seconds (default 30 min):
long enough for rank 0 to write a checkpoint or merge a large sample set
while the other ranks wait. One process (no torchrun) has no group: rank 0
of 1, and every helper here is a no-op.

This module imports only torch and the standard library (and the
dependency-free `elit_bench.errors`), so every layer may use it.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from elit_bench.errors import UserError

TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "ELIT_BENCH_DIST_TIMEOUT_S", 1800.0
# tests only: "RANK:SECONDS" makes that rank arrive SECONDS late at every join (each phase's start)
SKEW_ENV = "ELIT_BENCH_TEST_SKEW_S"

_created = False  # this process created the live group, so it destroys it


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank of world, and the device it computes on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Average of a tensor over ranks (a new tensor)."""
        if self.world == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (a picklable value: a hash, a decision)."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def timeout() -> datetime.timedelta:
    """How long a collective waits for the slowest rank (ELIT_BENCH_DIST_TIMEOUT_S, default 30 min)."""
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise UserError(f"{TIMEOUT_ENV}={raw!r}: give the collective timeout in seconds, a positive number "
                        f"(default {DEFAULT_TIMEOUT_S:g})")
    return datetime.timedelta(seconds=seconds)


def local_device(device: str | torch.device | None = None) -> torch.device:
    """This rank's device: `device` as given, a bare "cuda" made cuda:LOCAL_RANK; None: cuda:LOCAL_RANK when CUDA
    is available, else cpu."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the live group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _arrive_late() -> None:
    """The test hook of SKEW_ENV: the named rank sleeps before joining, as a rank busy loading would."""
    spec = os.environ.get(SKEW_ENV)
    if not spec:
        return
    late, seconds = spec.split(":")
    if int(os.environ.get("RANK", "0")) == int(late):
        print(f"{SKEW_ENV}: rank {late} arrives {seconds} s late", file=sys.stderr, flush=True)
        time.sleep(float(seconds))


def join(device: str | torch.device | None = None) -> Dist:
    """Join the group torchrun / SLURM describe (once per job; later calls reuse it) -> this process's `Dist`.

    device: this rank's device (`local_device`); the first join picks the backend from it: nccl for CUDA,
    gloo otherwise.
    """
    global _created
    _arrive_late()
    dev = local_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        cuda = dev.type == "cuda"
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout(),
                                device_id=dev if cuda else None)
        _created = True
        atexit.register(leave)  # a library caller that never calls leave() still destroys it once
    rank, world = rank_and_world()
    return Dist(rank, world, int(os.environ.get("LOCAL_RANK", "0")), dev)


def leave() -> None:
    """Destroy the group this process created (no-op otherwise, and on a second call)."""
    global _created
    if _created and dist.is_initialized():
        dist.destroy_process_group()
    _created = False


@contextlib.contextmanager
def job(device: str | torch.device | None = None):
    """A job's whole life in the group: `with job() as d: ...` joins on entry and destroys the group on exit."""
    try:
        yield join(device)
    finally:
        leave()


def shard_range(num: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous shard of `num` items; shards differ in size by at most one."""
    base, extra = divmod(num, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def gather_rows(local, counts: list[int]):
    """Every rank's rows concatenated in rank order, as a float64 numpy array (sum(counts), D).

    local: this rank's rows (counts[rank], D), array-like; counts: rows of every rank, each at least 1.
    Without a group this returns `local` as float64.
    """
    local = torch.as_tensor(local, dtype=torch.float64)
    _, world = rank_and_world()
    if world == 1:
        return local.numpy()
    # all_gather needs equal shapes: pad every shard to the largest, then trim
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros(max(counts), local.shape[1], dtype=torch.float64, device=device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts)]).cpu().numpy()
