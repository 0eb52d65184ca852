"""Intervals of a cell (one run's evaluation over its training seeds) and of the difference of two cells, from the
per-sample values records keep beside them (docs/intervals.md: the methods and the simulations behind them).

A cell's estimand is the mean over training seeds of a per-seed statistic:

- "frechet": the Frechet distance of the seed's generated features (N, D) to the reference features (M, D),
  debiased (the plug-in value at N is biased upward by about (Tr S_g)/N + (Tr S_r)/M);
- "mean": the mean of per-sample values (N, 1), e.g. 0/1 class accuracy.

Every interval is a basic bootstrap interval from ONE drawing of R replicates: in each replicate the
reference rows are resampled once (shared by every seed and both sides of a difference), the training
seeds are resampled (k >= 2: the model-level noise), and within each drawn seed its samples (the sampling
noise). Samples drawn from the same noise seeds (equal `Arm.noise` specs) are resampled with the same
indices, so two sets that share noise stay paired sample by sample; a difference of two arms with the same
training seeds and equal noise specs also resamples those seeds jointly (`pairing: "paired"`), otherwise
each side draws its own seeds (`"unpaired"`). With T the plug-in statistic (mean over seeds) and T* its
replicates: estimate = T - bias, bias = median(T*) - T (0 for "mean", which is unbiased), interval
[2 T - q_hi(T*), 2 T - q_lo(T*)]; Frechet cells are clipped at 0 (a distance), which keeps the order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from elit_bench.errors import UserError
from elit_bench.metrics.frechet import psd_sqrt, trace_sqrt_product
from elit_bench.metrics.intervals import LEVEL, check_level, draw_counts, make_interval, resampled_moments

STATISTICS = ("frechet", "mean")
REPLICATES = 1000  # comparisons: one-sided p-values down to 1 / 1001, Holm over ~10 tests
SEED = 0


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: an evaluation's per-sample values for each training seed.

    values: training seed -> (N, D) float features ("frechet") or (N, 1) per-sample values ("mean");
    noise: training seed -> the set's noise-seed spec (record["sample"]["seeds"], e.g. "0-511"); sets with equal
    specs drew the same noise and are resampled with the same indices; None: unknown, never paired.
    """

    values: dict[int, np.ndarray]
    noise: dict[int, str | None]

    def __post_init__(self):
        if not self.values:
            raise UserError("an arm needs the per-sample values of at least one training seed")
        if set(self.noise) != set(self.values):
            raise UserError(f"an arm's noise specs name seeds {sorted(self.noise)} but its values seeds "
                            f"{sorted(self.values)}: give one spec (or None) per seed")

    @property
    def seeds(self) -> list[int]:
        return sorted(self.values)


# ---------------------------------------------------------------- one drawing of every side
class _Side:
    """One arm prepared for a drawing: its seeds' values as float64 tensors, checked for the statistic."""

    def __init__(self, arm: Arm, statistic: str, dim: int | None, name: str):
        self.seeds = arm.seeds
        self.values = [torch.as_tensor(np.asarray(arm.values[s]), dtype=torch.float64) for s in self.seeds]
        for s, v in zip(self.seeds, self.values):
            want = "(N, 1) per-sample values" if statistic == "mean" else f"(N, {dim}) features"
            if v.ndim != 2 or len(v) < 2 or v.shape[1] != (1 if statistic == "mean" else dim):
                raise UserError(f"{name}, training seed {s}: {statistic!r} needs {want} with N >= 2, got "
                                f"{tuple(v.shape)}")
            if not torch.isfinite(v).all():
                raise UserError(f"{name}, training seed {s}: the per-sample values hold NaN or infinite numbers")
        # samples that share noise share resampling indices: the key of each seed's draws
        self.keys = [(f"noise {arm.noise[s]} n {len(v)}" if arm.noise[s] is not None else f"{name} seed {s}")
                     for s, v in zip(self.seeds, self.values)]


