"""95% intervals: coverage of the debiased Frechet estimate on Gaussians of known distance, Wilson, t, IS splits,
Pareto ties."""

import numpy as np
import pytest
import torch
from scipy import stats

from elit_bench.errors import UserError
from elit_bench.metrics import FeatureStats, pareto_frontier
from elit_bench.metrics.frechet import frechet_distance
from elit_bench.metrics.inception_score import inception_score, inception_split_scores
from elit_bench.metrics.intervals import frechet_bootstrap, t_bounds, wilson

D, DECADES = 64, 4.5  # the digits features' dimension; their covariance spectrum spans about 4.5 decades


def population(excess: float, seed: int = 1, dim: int = D):
    """Generator N(mu_g, sigma_g) and reference N(0, sigma_r) in `dim` dims, sigma_r's spectrum spread over DECADES
    like the digits features'; `excess` scales how far the generator is (0: the same distribution).
    Returns (mu_g, sigma_g, sigma_r, their Frechet distance)."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    spectrum = 100 * np.logspace(0, -DECADES, dim)
    sigma_r = (rotation * spectrum) @ rotation.T
    scales, mu_g, turn = rng.standard_normal(dim), rng.standard_normal(dim) / np.sqrt(dim), rng.standard_normal((dim, dim))
    turned = np.linalg.qr(rotation + 0.05 * excess * turn)[0]
    sigma_g = (turned * spectrum * np.exp(0.2 * excess * scales)) @ turned.T
    return excess * mu_g, sigma_g, sigma_r, frechet_distance(excess * mu_g, sigma_g, np.zeros(dim), sigma_r)


def draw(mu_g, sigma_g, sigma_r, n: int, trial: int):
    """N generated and N reference features of one seeded trial."""
    rng = np.random.default_rng(1000 + trial)
    return rng.multivariate_normal(mu_g, sigma_g, n), rng.multivariate_normal(np.zeros(D), sigma_r, n)


@pytest.fixture
def one_thread():
    """Small batched eigenproblems run far faster on one thread, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("excess", [0.0, 0.5])
def test_debiased_frechet_covers_the_population_distance(excess, one_thread):
    """The debiased estimate's interval (both sides resampled) holds the population distance in >= 90 of 100 trials,
    where the plug-in value at N is biased far above it (docs/intervals.md has the full simulation: N = 256, 512,
    2048, 200 replicates; here N = 256 and 50 replicates, to stay fast). excess 0 is the real-data floor's case:
    the interval holds 0."""
    n, trials = 256, 100
    mu_g, sigma_g, sigma_r, truth = population(excess)
    hits, plug_in, estimates = 0, [], []
    for trial in range(trials):
        x, y = draw(mu_g, sigma_g, sigma_r, n, trial)
        interval = frechet_bootstrap(x, y, replicates=50, seed=trial)
        assert interval["method"] == "bootstrap-both-sides" and len(interval["replicates"]) == 50
        assert interval["low"] <= interval["estimate"] <= interval["high"]
        hits += interval["low"] <= truth <= interval["high"]
        plug_in.append(interval["value_at_n"])
        estimates.append(interval["estimate"])
    assert hits >= 90, f"{hits} of {trials} intervals contain the population distance {truth:.3f}"
    # the plug-in value's bias is what the estimate removes: several times the estimate's remaining bias
    assert np.mean(plug_in) - truth > 4 * abs(np.mean(estimates) - truth), (truth, np.mean(plug_in), np.mean(estimates))


def test_generated_side_bootstrap_leaves_the_reference_bias_and_says_so(one_thread):
    """With stored reference statistics only the generated side is resampled: the method says so, and the
    estimate keeps the reference's share of the bias (about half of it when both sides have N samples)."""
    mu_g, sigma_g, sigma_r, _ = population(0.0)
    fixed, both = [], []
    for trial in range(10):
        x, y = draw(mu_g, sigma_g, sigma_r, 256, trial)
        one = frechet_bootstrap(x, FeatureStats.from_features(y), replicates=50, seed=trial)
        assert one["method"] == "bootstrap-generated-side" and one["low"] <= one["estimate"] <= one["high"]
        fixed.append(one["estimate"])
        both.append(frechet_bootstrap(x, y, replicates=50, seed=trial)["estimate"])
    assert np.mean(fixed) > 3 * np.mean(both) + 5


def test_frechet_bootstrap_point_is_the_plug_in_distance_and_is_seeded():
    mu_g, sigma_g, sigma_r, _ = population(1.0)
    x, y = draw(mu_g, sigma_g, sigma_r, 100, 0)
    interval = frechet_bootstrap(x, y, replicates=20, seed=3)
    assert interval["value_at_n"] == pytest.approx(
        frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)), rel=1e-10)
    assert interval == frechet_bootstrap(x, y, replicates=20, seed=3)
    assert interval != frechet_bootstrap(x, y, replicates=20, seed=4)
    with pytest.raises(UserError, match="features"):
        frechet_bootstrap(x[:, :4], y)
    with pytest.raises(UserError, match="replicates"):
        frechet_bootstrap(x, y, replicates=1)


