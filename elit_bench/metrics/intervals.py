"""95% intervals of quality metrics, each with the method that made it (docs/intervals.md says why).

An interval is a plain dict, as records store it::

    {"low": ..., "high": ..., "level": 0.95, "method": "bootstrap-both-sides", "replicates": [...], ...}

- Frechet distances (FID, FDD, FVD, digits FD): the plug-in value at N (the
  protocol's number) is biased upward by about (Tr sigma_g + Tr sigma_r) / N,
  so records add a *debiased* estimate of the population distance
  (`frechet_bootstrap`): a bootstrap that resamples both sides (where the
  reference has per-sample features; with stored reference statistics only
  the generated side, labelled so), estimate 2 d - median(replicates) and the
  basic interval (2 d - q_hi, 2 d - q_lo), which holds the estimate by
  construction.
- Inception Score: a Student t interval over its disjoint splits (the split
  scores are the replicates); the conventional ``is_std`` is their spread,
  not an interval.
- Proportions (class accuracy, precision, recall): Wilson score intervals.
- KID: the subset mean +- z times the subset std (one subset's spread,
  wider than the mean's, since the subsets overlap).
- Means over training seeds (tables): a Student t interval.
- A cell over seeds and the difference of two cells, from per-sample values: `paired.py` (hierarchical and
  paired bootstrap).
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


def check_level(level: float) -> float:
    if not 0 < level < 1:
        raise UserError(f"interval level must be in (0, 1), got {level}")
    return level


def resampled_moments(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Means (B, D) and covariances (B, D, D) of the rows of x (N, D) drawn weights[b] (B, N; each sums to N)
    times, without copying them."""
    n, d = x.shape
    mean = x.mean(0)
    centred = x - mean
    shift = weights @ centred / n
    if n * d * d <= 2**25:  # the rows' outer products (N, D * D) fit in 256 MiB: one matrix product, fastest
        scatter = (weights @ (centred[:, :, None] * centred[:, None, :]).reshape(n, d * d)).reshape(-1, d, d)
    else:  # (torch.einsum of the three factors ran 50x slower than either form on one core)
        scatter = (weights[:, :, None] * centred).mT @ centred
    return mean + shift, (scatter - n * shift[:, :, None] * shift[:, None, :]) / (n - 1)


def draw_counts(n: int, replicates: int, generator: torch.Generator) -> torch.Tensor:
    """(replicates, n) draw counts of n rows drawn n times with replacement."""
    index = torch.randint(n, (replicates, n), generator=generator)
    return torch.zeros(replicates, n, dtype=torch.float64).scatter_add_(1, index, torch.ones(replicates, n,
                                                                                           dtype=torch.float64))


def frechet_bootstrap(
    features,
    reference: FeatureStats | np.ndarray,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
    device: str | torch.device = "cpu",
) -> dict:
    """Debiased Frechet distance of `features` (N, D) to `reference`, with its basic bootstrap interval.

    reference: per-sample features (M, D), resampled too ("bootstrap-both-sides"), or stored statistics,
    held fixed ("bootstrap-generated-side": their own finite-sample bias stays in the estimate).
    Each replicate draws N (and M) rows with replacement (torch generator seeded with `seed`) and
    recomputes the distance as `frechet.frechet_distance` does, in float64 on `device`, a chunk of
    replicates at a time. With d the plug-in value and q the replicates' quantiles: estimate = 2 d - median,
    interval (2 d - q_hi, 2 d - q_lo), all clipped at 0 (a distance), so low <= estimate <= high always.
    `value_at_n` is d, `bias` median - d (docs/intervals.md: why, and how well it covers).
    """
    check_level(level)
    if replicates < 2:
        raise UserError(f"a bootstrap needs at least 2 replicates, got {replicates}")
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64, device=device)
    fixed = isinstance(reference, FeatureStats)
    y = None if fixed else torch.as_tensor(np.asarray(reference), dtype=torch.float64, device=device)
    dim = reference.dim if fixed else (y.shape[1] if y.ndim == 2 else -1)
    if x.ndim != 2 or len(x) < 2 or x.shape[1] != dim or (not fixed and len(y) < 2):
        raise UserError(f"bootstrap of a Frechet distance needs features (N >= 2, D) on both sides of one D, got "
                        f"{tuple(x.shape)} and {(reference.num, reference.dim) if fixed else tuple(y.shape)}")
    if fixed:  # R^1/2 of the fixed side once: one weighted covariance and one eigenproblem per replicate
        ref_mean = torch.as_tensor(reference.mu, dtype=torch.float64, device=device)[None]
        ref_sigma = torch.as_tensor(reference.sigma, dtype=torch.float64, device=device)[None]
        ref_root = psd_sqrt(ref_sigma[0])[None]

    def distances(weights: torch.Tensor, ref_weights: torch.Tensor | None) -> torch.Tensor:
        """(B,) distances of the resampled sets: weights (B, N), ref_weights (B, M) or None (fixed reference)."""
        mean, sigma = resampled_moments(x, weights)
        if fixed:
            r_mean, r_sigma, r_root = ref_mean, ref_sigma, ref_root
        else:
            r_mean, r_sigma = resampled_moments(y, ref_weights)
            r_root = psd_sqrt(r_sigma)
        diff = mean - r_mean
        traces = (diff * diff).sum(-1) + sigma.diagonal(0, -2, -1).sum(-1) + r_sigma.diagonal(0, -2, -1).sum(-1)
        return traces - 2 * trace_sqrt_product(r_root, sigma)

    def ones(side: torch.Tensor | None) -> torch.Tensor | None:
        return None if side is None else torch.ones(1, len(side), dtype=torch.float64, device=device)

    point = float(distances(ones(x), ones(y))[0])
    generator = torch.Generator().manual_seed(seed)
    counts = draw_counts(len(x), replicates, generator).to(device)
    ref_counts = None if fixed else draw_counts(len(y), replicates, generator).to(device)
    # replicates per batch: their (chunk, D, D) covariances and (chunk, rows, D) weighted rows in float64 stay
    # within 256 MiB each
    chunk = max(1, 2**25 // (dim * max(dim, len(x), 0 if fixed else len(y))))
    draws = torch.cat([distances(counts[i:i + chunk], None if fixed else ref_counts[i:i + chunk])
                       for i in range(0, replicates, chunk)]).cpu().numpy()
    alpha = 1 - level
    q_low, median, q_high = np.quantile(draws, [alpha / 2, 0.5, 1 - alpha / 2])
    # basic interval: the replicates' spread around the point, reflected; the median lies between the quantiles,
    # so the estimate lies in the interval, and clipping all three at 0 keeps their order
    low, estimate, high = (max(0.0, 2 * point - q) for q in (q_high, median, q_low))
    method = "bootstrap-generated-side" if fixed else "bootstrap-both-sides"
    return make_interval(low, high, method, level, draws, estimate=estimate, value_at_n=point,
                         bias=float(median - point), seed=seed)


def wilson(proportion: float, n: int, level: float = LEVEL, what: str = "samples") -> dict:
    """Wilson score interval of a proportion observed over `n` independent units."""
    check_level(level)
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
    check_level(level)
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
    z = scipy_stats.norm.ppf(1 - (1 - check_level(level)) / 2)
    return make_interval(mean - z * sd, mean + z * sd, method, level)
