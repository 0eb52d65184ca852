"""Frechet distance between two Gaussians, in float64 (FID, FDD, sFID, FVD).

d^2 = |mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1 sigma2)),
computed the way pytorch-fid and clean-fid do it (scipy ``sqrtm``, eps on the
diagonals when the product is singular, real part kept unless the imaginary
part is large), so numbers agree with theirs on the same statistics.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from elit_bench.errors import UserError
from elit_bench.metrics.stats import FeatureStats

SINGULAR_EPS = 1e-6  # added to both diagonals when sqrtm of the product is not finite (pytorch-fid's value)
IMAG_ATOL = 1e-3  # largest imaginary part on the diagonal of sqrtm accepted as round-off (pytorch-fid's value)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = SINGULAR_EPS) -> float:
    """Frechet distance of N(mu1, sigma1) and N(mu2, sigma2).

    mu1, mu2: (D,); sigma1, sigma2: (D, D). Everything is cast to float64.
    Raises `UserError` on mismatched dimensions and when the matrix square root
    has a large imaginary part (ill-conditioned covariances, e.g. far fewer
    samples than dimensions).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64)), np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise UserError(
            f"feature dimensions do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}; "
            "both sides must come from the same feature extractor and layer"
        )
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAG_ATOL):
            raise UserError(
                f"Frechet distance: the matrix square root has an imaginary component of "
                f"{np.max(np.abs(covmean.imag)):.3g}; the covariances are ill-conditioned "
                "(use more samples than feature dimensions)"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_stats(a: FeatureStats, b: FeatureStats) -> float:
    """`frechet_distance` of two `FeatureStats`."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