def test_debiased_estimate_is_clipped_at_zero_and_stays_inside():
    """Two sets from one distribution: the reflected bounds go below 0; all three are clipped in order."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 8)), rng.standard_normal((64, 8))
    interval = frechet_bootstrap(x, y, replicates=50)
    assert interval["low"] == 0.0 <= interval["estimate"] <= interval["high"]
    assert interval["value_at_n"] > interval["high"]  # all of the plug-in value at N is bias here


# ---------------------------------------------------------------- the full simulation behind docs/intervals.md
def plug_in(x, y) -> float:
    return frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))


def jackknife(x, y, groups: int = 16) -> tuple[float, float, float]:
    """Candidate (c): delete-a-group jackknife of both sides at once; (estimate, t interval)."""
    parts = zip(np.array_split(np.arange(len(x)), groups), np.array_split(np.arange(len(y)), groups))
    left_out = np.array([plug_in(np.delete(x, a, 0), np.delete(y, b, 0)) for a, b in parts])
    estimate = groups * plug_in(x, y) - (groups - 1) * left_out.mean()
    half = stats.t.ppf(0.975, groups - 1) * np.sqrt((groups - 1) / groups * ((left_out - left_out.mean()) ** 2).sum())
    return estimate, estimate - half, estimate + half


def fd_infinity(x, y, rng, fractions=(0.5, 0.625, 0.75, 0.875, 1.0), draws: int = 3) -> float:
    """Candidate (b), Chong & Forsyth's FD-infinity: distances of random subsets of both sides, a line in 1/n,
    its value at 1/n = 0."""
    inverse, values = [], []
    for f in fractions:
        for _ in range(1 if f == 1 else draws):
            a, b = rng.choice(len(x), int(f * len(x)), replace=False), rng.choice(len(y), int(f * len(y)), replace=False)
            inverse.append(1 / (f * len(x)))
            values.append(plug_in(x[a], y[b]))
    return float(np.polyfit(inverse, values, 1)[1])


def simulate(trials: int = 100, replicates: int = 200, fit_replicates: int = 20, sizes=(256, 512, 2048)) -> str:
    """Bias and coverage of each candidate, as a Markdown table (`python tests/test_intervals.py`; minutes)."""
    rows = ["| population FD | N | plug-in bias | (a') generated side: bias, coverage | (a) both sides: bias, "
            "coverage, width | (c) jackknife: bias, coverage, width | (b) FD-infinity: bias, coverage |",
            "|---|---|---|---|---|---|---|"]
    for excess in (0.0, 0.5, 2.0):
        mu_g, sigma_g, sigma_r, truth = population(excess)
        for n in sizes:
            got = {k: [] for k in ("plug-in", "generated", "both", "jackknife", "infinity")}
            for trial in range(trials):
                x, y = draw(mu_g, sigma_g, sigma_r, n, trial)
                got["plug-in"].append((plug_in(x, y), np.nan, np.nan))
                for key, ref in (("generated", FeatureStats.from_features(y)), ("both", y)):
                    i = frechet_bootstrap(x, ref, replicates=replicates, seed=trial)
                    got[key].append((i["estimate"], i["low"], i["high"]))
                got["jackknife"].append(jackknife(x, y))
                rng = np.random.default_rng(trial)
                fits = [fd_infinity(x[rng.integers(n, size=n)], y[rng.integers(n, size=n)], rng)
                        for _ in range(fit_replicates)]
                point = fd_infinity(x, y, rng)
                got["infinity"].append((point, 2 * point - np.quantile(fits, 0.975), 2 * point - np.quantile(fits, 0.025)))
            cells = []
            for key, values in got.items():
                v = np.array(values)
                bias, cover = v[:, 0].mean() - truth, int(((v[:, 1] <= truth) & (truth <= v[:, 2])).sum())
                width = (v[:, 2] - v[:, 1]).mean()
                cells.append(f"{bias:+.2f}" if key == "plug-in" else f"{bias:+.2f}, {cover}" if key in
                             ("generated", "infinity") else f"{bias:+.2f}, {cover}, {width:.1f}")
            rows.append(f"| {truth:.1f} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


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


def test_pareto_counts_a_point_dominated_only_when_the_difference_is_resolved():
    flops = [1.0, 2.0, 3.0]
    fd = [10.0, 9.0, 5.0]  # lower is better: without intervals 1 and 2 beat their cheaper neighbours
    assert pareto_frontier(flops, fd).tolist() == [0, 1, 2]
    worse = [12.0, 13.0, 5.0]  # point 1 costs more than point 0 and is worse
    assert pareto_frontier(flops, worse).tolist() == [0, 2]
    # the interval of 0's advantage over 1 holds 0: not separated, so 1 stays
    assert pareto_frontier(flops, worse, separated=lambda j, i: False).tolist() == [0, 1, 2]
    # resolved: dominated
    assert pareto_frontier(flops, worse, separated=lambda j, i: True).tolist() == [0, 2]
    # higher is better: point 1 is dominated by point 0 only
    asked = []
    assert pareto_frontier(flops, [0.9, 0.5, 0.95], higher_is_better=True,
                           separated=lambda j, i: asked.append((j, i)) or True).tolist() == [0, 2]
    assert asked and all(j == 0 and i == 1 for j, i in asked)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(simulate())
