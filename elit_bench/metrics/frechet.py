"""Frechet distance between two Gaussians, in float64 (FID, FDD, sFID, FVD, digits FD).

d^2 = |mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1 sigma2)).

pytorch-fid and clean-fid take scipy's ``sqrtm`` of the (non-symmetric)
product, which warns, and needs an eps on the diagonals, when the product is
singular (fewer samples than dimensions, dead feature units, a collapsed
generator). For covariances (symmetric positive semi-definite) the same trace
is sum(sqrt(eig(sigma1^1/2 sigma2 sigma1^1/2))), a symmetric eigenvalue
problem that is exact for singular matrices too and never warns. It agrees
with both libraries to round-off (we saw 1e-8 relative on singular products,
1e-13 otherwise; tests/test_metrics_reference.py holds it to 1e-6).
"""

from __future__ import annotations

import numpy as np
import torch

from elit_bench.errors import UserError
from elit_bench.metrics.stats import FeatureStats


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of symmetric positive semi-definite matrices (..., D, D) (negative round-off clipped)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.mT) / 2)
    return (vectors * values.clamp(min=0).sqrt()[..., None, :]) @ vectors.mT


def trace_sqrt_product(root1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """Tr sqrtm(sigma1 sigma2) (...), given root1 = sigma1^1/2 (`psd_sqrt`); both (..., D, D)."""
    return torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp(min=0).sqrt().sum(-1)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance of N(mu1, sigma1) and N(mu2, sigma2).

    mu1, mu2: (D,); sigma1, sigma2: (D, D) covariances. Everything is cast to
    float64. Raises `UserError` on mismatched dimensions.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64)), np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise UserError(
            f"feature dimensions do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}; "
            "both sides must come from the same feature extractor and layer"
        )
    diff = mu1 - mu2
    s1, s2 = torch.from_numpy(sigma1), torch.from_numpy(sigma2)
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * float(trace_sqrt_product(psd_sqrt(s1), s2)))
    return max(value, 0.0)  # a distance: equal statistics give round-off such as -6.6e-10, which is 0


def frechet_distance_stats(a: FeatureStats, b: FeatureStats) -> float:
    """`frechet_distance` of two `FeatureStats`."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
