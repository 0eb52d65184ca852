"""Compute-quality trade-offs: rho efficiency (paper App. C, Table 6) and Pareto frontiers."""

from __future__ import annotations

import math

import numpy as np

from elit_bench.errors import UserError


def rho(metric_high: float, metric_low: float, flops_high: float, flops_low: float, higher_is_better: bool = False) -> float:
    """Degradation per unit of compute saved, between a high- and a low-compute variant.

    rho = (metric ratio) / (FLOPs ratio), metric ratio = M_low / M_high when
    lower is better (FID, FDD) and M_high / M_low when higher is better (IS),
    FLOPs ratio = F_high / F_low. A variant against itself gives 1; lower rho
    means quality degrades less than compute shrinks.
    """
    values = (metric_high, metric_low, flops_high, flops_low)
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise UserError(f"rho needs positive finite metrics and FLOPs, got {values}")
    if flops_low > flops_high:
        raise UserError(f"rho compares a high-compute variant with a cheaper one: flops_high {flops_high} < flops_low {flops_low}")
    metric_ratio = metric_high / metric_low if higher_is_better else metric_low / metric_high
    return metric_ratio / (flops_high / flops_low)


def pareto_frontier(flops, values, higher_is_better: bool = False, separated=None) -> np.ndarray:
    """Indices of the compute-quality Pareto set, ordered by FLOPs (then input order).

    flops, values: (N,). A point is on the frontier unless another point has at
    most its FLOPs and at least its quality, and is strictly better in one of
    the two. Ties stay: identical points are all kept; a point with equal
    quality and more FLOPs (or equal FLOPs and worse quality) is dropped.

    separated(j, i) -> bool, for values that are estimates: whether j's
    advantage over i is resolved (the 95% interval of their difference
    excludes 0 in j's favour). Then i is dominated only by a j with at most
    its FLOPs, a better value and `separated(j, i)`; a point no cheaper point
    is separated from stays on the frontier ("not separated"). It is asked
    only about such pairs, the best j first.
    """
    flops, values = np.asarray(flops, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if flops.ndim != 1 or flops.shape != values.shape:
        raise UserError(f"pareto_frontier needs two 1-d sequences of one length, got {flops.shape} and {values.shape}")
    if not (np.isfinite(flops).all() and np.isfinite(values).all()):
        raise UserError("pareto_frontier needs finite FLOPs and metric values")
    quality = values if higher_is_better else -values
    if separated is not None:
        by_quality = np.argsort(-quality, kind="stable")  # the best candidate first: most points fall to it
        keep = [i for i in range(len(flops))
                if not any(flops[j] <= flops[i] and quality[j] > quality[i] and separated(int(j), i)
                           for j in by_quality)]
        keep = np.asarray(keep, dtype=np.int64)
        return keep[np.lexsort((keep, flops[keep]))]
    # sweep by FLOPs ascending, best quality first among equal FLOPs: every earlier point has <= FLOPs
    order = np.lexsort((np.arange(len(flops)), -quality, flops))
    keep = []
    best, best_flops = -np.inf, np.inf  # best quality so far and the least FLOPs reaching it
    for i in order:
        dominated = quality[i] < best or (quality[i] == best and best_flops < flops[i])
        if not dominated:
            keep.append(i)
        if quality[i] > best:
            best, best_flops = quality[i], flops[i]
    return np.asarray(keep, dtype=np.int64)
