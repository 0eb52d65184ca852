"""Precision / recall (k-NN manifolds, k = 3) and KID on per-sample features.

Both are torch-fidelity's implementations called on our features: precision is
the fraction of generated samples inside the union of real k-NN balls, recall
the fraction of real samples inside the generated ones (Kynkaanniemi et al.,
the ADM evaluator's k = 3). KID is the unbiased MMD^2 with the cubic
polynomial kernel, averaged over random subsets.
"""

from __future__ import annotations

import numpy as np
import torch

from elit_bench.errors import UserError

NEIGHBORHOOD = 3
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
SEED = 2020  # torch-fidelity's default rng_seed


def _pair(fake, real, what: str, min_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    fake, real = torch.as_tensor(np.asarray(fake)), torch.as_tensor(np.asarray(real))
    if fake.ndim != 2 or real.ndim != 2 or fake.shape[1] != real.shape[1]:
        raise UserError(f"{what} needs features (N, D) of one dimension, got {tuple(fake.shape)} and {tuple(real.shape)}")
    if min(len(fake), len(real)) < min_samples:
        raise UserError(f"{what} needs at least {min_samples} samples per side, got {len(fake)} and {len(real)}")
    return fake.float(), real.float()


def precision_recall(fake, real, k: int = NEIGHBORHOOD) -> tuple[float, float]:
    """(precision, recall) of fake features (N, D) against real features (M, D)."""
    from torch_fidelity.metric_prc import (  # heavy import
        KEY_METRIC_PRECISION,
        KEY_METRIC_RECALL,
        prc_features_to_metric,
    )

    fake, real = _pair(fake, real, "precision/recall", k + 1)
    out = prc_features_to_metric(fake, real, prc_neighborhood=k, save_cpu_ram=False, verbose=False)
    return out[KEY_METRIC_PRECISION], out[KEY_METRIC_RECALL]


def kernel_inception_distance(
    fake, real, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = SEED
) -> tuple[float, float]:
    """(mean, std) of KID over `subsets` random subsets of min(subset_size, N, M) samples."""
    from torch_fidelity.metric_kid import (  # heavy import
        KEY_METRIC_KID_MEAN,
        KEY_METRIC_KID_STD,
        kid_features_to_metric,
    )

    fake, real = _pair(fake, real, "KID", 2)
    size = min(subset_size, len(fake), len(real))
    out = kid_features_to_metric(
        fake, real, kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False
    )
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]
