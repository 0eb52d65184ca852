"""95% intervals: coverage of the Frechet bootstrap on Gaussians of known distance, Wilson, t, IS splits, Pareto ties."""

import numpy as np
import pytest
import torch

from elit_bench.errors import UserError
from elit_bench.metrics import FeatureStats, pareto_frontier
from elit_bench.metrics.frechet import frechet_distance
from elit_bench.metrics.inception_score import inception_score, inception_split_scores
from elit_bench.metrics.intervals import BOOTSTRAP_REPLICATES, frechet_bootstrap, t_bounds, wilson


def gaussians(dim: int, shift: float, seed: int = 123):
    """Generator N(mu_g, sigma_g) and reference N(0, sigma_r) with spread-out spectra, and their Frechet distance."""
    rng = np.random.default_rng(seed)
    rotation_r = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    rotation_g = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    spectrum = np.exp(rng.standard_normal(dim))
    sigma_r = (rotation_r * spectrum) @ rotation_r.T
    sigma_g = (rotation_g * spectrum * np.exp(0.3 * rng.standard_normal(dim))) @ rotation_g.T
    mu_g = shift * rng.standard_normal(dim) / np.sqrt(dim)
    reference = FeatureStats(np.zeros(dim), sigma_r)
    return mu_g, sigma_g, reference, frechet_distance(mu_g, sigma_g, reference.mu, reference.sigma)


@pytest.mark.parametrize("shift", [0.0, 4.0])
def test_frechet_bootstrap_covers_the_known_distance(shift):
    """The shipped interval (basic bootstrap, default replicates) holds the true distance in >= 90 of 100 trials."""
    dim, n, trials = 16, 256, 100
    mu_g, sigma_g, reference, truth = gaussians(dim, shift)
    chol = np.linalg.cholesky(sigma_g)
    hits, widths, estimates = 0, [], []
    for trial in range(trials):
        x = mu_g + np.random.default_rng(trial).standard_normal((n, dim)) @ chol.T
        interval = frechet_bootstrap(x, reference, seed=trial)
        assert interval["method"] == "bootstrap-basic" and len(interval["replicates"]) == BOOTSTRAP_REPLICATES
        hits += interval["low"] <= truth <= interval["high"]
        widths.append(interval["high"] - interval["low"])
        estimates.append(frechet_distance(x.mean(0), np.cov(x, rowvar=False), reference.mu, reference.sigma))
    assert hits >= 90, f"{hits} of {trials} intervals contain the true distance {truth:.3f}"
    # and not by being uninformative: about 4 standard deviations of the estimate wide (1.96 * 2 for a normal)
    assert np.mean(widths) < 6 * np.std(estimates)
    # the plug-in value is biased upward, which is why the interval is the basic one (docs/intervals.md)
    assert np.mean(estimates) > truth


def test_frechet_bootstrap_is_seeded_and_checks_its_input():
    mu_g, sigma_g, reference, _ = gaussians(8, 1.0)
    x = mu_g + np.random.default_rng(0).standard_normal((64, 8)) @ np.linalg.cholesky(sigma_g).T
    assert frechet_bootstrap(x, reference, replicates=20, seed=3) == frechet_bootstrap(x, reference, replicates=20, seed=3)
    assert frechet_bootstrap(x, reference, replicates=20, seed=3) != frechet_bootstrap(x, reference, replicates=20, seed=4)
    with pytest.raises(UserError, match="features"):
        frechet_bootstrap(x[:, :4], reference)
    with pytest.raises(UserError, match="replicates"):
        frechet_bootstrap(x, reference, replicates=1)


def test_wilson_covers_binomial_proportions():
    rng = np.random.default_rng(0)
    for p, n in ((0.5, 40), (0.95, 200)):
        hits = 0
        for k in rng.binomial(n, p, size=1000):
            interval = wilson(k / n, n)
            hits += interval["low"] <= p <= interval["high"]
        assert hits >= 930, (p, n, hits)
    edge = wilson(1.0, 512)
    assert edge["high"] == 1.0 and 0.99 < edge["low"] < 0.999  # a perfect score still has an interval
    with pytest.raises(UserError):
        wilson(1.5, 10)


def test_t_bounds_is_the_student_interval():
    low, high = t_bounds([1.0, 2.0, 3.0])
    assert (low + high) / 2 == pytest.approx(2.0)
    assert (high - low) / 2 == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)  # t(0.975, 2) * sd / sqrt(3)
    with pytest.raises(UserError):
        t_bounds([1.0])


def test_inception_split_scores_agree_with_torch_fidelity():
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    logits = torch.from_numpy(np.random.default_rng(0).standard_normal((503, 30)) * 3)
    expected = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    scores = inception_split_scores(logits)
    assert len(scores) == 10
    assert inception_score(logits) == pytest.approx((expected[KEY_METRIC_ISC_MEAN], expected[KEY_METRIC_ISC_STD]), rel=1e-12)


def test_pareto_counts_a_point_dominated_only_beyond_the_intervals():
    flops = [1.0, 2.0, 3.0]
    fd = [10.0, 9.0, 5.0]  # lower is better: without intervals 1 and 2 beat their cheaper neighbours
    assert pareto_frontier(flops, fd).tolist() == [0, 1, 2]
    worse = [12.0, 13.0, 5.0]  # point 1 costs more than point 0 and is worse
    assert pareto_frontier(flops, worse).tolist() == [0, 2]
    # its interval overlaps point 0's: a tie, so it stays
    assert pareto_frontier(flops, worse, low=[11.0, 11.5, 4.0], high=[13.0, 14.0, 6.0]).tolist() == [0, 1, 2]
    # no overlap: dominated; a missing interval (NaN) is the value itself
    assert pareto_frontier(flops, worse, low=[11.0, 12.5, np.nan], high=[12.4, 14.0, np.nan]).tolist() == [0, 2]
    # higher is better: the bounds swap roles
    assert pareto_frontier(flops, [0.9, 0.5, 0.95], higher_is_better=True,
                           low=[0.85, 0.3, 0.9], high=[0.95, 0.7, 0.99]).tolist() == [0, 2]
