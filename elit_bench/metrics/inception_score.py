"""Inception Score with torch-fidelity's protocol.

Logits without the classifier bias (``logits_unbiased``), samples shuffled with
a fixed seed (2020, numpy's ``RandomState.permutation`` as torch-fidelity
does), 10 disjoint splits, exp of the mean KL divergence per split; the score
is the mean over splits and its spread the (population) std, as
torch-fidelity's ``isc_features_to_metric`` computes them (a test checks
the two agree). The split scores are kept: they are independent estimates,
so their t interval is the score's 95% interval (`metrics.intervals`).
"""

from __future__ import annotations

import numpy as np
import torch

from elit_bench.errors import UserError

SPLITS = 10
SHUFFLE_SEED = 2020  # torch-fidelity's default rng_seed


def inception_split_scores(logits, splits: int = SPLITS, seed: int = SHUFFLE_SEED) -> np.ndarray:
    """Inception Score of each split (splits,) of logits (N, C), N >= splits."""
    logits = torch.as_tensor(np.asarray(logits))
    if logits.ndim != 2 or len(logits) < splits:
        raise UserError(f"Inception Score needs logits (N, C) with N >= {splits} samples, got shape {tuple(logits.shape)}")
    n = len(logits)
    logits = logits[np.random.RandomState(seed).permutation(n)].double()
    p, log_p = logits.softmax(dim=1), logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        part, log_part = p[i * n // splits:(i + 1) * n // splits], log_p[i * n // splits:(i + 1) * n // splits]
        kl = (part * (log_part - part.mean(dim=0, keepdim=True).log())).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return np.asarray(scores)


def inception_score(logits, splits: int = SPLITS, seed: int = SHUFFLE_SEED) -> tuple[float, float]:
    """(mean, std) of the Inception Score of logits (N, C), N >= splits."""
    scores = inception_split_scores(logits, splits, seed)
    return float(scores.mean()), float(scores.std())
