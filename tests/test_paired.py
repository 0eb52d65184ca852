"""Intervals of cells and of paired differences (elit_bench/metrics/paired.py), calibrated on Gaussians of known
truth: coverage of the one-seed debiased FD and of paired differences, paired narrower than unpaired on sets that
share noise, and the hierarchical interval of a mean over seeds with a model-level random effect.
`python tests/test_paired.py [one-seed|comparisons|both] [REPLICATES] [EXCESSES, e.g. 0,0.5]` prints the tables of docs/intervals.md (64 dims;
about 10 minutes each on one idle core at 500 replicates)."""

import sys
import time

import numpy as np
import pytest
import torch
from test_intervals import population

from elit_bench.errors import UserError
from elit_bench.metrics.frechet import frechet_distance
from elit_bench.metrics.intervals import frechet_bootstrap, t_bounds
from elit_bench.metrics.paired import Arm, cell_interval, difference_interval, holm, one_sided_p


@pytest.fixture(autouse=True)
def one_thread():
    """Small batched eigenproblems run far faster on one thread, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def root(sigma: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(sigma)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


class World:
    """Generators as maps of standard normal noise z (N, dim): x = mu + z @ L (L symmetric, L L = sigma_g), scored
    against reference features y ~ N(0, sigma_r). `arm(...)` gives a second map, slightly different (delta), so
    two arms fed the same noise are correlated sample by sample, as two models sampled from the same noise
    seeds are; `tau` adds a model-level random effect: training seed s shifts the mean by tau u_s,
    u_s ~ N(0, I / dim), so the estimand of a mean over seeds is E_s FD_s = FD(mu, sigma_g) + tau^2."""

    def __init__(self, excess: float, dim: int, seed: int = 1):
        mu, sigma_g, self.sigma_r, _ = population(excess, seed, dim)
        self.dim, self.mu, self.map = dim, mu, root(sigma_g)
        rng = np.random.default_rng(seed + 100)
        self.turn, self.shift = rng.standard_normal((dim, dim)) / np.sqrt(dim), rng.standard_normal(dim) / np.sqrt(dim)

    def params(self, delta: float = 0.0):
        """(mu, L) of the map `delta` away from the base one."""
        return self.mu + delta * self.shift, self.map @ (np.eye(self.dim) + delta * self.turn)

    def truth(self, delta: float = 0.0, tau: float = 0.0) -> float:
        mu, lin = self.params(delta)
        return frechet_distance(mu, lin.T @ lin, np.zeros(self.dim), self.sigma_r) + tau ** 2

    def noise(self, n: int, trial: int, key: int) -> np.ndarray:
        return np.random.default_rng([trial, key, 7]).standard_normal((n, self.dim))

    def reference(self, m: int, trial: int) -> np.ndarray:
        return np.random.default_rng([trial, 3]).multivariate_normal(np.zeros(self.dim), self.sigma_r, m)

    def arm(self, n: int, trial: int, seeds=(0,), delta: float = 0.0, tau: float = 0.0, shared_noise: bool = False,
            noise_known: bool = True) -> Arm:
        """One arm over training seeds: each seed's model (its mean shifted by tau u_s, u_s fixed by trial and seed),
        fed its own noise block (or, shared_noise, the same noise for every seed, as records before noise blocks)."""
        mu, lin = self.params(delta)
        values, specs = {}, {}
        for s in seeds:
            effect = tau * np.random.default_rng([trial, s, 11]).standard_normal(self.dim) / np.sqrt(self.dim)
            values[s] = mu + effect + self.noise(n, trial, 0 if shared_noise else s + 1) @ lin
            specs[s] = (f"block {0 if shared_noise else s}" if noise_known else None)
        return Arm(values, specs)


def covers(interval: dict, truth: float) -> bool:
    return interval["low"] <= truth <= interval["high"]


# ---------------------------------------------------------------- the tests
def test_one_seed_debiased_frechet_covers_and_matches_the_record_method():
    """One seed: the debiased estimate's basic interval holds the population distance in >= 90 of 100 trials
    (16 dims, N = 128, 200 replicates, to stay fast; docs/intervals.md has 64 dims and N = 256 .. 2048), and it is
    the per-record method: the same estimate as `frechet_bootstrap` up to Monte Carlo noise."""
    world, n = World(0.5, 16), 128
    truth = world.truth()
    hits, estimates, plug_in = 0, [], []
    for trial in range(100):
        arm, y = world.arm(n, trial), world.reference(n, trial)
        cell = cell_interval(arm, "frechet", y, replicates=200, seed=trial)
        assert cell["method"] == "bootstrap-both-sides" and cell["low"] <= cell["estimate"] <= cell["high"]
        hits += covers(cell, truth)
        estimates.append(cell["estimate"])
        plug_in.append(cell["value_at_n"])
    assert hits >= 90, (hits, truth)
    assert np.mean(plug_in) - truth > 4 * abs(np.mean(estimates) - truth)
    record = frechet_bootstrap(arm.values[0], y, replicates=200)
    assert record["value_at_n"] == pytest.approx(cell["value_at_n"], rel=1e-9)
    assert abs(record["estimate"] - cell["estimate"]) < 0.25 * (cell["high"] - cell["low"])


def test_paired_difference_covers_and_is_narrower_than_unpaired():
    """Two slightly different maps of the same noise: the paired interval of FD(a) - FD(b) holds the true difference
    in >= 90 of 100 trials and is several times narrower than the interval that draws the sides independently
    (which also covers, wastefully), and more often decides the sign."""
    world, n = World(0.5, 16), 128
    truth = world.truth(0.15) - world.truth(0.0)
    hits, widths, decided = {"paired": 0, "unpaired": 0}, {"paired": [], "unpaired": []}, {"paired": 0, "unpaired": 0}
    for trial in range(100):
        y, b = world.reference(n, trial), world.arm(n, trial)
        for pairing, known in (("paired", True), ("unpaired", False)):
            d = difference_interval(world.arm(n, trial, delta=0.15, noise_known=known), b, "frechet", y,
                                    replicates=200, seed=trial)
            assert d["pairing"] == pairing and d["low"] <= d["estimate"] <= d["high"]
            # replicate i of the difference is replicate i of a minus replicate i of b
            np.testing.assert_allclose(d["replicates"], np.subtract(d["a"]["replicates"], d["b"]["replicates"]),
                                       rtol=1e-4, atol=1e-4 * np.abs(d["b"]["replicates"]).max())
            hits[pairing] += covers(d, truth)
            widths[pairing].append(d["high"] - d["low"])
            decided[pairing] += d["low"] > 0 or d["high"] < 0
    assert hits["paired"] >= 90 and hits["unpaired"] >= 90, (hits, truth)
    assert np.mean(widths["unpaired"]) > 2 * np.mean(widths["paired"]), {k: np.mean(v) for k, v in widths.items()}
    assert decided["paired"] > decided["unpaired"] + 40, decided


def test_hierarchical_interval_holds_the_model_level_noise():
    """A model-level random effect over 8 training seeds: the hierarchical interval of the mean over seeds holds
    E_s FD_s in >= 90 of 100 trials whether the seeds drew their own noise blocks or all the same noise (records
    before noise blocks: its indices are then shared across seeds). A t interval over the seeds' own debiased
    estimates misses the shared sampling noise in the latter case and covers far less often."""
    world, n, seeds, tau = World(0.5, 8), 128, tuple(range(8)), 2.0
    truth = world.truth(tau=tau)
    hits = {"own noise": 0, "shared noise": 0, "t, shared noise": 0}
    for trial in range(100):
        y = world.reference(n, trial)
        for key, shared in (("own noise", False), ("shared noise", True)):
            arm = world.arm(n, trial, seeds, tau=tau, shared_noise=shared)
            cell = cell_interval(arm, "frechet", y, replicates=100, seed=trial)
            assert cell["method"] == "hierarchical-bootstrap" and cell["seeds"] == list(seeds)
            hits[key] += covers(cell, truth)
            if shared:
                per_seed = [frechet_bootstrap(arm.values[s], y, replicates=20, seed=trial)["estimate"] for s in seeds]
                low, high = t_bounds(per_seed)
                hits["t, shared noise"] += low <= truth <= high
    assert hits["own noise"] >= 90 and hits["shared noise"] >= 90, hits
    assert hits["t, shared noise"] < hits["shared noise"] - 10, hits


def test_mean_statistic_and_p_values():
    """Per-sample 0/1 values: the interval of a mean over seeds is centred on it (no bias to remove); one-sided
    p-values follow the interval (p < 0.025 exactly where it clears the boundary); Holm is monotone and capped."""
    rng = np.random.default_rng(0)
    arm = Arm({s: (rng.random((400, 1)) < 0.8).astype(np.float32) for s in (0, 1, 2)}, {s: None for s in (0, 1, 2)})
    cell = cell_interval(arm, "mean", replicates=500)
    mean = np.mean([v.mean() for v in arm.values.values()])
    assert cell["estimate"] == pytest.approx(mean) and cell["bias"] == 0 and cell["low"] < mean < cell["high"]
    # no model-level effect here: the nested resampling counts the sampling noise twice (docs/intervals.md), so the
    # interval is wider than the ideal 1.96 sd of the mean over 1200 samples, but not by more than 1.8x
    ideal = 2 * 1.96 * np.sqrt(0.16 / 1200)
    assert ideal < cell["high"] - cell["low"] < 1.8 * ideal, (cell["high"] - cell["low"], ideal)
    for boundary in (cell["low"] - 0.01, cell["high"] + 0.01):
        p = one_sided_p(cell, boundary, "greater")
        assert (p < 0.025) == (boundary < cell["low"]), (boundary, p)
        assert (one_sided_p(cell, boundary, "less") < 0.025) == (boundary > cell["high"])
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.6, 0.6]) == [1.0, 1.0]
    with pytest.raises(UserError, match="alternative"):
        one_sided_p(cell, 0.5, "two-sided")
    with pytest.raises(UserError, match="statistic"):
        cell_interval(arm, "median")
    with pytest.raises(UserError, match="reference"):
        cell_interval(Arm({0: rng.standard_normal((10, 4))}, {0: None}), "frechet")
    with pytest.raises(UserError, match=r"\(N, 1\)"):
        cell_interval(Arm({0: rng.standard_normal((10, 4))}, {0: None}), "mean")


def test_same_draws_for_same_noise_and_seeded():
    """Equal noise specs mean equal resampling indices: an arm compared with itself has a zero-width difference;
    the drawing is a function of the bootstrap seed."""
    world = World(0.5, 8)
    a, y = world.arm(64, 0, seeds=(0, 1, 2)), world.reference(64, 0)
    d = difference_interval(a, a, "frechet", y, replicates=50)
    assert d["pairing"] == "paired" and d["low"] == d["high"] == 0
    assert cell_interval(a, "frechet", y, replicates=50, seed=1) == cell_interval(a, "frechet", y, replicates=50, seed=1)
    assert cell_interval(a, "frechet", y, replicates=50, seed=1) != cell_interval(a, "frechet", y, replicates=50, seed=2)


# ---------------------------------------------------------------- the tables of docs/intervals.md
def one_seed_table(trials: int = 100, replicates: int = 1000, dim: int = 64, sizes=(256, 512, 2048),
                   excesses=(0.0, 0.5)) -> str:
    """Bias, coverage and width of the one-seed constructions built from one drawing of replicates r around the
    plug-in d: basic interval with the median (chosen) or the mean of r as the bias, and the percentile interval
    shifted by twice the bias."""
    rows = ["| population FD | N | basic, median: bias, coverage, width | basic, mean: bias, coverage | "
            "percentile shifted: coverage, width |", "|---|---|---|---|---|"]
    for excess in excesses:
        world = World(excess, dim)
        truth = world.truth()
        for n in sizes:
            got = []
            for trial in range(trials):
                cell = cell_interval(world.arm(n, trial), "frechet", world.reference(n, trial), replicates, trial)
                r, d = np.asarray(cell["replicates"]), cell["value_at_n"]
                q_lo, med, q_hi = np.quantile(r, [0.025, 0.5, 0.975])
                got.append((cell["estimate"], cell["low"], cell["high"], 2 * d - r.mean(),
                            q_lo - 2 * (med - d), q_hi - 2 * (med - d)))
            g = np.array(got)
            basic = (g[:, 1] <= truth) & (truth <= g[:, 2])
            shifted = (g[:, 4] <= truth) & (truth <= g[:, 5])
            rows.append(f"| {truth:.1f} | {n} | {g[:, 0].mean() - truth:+.2f}, {basic.sum()}, "
                        f"{(g[:, 2] - g[:, 1]).mean():.1f} | {g[:, 3].mean() - truth:+.2f}, {basic.sum()} | "
                        f"{shifted.sum()}, {(g[:, 5] - g[:, 4]).mean():.1f} |")
            print(rows[-1], flush=True)  # a row as it is done: the table takes minutes
    return "\n".join(rows)


def comparison_table(trials: int = 100, replicates: int = 1000, dim: int = 64, n: int = 256) -> str:
    """Differences (one seed, two maps of the same noise) and means over seeds (a model-level effect): coverage and
    mean width of each interval."""
    world = World(0.5, dim)
    rows = ["| what | interval | coverage | mean width |", "|---|---|---|---|"]
    truth = world.truth(0.15) - world.truth(0.0)
    got = {"paired": [], "unpaired": []}
    for trial in range(trials):
        y, b = world.reference(n, trial), world.arm(n, trial)
        for pairing, known in (("paired", True), ("unpaired", False)):
            got[pairing].append(difference_interval(world.arm(n, trial, delta=0.15, noise_known=known), b, "frechet",
                                                    y, replicates, trial))
    for pairing, intervals in got.items():
        rows.append(f"| FD(a) - FD(b) = {truth:.2f}, one seed, same noise | {pairing} bootstrap | "
                    f"{sum(covers(i, truth) for i in intervals)} | {np.mean([i['high'] - i['low'] for i in intervals]):.2f} |")
        print(rows[-1], flush=True)
    for k in (3, 10):
        tau = 2.0
        truth = world.truth(tau=tau)
        got = {"hierarchical, own noise": [], "hierarchical, shared noise": [], "t over seeds, own noise": [],
               "t over seeds, shared noise": []}
        for trial in range(trials):
            y = world.reference(n, trial)
            for noise, shared in (("own noise", False), ("shared noise", True)):
                arm = world.arm(n, trial, tuple(range(k)), tau=tau, shared_noise=shared)
                cell = cell_interval(arm, "frechet", y, replicates, trial)
                got[f"hierarchical, {noise}"].append((cell["low"], cell["high"]))
                per_seed = [frechet_bootstrap(arm.values[s], y, replicates=100, seed=trial)["estimate"]
                            for s in arm.seeds]
                got[f"t over seeds, {noise}"].append(t_bounds(per_seed))
        for key, bounds in got.items():
            b = np.array(bounds)
            rows.append(f"| mean over {k} seeds = {truth:.1f}, model-level sd tau = {tau} | {key} | "
                        f"{int(((b[:, 0] <= truth) & (truth <= b[:, 1])).sum())} | {(b[:, 1] - b[:, 0]).mean():.2f} |")
            print(rows[-1], flush=True)
    return "\n".join(rows)


if __name__ == "__main__":
    torch.set_num_threads(1)
    start = time.time()
    which = sys.argv[1] if len(sys.argv) > 1 else "both"
    replicates = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    excesses = tuple(float(e) for e in sys.argv[3].split(",")) if len(sys.argv) > 3 else (0.0, 0.5)
    if which in ("one-seed", "both"):
        print(one_seed_table(replicates=replicates, excesses=excesses), flush=True)
    if which in ("comparisons", "both"):
        print(comparison_table(replicates=replicates), flush=True)
    print(f"({time.time() - start:.0f} s)")
