"""The pieces under a sample set: time grid, Euler/Heun accuracy, budget schedules, TeaCache decisions,
and the cached (phase-wise) forward."""

import math

import pytest
import torch
from torch import nn

from elit_bench.errors import UserError
from elit_bench.flow.sampling import evaluation_times, solve, time_grid
from elit_bench.flow.schedules import parse_schedule, resolve_budgets
from elit_bench.flow.teacache import cached_forward, skip_plan
from helpers import randomize, tiny


def small(name="ELIT-DiT-S/2", **kw):
    args = dict(input_size=8, depth=4, **({"group_size": 2} if name.startswith("ELIT") else {}))
    return randomize(tiny(name, **{**args, **kw})).eval()


# ---------------------------------------------------------------- time grid and solvers
def test_time_grid_runs_from_noise_to_data_and_shift_moves_steps_towards_noise():
    uniform = time_grid(4)
    assert uniform == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    shifted = time_grid(4, shift=3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert all(a < b for a, b in zip(shifted, shifted[1:]))
    assert shifted[1] < uniform[1]  # smaller first steps: more of them near the noise
    for bad in (dict(steps=0), dict(steps=4, shift=0.0), dict(steps=4, shift=float("nan"))):
        with pytest.raises(UserError):
            time_grid(**bad)


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2)])
def test_solvers_converge_at_their_order_on_a_linear_ode(solver, order):
    # dx/dt = a x from x0: x(1) = x0 exp(a); halving the step divides the error by 2^order
    x0, a = torch.tensor([1.0], dtype=torch.float64), -1.5
    calls = []

    def velocity(x, t, i):
        calls.append(i)
        return a * x

    errors = []
    for steps in (20, 40):
        calls.clear()
        out = solve(velocity, x0, time_grid(steps), solver)
        errors.append(abs(out.item() - math.exp(a)))
        assert calls == list(range(len(evaluation_times(time_grid(steps), solver))))
        assert len(calls) == steps * (1 if solver == "euler" else 2)
    assert errors[0] / errors[1] == pytest.approx(2 ** order, rel=0.1)


# ---------------------------------------------------------------- budget schedules
@pytest.mark.parametrize("spec,expected", [
    ("3", [3, 3, 3, 3]),
    ("1,2,3,4", [1, 2, 3, 4]),
    ("1x2,4x2", [1, 1, 4, 4]),
    ("1@0,4@0.5,4@1", [1, 3, 4, 4]),  # t = 0, .25, .5, .75: 1, 2.5 (halves round up), 4, 4
    ("2@0.5,4@0.75", [2, 2, 2, 4]),  # constant before the first knot
])
def test_schedule_spellings_resolve_to_one_budget_per_step(spec, expected):
    assert parse_schedule(spec, time_grid(4)[:-1]) == expected


@pytest.mark.parametrize("spec", ["", "3,", "a", "1,2,3", "1x0", "1@0,2@0", "1@0,2@1.5", "1@x", "2@0,3"])
def test_bad_schedules_are_user_errors(spec):
    with pytest.raises(UserError):
        parse_schedule(spec, time_grid(4)[:-1])


def test_budgets_are_checked_against_the_model():
    elit, dit = small(), small("DiT-S/2")
    times = time_grid(4)[:-1]
    assert resolve_budgets(elit, times) == [4] * 4  # full budget J by default
    assert resolve_budgets(dit, times) == [None] * 4
    for model, kw in ((elit, dict(budget=0)), (elit, dict(budget=5)), (elit, dict(schedule="1,2,3,5")),
                      (elit, dict(budget=2, schedule="2")), (dit, dict(budget=2)), (dit, dict(schedule="2"))):
        with pytest.raises(UserError):
            resolve_budgets(model, times, **kw)


# ---------------------------------------------------------------- TeaCache
class AffineEmbedder(nn.Module):
    """e(t) = (1 + t) * ones: relative L1 change from t0 to t1 is (t1 - t0) / (1 + t0)."""

    def forward(self, t):
        return (1 + t)[:, None] * torch.ones(1, 3, dtype=t.dtype)


def test_teacache_accumulates_the_relative_embedding_change_until_the_threshold():
    times = time_grid(8)[:-1]  # changes: 0.125/1, 0.125/1.125, 0.125/1.25, ...
    changes = [(b - a) / (1 + a) for a, b in zip(times, times[1:])]
    threshold = 0.2
    expected, acc = [False], 0.0
    for c in changes[:-1]:
        acc += c
        expected.append(acc < threshold)
        acc = acc if acc < threshold else 0.0
    expected.append(False)  # the last evaluation always runs
    skips = skip_plan(AffineEmbedder(), times, threshold)
    assert skips == expected and any(skips)
    assert skip_plan(AffineEmbedder(), times, None) == [False] * len(times)
    assert skip_plan(AffineEmbedder(), times, 10.0) == [False] + [True] * (len(times) - 2) + [False]
    with pytest.raises(UserError):
        skip_plan(AffineEmbedder(), times, -1.0)


@pytest.mark.parametrize("name", ["DiT-S/2", "ELIT-DiT-S/2"])
def test_cached_forward_equals_the_model_and_reuses_the_trunk_residual(name):
    model = small(name)
    g = torch.Generator().manual_seed(3)
    x, t, y = torch.randn(2, 1, 8, 8, generator=g), torch.rand(2, generator=g), torch.tensor([1, 2])
    budget = 2 if model.max_budget else None
    with torch.no_grad():
        out, residual = cached_forward(model, x, t, y, budget, keep_residual=True)
        torch.testing.assert_close(out, model(x, t, y, budget=budget), rtol=0, atol=0)
        reused, _ = cached_forward(model, x, t, y, budget, residual=residual)
        torch.testing.assert_close(reused, out, rtol=0, atol=1e-6)  # tokens + (trunk - tokens)
        other, _ = cached_forward(model, x, t * 0.5, y, budget, residual=residual)
        assert not torch.allclose(other, out)  # embed and final layer still see the new time
