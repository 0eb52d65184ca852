"""Inception Score with torch-fidelity's protocol.

Logits without the classifier bias (``logits_unbiased``), samples shuffled with
a fixed seed (2020), 10 splits, exp of the mean KL divergence per split; the
score is the mean over splits and its spread the (population) std. The
computation is torch-fidelity's own ``isc_features_to_metric``.
"""

from __future__ import annotations

import numpy as np
import torch

from elit_bench.errors import UserError

SPLITS = 10
SHUFFLE_SEED = 2020  # torch-fidelity's default rng_seed


def inception_score(logits, splits: int = SPLITS, seed: int = SHUFFLE_SEED) -> tuple[float, float]:
    """(mean, std) of the Inception Score of logits (N, C), N >= splits."""
    from torch_fidelity.metric_isc import (  # heavy import
        KEY_METRIC_ISC_MEAN,
        KEY_METRIC_ISC_STD,
        isc_features_to_metric,
    )

    logits = torch.as_tensor(np.asarray(logits))
    if logits.ndim != 2 or len(logits) < splits:
        raise UserError(f"Inception Score needs logits (N, C) with N >= {splits} samples, got shape {tuple(logits.shape)}")
    out = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=seed)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]
