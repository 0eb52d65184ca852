"""Feature extraction over several processes (``torchrun``).

Each rank extracts a contiguous shard of the samples; the shards are gathered
in float64 to every rank in sample order, so features, statistics and metrics
are identical to a single-process run and on all ranks.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> torch.device:
    """Join the process group ``torchrun`` describes (if any); returns this rank's device.

    Uses NCCL with one GPU per local rank when CUDA is available, gloo on CPUs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def shard_range(num: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous shard of `num` items; shards differ in size by at most one."""
    base, extra = divmod(num, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def gather_rows(local: np.ndarray, counts: list[int]) -> np.ndarray:
    """Concatenate every rank's rows in rank order, as float64 (sum(counts), D).

    local: this rank's rows (counts[rank], D); counts: rows of every rank, each at least 1.
    Without a process group this returns `local` as float64.
    """
    local = np.asarray(local, dtype=np.float64)
    rank, world = rank_and_world()
    if world == 1:
        return local
    # all_gather needs equal shapes: pad every shard to the largest, then trim
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros(max(counts), local.shape[1], dtype=torch.float64, device=device)
    padded[: len(local)] = torch.from_numpy(local)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return np.concatenate([p[:n].cpu().numpy() for p, n in zip(parts, counts)])
