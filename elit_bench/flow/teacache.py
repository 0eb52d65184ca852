"""TeaCache with the timestep-embedding criterion (paper App. A, Fig. 8; docs/conventions.md#sampling).

Every evaluation of the model runs `embed -> trunk -> unembed`. TeaCache may
skip the trunk (all transformer blocks) and add the trunk residual
(trunk output - trunk input) saved at the last evaluation that ran it.

When to skip: the relative L1 change of the timestep embedding between
consecutive evaluations,

    d_k = mean|e(t_k) - e(t_{k-1})| / mean|e(t_{k-1})|,

is accumulated; evaluation k is skipped while the accumulated change stays
below the threshold, and computed (resetting the sum to 0) once it reaches
it. The first and the last evaluation are always computed, as in TeaCache.
The paper uses this criterion rather than the modulated-input one, and no
rescaling polynomial, so neither do we. Because the criterion depends on the
time grid only, the skip decisions are made once per sample set, before
sampling (`skip_plan`): every sample and every batch takes the same path,
and the FLOPs of a set are known in advance.

With Heun, consecutive evaluations can share a time (the corrector at
t_{k+1}, then the next predictor at t_{k+1}): d = 0 there, so the second one
reuses the first one's residual.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch

from elit_bench.errors import UserError


def check_threshold(threshold: float | None) -> None:
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise UserError(f"TeaCache threshold {threshold!r} must be a number >= 0 (e.g. 0.1; larger skips more steps)")


@torch.no_grad()
def embedding_changes(t_embedder: torch.nn.Module, times: Sequence[float]) -> list[float]:
    """Relative L1 change of the timestep embedding from each evaluation to the next (len(times) - 1 values).

    Computed in float64 on a CPU copy of the embedder, so the decisions do not
    depend on the device or the batch.
    """
    embedder = copy.deepcopy(t_embedder).to(device="cpu", dtype=torch.float64)
    emb = embedder(torch.tensor(list(times), dtype=torch.float64))
    prev, cur = emb[:-1], emb[1:]
    return ((cur - prev).abs().mean(dim=1) / prev.abs().mean(dim=1)).tolist()


def skip_plan(t_embedder: torch.nn.Module, times: Sequence[float], threshold: float | None) -> list[bool]:
    """For each evaluation time, True where the trunk is skipped (threshold None: never)."""
    check_threshold(threshold)
    skips = [False] * len(times)
    if threshold is None or len(times) < 3:
        return skips
    accumulated = 0.0
    for k, change in enumerate(embedding_changes(t_embedder, times)[:-1], start=1):
        accumulated += change
        if accumulated < threshold:
            skips[k] = True
        else:
            accumulated = 0.0
    return skips


def cached_forward(model, x, t, y, budget=None, residual=None, keep_residual=False, generator=None,
                   patch_size=None):
    """One model evaluation in phases -> (velocity like x, trunk residual or None).

    x (B, C, *S), t (B,), y (B,). With `residual` (B, L, d) the trunk is
    skipped and the residual added to the embedded tokens; otherwise the trunk
    runs and, if `keep_residual`, its residual is returned for later reuse.
    Without skipping this computes exactly `model(x, t, y, budget, patch_size, generator)`, through the
    same (possibly compiled) `compute`.
    """
    plan = model.plan(x, budget, patch_size, generator)
    return model.compute(x, t, y, plan, residual, keep_residual)
