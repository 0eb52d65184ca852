"""ODE samplers for rectified flow: noise at t = 0 to data at t = 1 (docs/conventions.md#sampling).

The model predicts the velocity v = dx/dt (data - noise). `time_grid` gives
the N + 1 times of an N-step solve: uniform, optionally warped by a time
shift; `solve` integrates with Euler (N evaluations, the paper's sampler) or
Heun (2N evaluations: Euler predictor, trapezoidal corrector, also on the
last step since v is defined at t = 1).

The solver only asks `velocity(x, t, i)` for the velocity at x and time t,
where i counts the evaluations of this solve (0, 1, ...); guidance, budget
schedules and TeaCache use i to look up what that evaluation does (see
`evaluation_times`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from elit_bench.errors import UserError, choices_error

SOLVERS = ("euler", "heun")
DEFAULT_STEPS = 40


def shift_time(t, shift: float):
    """The SD3 / FLUX time shift of t (a float or a tensor), on the noise level s = 1 - t:
    s' = shift * s / (1 + (shift - 1) * s). shift > 1 moves times toward the noise (t = 0); sampling
    (`time_grid`) and training (`flow.loss.sample_timesteps`) both use it, so a shift means the same in both."""
    s = 1.0 - t
    return 1.0 - shift * s / (1.0 + (shift - 1.0) * s)


def time_grid(steps: int = DEFAULT_STEPS, shift: float = 1.0) -> list[float]:
    """N + 1 times from 0 (noise) to 1 (data).

    The grid is uniform in u = k / N, then shifted (`shift_time`). shift = 1
    keeps the uniform grid; shift > 1 spends more steps near the noise.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"number of sampling steps must be an integer >= 1, got {steps!r}")
    if not (math.isfinite(shift) and shift > 0):
        raise UserError(f"time shift must be a number > 0 (1 = uniform grid), got {shift!r}")
    return [shift_time(k / steps, shift) for k in range(steps + 1)]


def check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise choices_error("sampler", solver, SOLVERS)


def evaluation_times(times: list[float], solver: str = "euler") -> list[tuple[int, float]]:
    """(step, t) of every velocity evaluation of a solve over `times`, in the order `solve` makes them."""
    check_solver(solver)
    steps = range(len(times) - 1)
    if solver == "euler":
        return [(k, times[k]) for k in steps]
    return [(k, t) for k in steps for t in (times[k], times[k + 1])]


def solve(velocity: Callable[[torch.Tensor, float, int], torch.Tensor], x: torch.Tensor, times: list[float],
          solver: str = "euler") -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t, i) from times[0] to times[-1]; x is the noise (B, C, *S)."""
    check_solver(solver)
    i = 0
    for k in range(len(times) - 1):
        t, t_next = times[k], times[k + 1]
        dt = t_next - t
        v = velocity(x, t, i)
        i += 1
        if solver == "euler":
            x = x + dt * v
        else:
            v_next = velocity(x + dt * v, t_next, i)
            i += 1
            x = x + (0.5 * dt) * (v + v_next)
    return x
