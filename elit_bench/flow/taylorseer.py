"""TaylorSeer (Liu et al., 2025, "From Reusing to Forecasting"): forecast the trunk between full evaluations.

TeaCache (`teacache.py`) reuses the last trunk residual R = trunk(tokens) -
tokens at the evaluations it skips. TaylorSeer runs the trunk at a fixed
schedule of evaluations ("full") and *forecasts* R at the ones between, by a
Taylor expansion around the last full evaluation whose derivatives are
finite differences of the full evaluations (paper Sec. 3.2; released
`TaylorSeer-DiT/taylor_utils/__init__.py`):

    at a full evaluation at position s, with the previous one at s' (d = s - s'):
        D_0 = R(s),   D_{i+1} = (D_i - D_i_old) / d,   i < O, while the old D_i exists
    at a forecast evaluation at position u:
        R(u) ~ sum_i D_i (u - s)^i / i!

O is the order (0: reuse, i.e. TeaCache's residual); the old factors come
from the previous full evaluation, so the order available grows by one per
full evaluation, up to O. With equal spacing N, D_i is the i-th backward
difference over N^i (the paper's Delta^i F / N^i): exact for a trajectory
that is a polynomial of degree <= 1 at any O >= 1, and for degree >= 2 only
the top factor is exact (D_m = m! a_m on a degree-m polynomial); the lower
ones carry the O(N) error of backward differences (the paper's error bound).

What is forecast: the released DiT code forecasts every block's attention
and MLP outputs and multiplies each by the adaLN gate of the evaluation at
hand; here the whole trunk's residual is forecast, one code path for every
model (U-ViT skips, HDiT merges, ELIT's Read and Write are inside the trunk).
The expansion is linear in the feature, so the two agree exactly when the
gates do not change between evaluations, and differ otherwise
(tests/test_taylorseer.py). A forecast pass runs no block: it costs embed +
final, like a TeaCache skip (the released code also runs each block's adaLN
projection there).

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
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from elit_bench.errors import UserError

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
        """For each of `evaluations` evaluations, True where the trunk runs."""
        self.check()
        return [i < FIRST_FULL or (i - 1) % self.interval == 0 for i in range(evaluations)]


def check_alone(teacache: float | None, taylorseer: TaylorSeer | None) -> None:
    if teacache is not None and taylorseer is not None:
        raise UserError("TeaCache and TaylorSeer both choose the evaluations that skip the trunk: use one of them")


def grid_positions(times: Sequence[float], evals: Sequence[tuple[int, float]]) -> list[int]:
    """Position of each (step, t) evaluation in the time grid: k, or k + 1 for Heun's corrector at times[k + 1]."""
    return [step if t == times[step] else step + 1 for step, t in evals]


class Forecaster:
    """Taylor factors D_0..D_m (m <= order) of one pass's trunk residual (B, L, d), anchored at a position."""

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
