"""Budget schedules: how many latents per group (J~) each sampling step uses.

A schedule resolves to one budget per step. Spellings (`parse_schedule`):

- `"8"`: constant, every step at J~ = 8.
- `"4,4,8,8,16"` or run-length `"4x10,8x20,16x10"`: one budget per step, as
  many entries (after expanding `JxN` = N steps at J) as sampling steps.
- `"4@0,16@0.5,16@1"`: piecewise linear in the sampling time t (t = 0 noise,
  t = 1 data). Each knot is `BUDGET@T` with T in [0, 1], strictly
  increasing; step k uses the interpolated budget at its start time t_k,
  rounded to the nearest integer (halves up) and held constant before the
  first and after the last knot. The example spends 4 latents per group on
  the first, noisiest steps and ramps to 16 by mid-way (cheap early steps).

Budgets are checked against the model in `check_budgets`: 1 <= J~ <= J for
ELIT models; baselines have no budget, their schedule is all `None`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from elit_bench.errors import UserError

_KNOT = re.compile(r"^\s*(\d+)\s*@\s*([0-9.]+)\s*$")
_RUN = re.compile(r"^\s*(\d+)\s*(?:x\s*(\d+))?\s*$")
SYNTAX = ("J (constant), J1,J2,... or J1xN1,J2xN2,... (one budget per step), "
          "or J1@T1,J2@T2,... (piecewise linear in t, T in [0, 1] increasing)")


def parse_schedule(spec: str, times: Sequence[float]) -> list[int]:
    """Per-step budgets for the steps starting at `times` (the time grid without its final t = 1)."""
    steps = len(times)
    parts = spec.split(",")
    if not spec.strip() or any(not p.strip() for p in parts):
        raise UserError(f"empty budget schedule {spec!r}; expected {SYNTAX}")
    if "@" in spec:
        return _piecewise_linear(spec, parts, times)
    budgets = []
    for part in parts:
        m = _RUN.match(part)
        if not m or (m.group(2) is not None and int(m.group(2)) < 1):
            raise UserError(f"bad budget schedule entry {part.strip()!r} in {spec!r}; expected {SYNTAX}")
        budgets += [int(m.group(1))] * int(m.group(2) or 1)
    if len(budgets) == 1:
        return budgets * steps
    if len(budgets) != steps:
        raise UserError(f"budget schedule {spec!r} lists {len(budgets)} budgets but sampling has {steps} steps: "
                        "give one budget per step (or a single constant)")
    return budgets


def _piecewise_linear(spec: str, parts: list[str], times: Sequence[float]) -> list[int]:
    knots = []
    for part in parts:
        m = _KNOT.match(part)
        if not m:
            raise UserError(f"bad budget schedule knot {part.strip()!r} in {spec!r}; expected BUDGET@T, {SYNTAX}")
        try:
            t = float(m.group(2))
        except ValueError as exc:
            raise UserError(f"bad time {m.group(2)!r} in budget schedule {spec!r}") from exc
        knots.append((t, int(m.group(1))))
    ts = [t for t, _ in knots]
    if not all(0.0 <= t <= 1.0 for t in ts) or any(a >= b for a, b in zip(ts, ts[1:])):
        raise UserError(f"budget schedule {spec!r}: knot times must lie in [0, 1] and strictly increase")
    return [_round_half_up(_interp(t, knots)) for t in times]


def _interp(t: float, knots: list[tuple[float, int]]) -> float:
    if t <= knots[0][0]:
        return knots[0][1]
    for (t0, b0), (t1, b1) in zip(knots, knots[1:]):
        if t <= t1:
            return b0 + (b1 - b0) * (t - t0) / (t1 - t0)
    return knots[-1][1]


def _round_half_up(v: float) -> int:
    return int(math.floor(v + 0.5))


def resolve_budgets(model, steps_times: Sequence[float], budget: int | None = None,
                    schedule: str | None = None) -> list[int | None]:
    """One budget per step from `--budget` or `--schedule` (not both); validated against the model.

    ELIT models without either run at full budget J; baselines get `None` everywhere.
    """
    if budget is not None and schedule is not None:
        raise UserError("give either a budget or a budget schedule, not both (a constant schedule is the budget)")
    J = getattr(model, "max_budget", None)
    if schedule is not None:
        if J is None:
            raise UserError(f"{_name(model)} has no latent interface: budget schedules apply to ELIT models only")
        budgets = parse_schedule(schedule, steps_times)
    else:
        budgets = [budget if budget is not None else J] * len(steps_times)
    check_budgets(model, budgets)
    return budgets


def check_budgets(model, budgets: Sequence[int | None], what: str = "budget") -> None:
    """UserError unless every budget is valid for `model` (1..J for ELIT, None for baselines)."""
    J = getattr(model, "max_budget", None)
    for b in budgets:
        if J is None:
            if b is not None:
                raise UserError(f"{_name(model)} has no latent interface: a {what} applies to ELIT models only")
        elif isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= J:
            raise UserError(f"{what} {b!r} is outside 1..{J}: it counts latents kept per group "
                            f"(this model has J={J})")


def _name(model) -> str:
    return getattr(model, "name", type(model).__name__)