def _seed_draws(k: int, replicates: int, generator: torch.Generator) -> torch.Tensor:
    """(R, k) indices of the training seeds each replicate draws: all k as they are for one seed, else k with
    replacement."""
    if k == 1:
        return torch.zeros(replicates, 1, dtype=torch.long)
    return torch.randint(k, (replicates, k), generator=generator)


def _copy_numbers(index: torch.Tensor) -> torch.Tensor:
    """(R, k): for each drawn seed, how many times the replicate drew it before (its second copy is another model:
    its samples are drawn afresh)."""
    return torch.stack([(index[:, :j] == index[:, j:j + 1]).sum(1) for j in range(index.shape[1])], 1)


def _counts_for(key: str, copy: int, n: int, replicates: int, seed: int) -> torch.Tensor:
    """(R, n) draw counts of n samples drawn n times with replacement, one row per replicate, a function of
    (bootstrap seed, noise key, copy) only: every side and seed with that noise gets the same rows."""
    digest = hashlib.sha256(f"{seed}/{key}/{copy}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return draw_counts(n, replicates, generator)


class _Reference:
    """The reference features (M, D), resampled once per replicate (or, given as none, absent)."""

    def __init__(self, reference, statistic: str, replicates: int, generator: torch.Generator):
        self.y = None
        if statistic == "mean":
            return
        self.y = torch.as_tensor(np.asarray(reference), dtype=torch.float64)
        if self.y.ndim != 2 or len(self.y) < 2:
            raise UserError(f"the reference features must be (M >= 2, D), got {tuple(self.y.shape)}")
        self.counts = draw_counts(len(self.y), replicates, generator)
        self.point = self._moments(torch.ones(1, len(self.y), dtype=torch.float64))
        self.draws = None  # (mean, sigma, root) of every replicate, made on first use

    def _moments(self, weights):
        mean, sigma = resampled_moments(self.y, weights)
        return mean, sigma, psd_sqrt(sigma)

    def replicate_moments(self):
        if self.draws is None:
            chunk = _chunk(self.y.shape[1], len(self.y))
            parts = [self._moments(self.counts[i:i + chunk]) for i in range(0, len(self.counts), chunk)]
            self.draws = tuple(torch.cat(p) for p in zip(*parts))
        return self.draws


def _chunk(dim: int, rows: int) -> int:
    """Replicates per batch: their (chunk, D, D) covariances and (chunk, rows, D) weighted rows in float64 stay
    within 256 MiB each."""
    return max(1, 2**25 // (dim * max(dim, rows)))


def _statistic(x: torch.Tensor, weights: torch.Tensor, statistic: str, ref_moments) -> torch.Tensor:
    """(B,) statistic of x (N, D) resampled with weights (B, N) against reference moments (each (B, ...) or (1, ...))."""
    if statistic == "mean":
        return weights @ x[:, 0] / len(x)
    mean, sigma = resampled_moments(x, weights)
    r_mean, r_sigma, r_root = ref_moments
    diff = mean - r_mean
    traces = (diff * diff).sum(-1) + sigma.diagonal(0, -2, -1).sum(-1) + r_sigma.diagonal(0, -2, -1).sum(-1)
    return traces - 2 * trace_sqrt_product(r_root, sigma)


def _draw(side: _Side, index: torch.Tensor, statistic: str, ref: _Reference, seed: int) -> tuple[float, np.ndarray]:
    """(T, T*): the plug-in mean over seeds of the statistic, and its R replicates (R,): replicate b averages the
    statistic over the seeds index[b] names, each resampled with its noise key's rows."""
    replicates, k = index.shape
    point_ref = ref.point if ref.y is not None else None
    point = float(np.mean([float(_statistic(v, torch.ones(1, len(v), dtype=torch.float64), statistic, point_ref)[0])
                           for v in side.values]))
    copies = _copy_numbers(index)
    ref_draws = ref.replicate_moments() if ref.y is not None else None
    total = torch.zeros(replicates, dtype=torch.float64)
    for i, (x, key) in enumerate(zip(side.values, side.keys)):
        for copy in range(int(copies.max()) + 1):
            rows = ((index == i) & (copies == copy)).any(1).nonzero()[:, 0]  # a seed's copy appears once a row
            if not len(rows):
                continue
            counts = _counts_for(key, copy, len(x), replicates, seed)[rows]
            chunk = _chunk(x.shape[1], max(len(x), len(ref.y) if ref.y is not None else 0))
            for j in range(0, len(rows), chunk):
                r = rows[j:j + chunk]
                moments = None if ref_draws is None else tuple(m[r] for m in ref_draws)
                total[r] += _statistic(x, counts[j:j + chunk], statistic, moments)
    return point, (total / k).numpy()


def _prepare(statistic: str, replicates: int, level: float, reference) -> int | None:
    """Checks the arguments; the features' dimension D for "frechet" (None for "mean")."""
    check_level(level)
    if statistic not in STATISTICS:
        raise UserError(f"unknown statistic {statistic!r}; valid: {', '.join(STATISTICS)}")
    if replicates < 2:
        raise UserError(f"a bootstrap needs at least 2 replicates, got {replicates}")
    if statistic == "frechet":
        if reference is None:
            raise UserError("a Frechet interval needs the reference's per-sample features (M, D)")
        return int(np.shape(reference)[-1])
    return None


def _basic(point: float, draws: np.ndarray, level: float, debias: bool, clip: bool) -> tuple[float, float, float, float]:
    """(low, estimate, high, bias) of the basic bootstrap interval around `point` from its replicates."""
    alpha = 1 - level
    q_low, median, q_high = np.quantile(draws, [alpha / 2, 0.5, 1 - alpha / 2])
    bias = float(median - point) if debias else 0.0
    low, estimate, high = 2 * point - q_high, point - bias, 2 * point - q_low
    # an unbiased statistic's point can lie outside its reflected quantiles only for degenerate replicates
    low, high = min(low, estimate), max(high, estimate)
    if clip:
        low, estimate, high = (max(0.0, v) for v in (low, estimate, high))
    return float(low), float(estimate), float(high), bias


def cell_interval(arm: Arm, statistic: str, reference: np.ndarray | None = None, replicates: int = REPLICATES,
                  seed: int = SEED, level: float = LEVEL) -> dict:
    """The estimand of one cell (the mean over its training seeds of the statistic) with its basic bootstrap interval.

    arm: per-seed values ((N, D) features for "frechet", (N, 1) values for "mean"); reference: (M, D) features
    ("frechet"; resampled once per replicate). One seed: a bootstrap over its samples and the reference
    (method "bootstrap-both-sides" / "bootstrap"); k >= 2 seeds: a hierarchical bootstrap (seeds with
    replacement, then the samples within each drawn seed; method "hierarchical-bootstrap"), which holds both
    the model-level and the sampling noise. Returns `make_interval(...)` with estimate, value_at_n (the plug-in
    mean over seeds), bias, seeds, statistic, seed, and the R replicates of the plug-in mean.
    """
    dim = _prepare(statistic, replicates, level, reference)
    generator = torch.Generator().manual_seed(seed)
    ref = _Reference(reference, statistic, replicates, generator)
    side = _Side(arm, statistic, dim, "arm")
    point, draws = _draw(side, _seed_draws(len(side.seeds), replicates, generator), statistic, ref, seed)
    low, estimate, high, bias = _basic(point, draws, level, statistic == "frechet", statistic == "frechet")
    method = ("hierarchical-bootstrap" if len(side.seeds) > 1 else
              "bootstrap-both-sides" if statistic == "frechet" else "bootstrap")
    return make_interval(low, high, method, level, draws, estimate=estimate, value_at_n=point, bias=bias,
                         seeds=side.seeds, statistic=statistic, seed=seed)


def pairs(a: Arm, b: Arm) -> bool:
    """Whether a and b pair seed by seed: the same training seeds, each with equal (known) noise specs."""
    return a.seeds == b.seeds and all(a.noise[s] is not None and a.noise[s] == b.noise[s] for s in a.seeds)


def difference_interval(a: Arm, b: Arm, statistic: str, reference: np.ndarray | None = None,
                        replicates: int = REPLICATES, seed: int = SEED, level: float = LEVEL) -> dict:
    """stat(a) - stat(b), each the mean over its seeds, with a basic bootstrap interval from ONE drawing of both.

    Both sides resample the same reference rows; samples with equal noise specs the same indices; where a and b
    pair (`pairs`: same training seeds, equal noise specs) the seeds are resampled jointly (pairing "paired"),
    else each side draws its own (pairing "unpaired"). Replicate i of the difference is replicate i of a minus
    replicate i of b; both sides' own intervals from this drawing are kept under "a" and "b" (with their
    replicates, aligned). estimate = estimate(a) - estimate(b); not clipped.
    """
    dim = _prepare(statistic, replicates, level, reference)
    generator = torch.Generator().manual_seed(seed)
    ref = _Reference(reference, statistic, replicates, generator)
    side_a, side_b = _Side(a, statistic, dim, "a"), _Side(b, statistic, dim, "b")
    paired = pairs(a, b)
    index_a = _seed_draws(len(side_a.seeds), replicates, generator)
    index_b = index_a if paired else _seed_draws(len(side_b.seeds), replicates, generator)
    point_a, draws_a = _draw(side_a, index_a, statistic, ref, seed)
    point_b, draws_b = _draw(side_b, index_b, statistic, ref, seed)
    frechet = statistic == "frechet"
    sides = {}
    for name, point, draws, s in (("a", point_a, draws_a, side_a), ("b", point_b, draws_b, side_b)):
        low, estimate, high, bias = _basic(point, draws, level, frechet, frechet)
        sides[name] = make_interval(low, high, "hierarchical-bootstrap" if len(s.seeds) > 1 else "bootstrap", level,
                                    draws, estimate=estimate, value_at_n=point, bias=bias, seeds=s.seeds)
    point, draws = point_a - point_b, draws_a - draws_b
    alpha = 1 - level
    q_low, q_high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    # each side's own bias correction (unclipped), so the difference's estimate is the difference of theirs
    bias = sides["a"]["bias"] - sides["b"]["bias"]
    estimate = point - bias
    low, high = min(2 * point - q_high, estimate), max(2 * point - q_low, estimate)
    pairing = "paired" if paired else "unpaired"
    return make_interval(low, high, f"{pairing}-bootstrap-difference", level, draws, estimate=estimate,
                         value_at_n=point, bias=bias, seeds={"a": side_a.seeds, "b": side_b.seeds}, pairing=pairing,
                         statistic=statistic, seed=seed, a=sides["a"], b=sides["b"])


# ---------------------------------------------------------------- tests and multiplicity
def one_sided_p(interval: dict, boundary: float, alternative: str) -> float:
    """One-sided bootstrap p-value from a basic interval's replicates r (and its plug-in point d = value_at_n).

    The basic interval's confidence distribution is 2 d - r; alternative "greater" tests H0: estimand <= boundary
    (p = (1 + #{2 d - r <= boundary}) / (R + 1)), "less" tests H0: estimand >= boundary. p < (1 - level) / 2
    exactly where the interval's lower (upper) bound clears the boundary, up to quantile interpolation.
    """
    if alternative not in ("greater", "less"):
        raise UserError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    reps, point = interval.get("replicates"), interval.get("value_at_n")
    if reps is None or len(reps) < 2 or point is None:
        raise UserError(f"a one-sided p-value needs an interval with bootstrap replicates and value_at_n; "
                        f"method {interval.get('method')!r} has {'none' if reps is None else len(reps)}")
    confidence = 2 * float(point) - np.asarray(reps, dtype=np.float64)
    against = confidence <= boundary if alternative == "greater" else confidence >= boundary
    return float((1 + against.sum()) / (len(confidence) + 1))


def holm(pvalues) -> list[float]:
    """Holm's step-down adjustment of m p-values (family-wise error): sorted ascending, p_(i) * (m - i + 1), made
    monotone and capped at 1; returned in the input's order."""
    p = np.asarray(list(pvalues), dtype=np.float64)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise UserError(f"Holm's adjustment needs p-values in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    out = np.empty_like(p)
    out[order] = adjusted
    return out.tolist()
