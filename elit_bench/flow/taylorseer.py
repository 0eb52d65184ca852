"""TaylorSeer (Liu et al., 2025, "From Reusing to Forecasting"): forecast every block's sublayers between full evaluations.

TaylorSeer runs the model in full at a fixed schedule of evaluations and, at
the ones between, *forecasts* each transformer block's attention output and
MLP output (before their adaLN gates) by a Taylor expansion around the last
full evaluation, whose derivatives are finite differences of the full
evaluations (paper Sec. 3.2; released `TaylorSeer-DiT/taylor_utils/__init__.py`):

    at a full evaluation at position s, with the previous one at s' (d = s - s'):
        D_0 = F(s),   D_{i+1} = (D_i - D_i_old) / d,   i < O, while the old D_i exists
    at a forecast evaluation at position u:
        F(u) ~ sum_i D_i (u - s)^i / i!

O is the order (0: reuse); the old factors come from the previous full
evaluation, so the order available grows by one per full evaluation, up to O.
With equal spacing N, D_i is the i-th backward difference over N^i (the
paper's Delta^i F / N^i): exact for a trajectory that is a polynomial of
degree <= 1 at any O >= 1, and for degree >= 2 only the top factor is exact
(D_m = m! a_m on a degree-m polynomial); the lower ones carry the O(N) error
of backward differences (the paper's error bound).

What runs at a forecast evaluation (released `TaylorSeer-DiT/models.py`,
`DiTBlock.forward`, type "Taylor"): each block computes its adaLN modulation
from the current conditioning c and adds gate1(c) * forecast(attention), then
gate2(c) * forecast(MLP), to the residual stream; no norm, attention or MLP.
Everything outside the blocks' sublayers runs in full: embedding, final
layer, token ops (U-ViT skip joins, HDiT merge/split) and ELIT's Read and
Write, on the forecast stream. The hook is `DiTBlock.sublayer_cache`
(`SublayerCache`), set for the length of one pass (`PassForecast.attached`);
each pass of a guided evaluation has its own (released: the doubled CFG batch).

Schedule (released `cache_functions/cal_type.py`): the first two evaluations
are full, then one in every `interval`: evaluation i is full iff i < 2 or
(i - 1) % interval == 0, so interval 1 is the base model. The schedule does
not depend on the weights: the FLOPs of a set are known in advance.

Position: the index of the evaluation's time in the time grid (step k's
Euler or Heun predictor at k, the Heun corrector at k + 1), the released
code's step index. Heun's corrector and the next predictor share a position;
a full evaluation at the position of the last one refreshes D_0 and keeps the
derivatives (no difference over a zero distance).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from elit_bench.errors import UserError
from elit_bench.models.layers import DiTBlock

FIRST_FULL = 2  # evaluations computed fully before the schedule starts (the released `first_enhance`)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TaylorSeer:
    """order O >= 0 of the Taylor expansion; interval N >= 1: one full evaluation in N after the first two."""

    order: int
    interval: int

    def check(self) -> None:
        if not (_count(self.order) and self.order >= 0):
            raise UserError(f"TaylorSeer order {self.order!r} must be an integer >= 0 (0 reuses the last residual; "
                            "the paper uses 1 to 4)")
        if not (_count(self.interval) and self.interval >= 1):
            raise UserError(f"TaylorSeer interval {self.interval!r} must be an integer >= 1 (one full evaluation in "
                            "N; 1 = every evaluation full)")

    def full(self, evaluations: int) -> list[bool]:
        """For each of `evaluations` evaluations, True where the model runs in full."""
        self.check()
        return [i < FIRST_FULL or (i - 1) % self.interval == 0 for i in range(evaluations)]


def check_alone(teacache: float | None, taylorseer: TaylorSeer | None) -> None:
    if teacache is not None and taylorseer is not None:
        raise UserError("TeaCache and TaylorSeer both choose the evaluations that skip the blocks: use one of them")


def grid_positions(times: Sequence[float], evals: Sequence[tuple[int, float]]) -> list[int]:
    """Position of each (step, t) evaluation in the time grid: k, or k + 1 for Heun's corrector at times[k + 1]."""
    return [step if t == times[step] else step + 1 for step, t in evals]


class Forecaster:
    """Taylor factors D_0..D_m (m <= order) of one feature (e.g. a sublayer's output (B, L, d)), anchored at a position."""

    def __init__(self, order: int):
        self.order = order
        self.factors: list[torch.Tensor] = []
        self.position: int | None = None

    def update(self, feature: torch.Tensor, position: int) -> None:
        """A full evaluation at `position`: D_0 = feature, each higher factor a difference of the one below."""
        factors = [feature]
        if self.factors and self.order:
            distance = position - self.position
            if distance == 0:  # Heun's corrector and the next predictor: nothing to difference
                factors += self.factors[1:]
            else:
                for old in self.factors[:self.order]:
                    factors.append((factors[-1] - old) / distance)
        self.factors, self.position = factors, position

    def predict(self, position: int) -> torch.Tensor:
        """sum_i D_i (position - anchor)^i / i!; order 0 returns D_0 itself."""
        x = position - self.position
        out = self.factors[0]
        for i, factor in enumerate(self.factors[1:], start=1):
            out = out + factor * (x ** i / math.factorial(i))
        return out


class SublayerCache:
    """The hook TaylorSeer sets on one `DiTBlock` (`DiTBlock.sublayer_cache`) for one pass: a `Forecaster` of
    its attention output (0) and one of its MLP output (1), each (B, L, d) before its gate.

    Full evaluation (`forecasting` False): the block computes both and `record`s them at `position`.
    Forecast evaluation: the block asks `forecast(k)` at `position` instead of computing sublayer k.
    """

    def __init__(self, order: int):
        self.sublayers = (Forecaster(order), Forecaster(order))
        self.position: int | None = None
        self.forecasting = False

    def record(self, k: int, output: torch.Tensor) -> None:
        # at least fp32: finite differences of bf16 outputs (autocast) would lose the derivatives
        self.sublayers[k].update(output.to(torch.promote_types(output.dtype, torch.float32)), self.position)

    def forecast(self, k: int) -> torch.Tensor:
        return self.sublayers[k].predict(self.position)


def dit_blocks(model) -> list[DiTBlock]:
    """Every transformer block of `model` (a backbone's, ELIT's head, core and tail)."""
    return [m for m in model.modules() if isinstance(m, DiTBlock)]


def modulation_macs(model) -> int:
    """MACs per sample of a TaylorSeer forecast pass inside the blocks: each block's adaLN projection."""
    return sum(block.modulation_macs() for block in dit_blocks(model))


class PassForecast:
    """One pass's TaylorSeer state: a `SublayerCache` per DiT block of `model`, for passes at `budget`."""

    def __init__(self, model, order: int, budget: int | None):
        self.blocks = dit_blocks(model)
        self.caches = [SublayerCache(order) for _ in self.blocks]
        self.budget = budget

    @contextmanager
    def attached(self, position: int, forecasting: bool) -> Iterator[None]:
        """Inside, every block records (full pass) or forecasts (`forecasting`) its sublayers at `position`."""
        for block, cache in zip(self.blocks, self.caches):
            cache.position, cache.forecasting = position, forecasting
            block.sublayer_cache = cache
        try:
            yield
        finally:
            for block in self.blocks:
                block.sublayer_cache = None
