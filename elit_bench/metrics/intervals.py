"""95% intervals of quality metrics, each with the method that made it (docs/intervals.md says why).

An interval is a plain dict, as records store it::

    {"low": ..., "high": ..., "level": 0.95, "method": "bootstrap-basic", "replicates": [...], ...}

- Frechet distances (FID, FDD, FVD, digits FD): a bootstrap over the generated
  set with the reference statistics fixed; the *basic* interval
  (2 d - q_hi, 2 d - q_lo), because the plug-in distance is biased upward by
  about Tr(sigma) / N and the percentile interval would carry that bias twice.
  It targets the distance between the generator's distribution and the
  reference statistics, so it lies below the conventional value by about the
  bootstrap's bias estimate, which is recorded as ``bias``.
- Inception Score: a Student t interval over its disjoint splits (the split
  scores are the replicates); the conventional ``is_std`` is their spread,
  not an interval.
- Proportions (class accuracy, precision, recall): Wilson score intervals.
- KID: the subset mean +- z times the subset std (one subset's spread,
  wider than the mean's, since the subsets overlap).
- Means over training seeds (tables): a Student t interval.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats as scipy_stats

from elit_bench.errors import UserError
from elit_bench.metrics.frechet import psd_sqrt, trace_sqrt_product
from elit_bench.metrics.stats import FeatureStats

LEVEL = 0.95
BOOTSTRAP_REPLICATES = 200  # enough for 95% basic intervals at about nominal coverage (tests/test_intervals.py)
BOOTSTRAP_SEED = 0
REPLICATE_DIGITS = 6  # significant digits of stored replicates: records stay small


def _rounded(values) -> list[float]:
    return [float(f"{v:.{REPLICATE_DIGITS}g}") for v in np.asarray(values, dtype=np.float64).tolist()]


def make_interval(low: float, high: float, method: str, level: float = LEVEL, replicates=None, **extra) -> dict:
    """The record form of an interval; `replicates` (per-replicate values) are stored rounded."""
    out = {"low": float(low), "high": float(high), "level": level, "method": method, **extra}
    if replicates is not None:
        out["replicates"] = _rounded(replicates)
    return out


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise UserError(f"interval level must be in (0, 1), got {level}")
    return level


def frechet_bootstrap(
    features,
    reference: FeatureStats,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
    device: str | torch.device = "cpu",
) -> dict:
    """Basic bootstrap interval of the Frechet distance of `features` (N, D) to fixed `reference` statistics.

    Each replicate draws N rows with replacement (torch generator seeded with
    `seed`) and recomputes the distance as `frechet.frechet_distance` does,
    with R^1/2 of the fixed reference computed once: one weighted covariance
    and one symmetric eigenvalue problem per replicate, in float64 on `device`.
    """
    _check_level(level)
    if replicates < 2:
        raise UserError(f"a bootstrap needs at least 2 replicates, got {replicates}")
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64, device=device)
    n, dim = x.shape
    if n < 2 or dim != reference.dim:
        raise UserError(f"bootstrap of a Frechet distance needs features (N >= 2, {reference.dim}), got {tuple(x.shape)}")
    mean = x.mean(0)
    centred = x - mean
    ref_mean = torch.as_tensor(reference.mu, dtype=torch.float64, device=device)
    ref_sigma = torch.as_tensor(reference.sigma, dtype=torch.float64, device=device)
    ref_root, ref_trace = psd_sqrt(ref_sigma), torch.trace(ref_sigma)

    def distance(weights: torch.Tensor) -> float:
        # weights: how often each row is drawn (sum N); statistics of the weighted rows without copying them
        shift = weights @ centred / n
        sigma = ((centred.T * weights) @ centred - n * torch.outer(shift, shift)) / (n - 1)
        diff = mean + shift - ref_mean
        return float(diff @ diff + torch.trace(sigma) + ref_trace - 2 * trace_sqrt_product(ref_root, sigma))

    point = distance(torch.ones(n, dtype=torch.float64, device=device))
    generator = torch.Generator().manual_seed(seed)
    draws = np.array([
        distance(torch.bincount(torch.randint(n, (n,), generator=generator), minlength=n).to(x))
        for _ in range(replicates)
    ])
    alpha = 1 - level
    q_low, q_high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    # basic interval: the replicates' spread around the point, reflected; a distance is never negative
    return make_interval(max(0.0, 2 * point - q_high), 2 * point - q_low, "bootstrap-basic", level, draws,
                         bias=float(draws.mean() - point), seed=seed)


def wilson(proportion: float, n: int, level: float = LEVEL, what: str = "samples") -> dict:
    """Wilson score interval of a proportion observed over `n` independent units."""
    _check_level(level)
    if n < 1 or not 0 <= proportion <= 1:
        raise UserError(f"a Wilson interval needs a proportion in [0, 1] over n >= 1, got {proportion} over {n}")
    z = scipy_stats.norm.ppf(1 - (1 - level) / 2)
    centre = (proportion + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(proportion * (1 - proportion) / n + z * z / (4 * n * n))
    # the interval always holds the proportion; min / max only undo round-off (p = 1 gave 0.9999999999999999)
    low, high = min(proportion, max(0.0, centre - half)), max(proportion, min(1.0, centre + half))
    return make_interval(low, high, "wilson", level, n=int(n), units=what)


def t_bounds(values, level: float = LEVEL) -> tuple[float, float]:
    """Student t interval of the mean of independent values (mean +- t * sd / sqrt(k)); k >= 2."""
    _check_level(level)
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        raise UserError(f"a t interval needs at least 2 values, got {len(values)}")
    half = scipy_stats.t.ppf(1 - (1 - level) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def t_interval(values, method: str, level: float = LEVEL) -> dict:
    """`t_bounds` in record form, the values kept as replicates."""
    low, high = t_bounds(values, level)
    return make_interval(low, high, method, level, values)


def normal_interval(mean: float, sd: float, method: str, level: float = LEVEL) -> dict:
    z = scipy_stats.norm.ppf(1 - (1 - _check_level(level)) / 2)
    return make_interval(mean - z * sd, mean + z * sd, method, level)
