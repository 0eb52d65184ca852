"""TaylorSeer: interval 1 is the base model, a forecast step is the released per-sublayer formula, the forecaster
is the paper's finite-difference Taylor expansion, the plan's FLOPs equal a measured count, bad options are
one-line user errors, and records name the settings."""

import functools
import json
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from elit_bench import cli
from elit_bench.checkpoint import save_checkpoint
from elit_bench.errors import UserError
from elit_bench.flops import _cpu_sdpa_flops, forward_flops
from elit_bench.flow.guidance import Guidance, build_plan
from elit_bench.flow.sampling import evaluation_times, time_grid
from elit_bench.flow.taylorseer import Forecaster, TaylorSeer, grid_positions
from elit_bench.flow.teacache import cached_forward
from elit_bench.models import create_model
from elit_bench.models.layers import modulate
from elit_bench.models.tome import apply_tome
from elit_bench.sampling.generate import Recipe, draw_seed, prepare, sample_seeds
from elit_bench.schema import SampleSettings, check
from helpers import randomize, tiny

TINY = dict(input_size=8, in_channels=1, num_classes=10, hidden_size=64, depth=4, num_heads=4)
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def models():
    return {"dit": randomize(tiny("DiT-S/2", **TINY)).eval(),
            "elit": randomize(tiny("ELIT-DiT-S/2", **TINY, group_size=2)).eval(),
            "uvit": randomize(tiny("UViT-S/2", **TINY)).eval()}


def run(model, **kw):
    return sample_seeds(prepare(model, Recipe(**kw)), SEEDS, range(len(SEEDS)))[0]


# ---------------------------------------------------------------- neutrality
@pytest.mark.parametrize("name,kw", [
    ("dit", dict(steps=6)),
    ("elit", dict(steps=5, budget=2, guidance="cfg", scale=0.5, sampler="heun")),
    ("uvit", dict(steps=5, guidance="cfg", scale=0.5, interval=(0.3, 1.0))),
])
def test_interval_one_is_exactly_the_base_model(models, name, kw):
    model = models[name]
    base = run(model, **kw)
    for order in (0, 3):
        assert torch.equal(run(model, taylorseer=TaylorSeer(order, 1), **kw), base), order
    assert not torch.allclose(run(model, taylorseer=TaylorSeer(1, 2), **kw), base)  # forecasting changes samples


def test_each_pass_forecasts_from_its_own_residuals(models):
    """CFG at scale 0 returns the main pass alone: equal to unguided only if the guide pass's residuals stay
    out of the main pass's forecast."""
    model, ts = models["elit"], TaylorSeer(2, 3)
    unguided = run(model, steps=8, budget=3, taylorseer=ts)
    assert torch.equal(run(model, steps=8, budget=3, guidance="cfg", scale=0.0, taylorseer=ts), unguided)


def noise_and_labels(model):
    draws = [draw_seed(s, s, (1, 8, 8), model.num_classes) for s in SEEDS]
    return torch.stack([d[0] for d in draws]), torch.tensor([d[1] for d in draws])


def test_a_forecast_step_is_the_released_formula_worked_by_hand(models):
    """Euler, 6 steps, N = 2, O = 2: full at 0, 1, 3, 5. Every block adds gate(c_s) * F for its attention and
    MLP outputs F, with at step 2 F = F1 + (F1 - F0) (two full steps: order 1), and at step 4 F = F3 + D1 + D2 / 2,
    D1 = (F3 - F1) / 2, D2 = (D1 - (F1 - F0)) / 2 (released `derivative_approximation` / `taylor_formula`)."""
    model = models["dit"]
    x, y = noise_and_labels(model)
    times = time_grid(6)
    F = {}  # (step, block, sublayer) -> output before its gate
    with torch.no_grad():
        for s in range(6):
            state = dict(model.plan(x))
            h, c = model.embed(x, torch.full((len(SEEDS),), times[s]), y, state)
            rope = model.rope(state["grid"], state)
            for i, block in enumerate(model.blocks):
                shift1, scale1, gate1, shift2, scale2, gate2 = block.adaLN_modulation(c).chunk(6, dim=-1)
                sublayers = [(block.norm1, functools.partial(block.attn, rope=rope), shift1, scale1, gate1),
                             (block.norm2, block.mlp, shift2, scale2, gate2)]
                for k, (norm, sublayer, shift, scale, gate) in enumerate(sublayers):
                    if s == 2:
                        out = F[1, i, k] + (F[1, i, k] - F[0, i, k])
                    elif s == 4:
                        d1 = (F[3, i, k] - F[1, i, k]) / 2
                        d2 = (d1 - (F[1, i, k] - F[0, i, k])) / 2
                        out = F[3, i, k] + d1 + d2 / 2
                    else:
                        out = F[s, i, k] = sublayer(modulate(norm(h), shift, scale))
                    h = h + gate.unsqueeze(1) * out
            x = x + (times[s + 1] - times[s]) * model.unembed(h, c, state)
    torch.testing.assert_close(run(model, steps=6, taylorseer=TaylorSeer(2, 2)), x, rtol=0, atol=1e-6)


def trunk_forecast(model, steps: int, ts: TaylorSeer) -> torch.Tensor:
    """The harness's earlier TaylorSeer, for comparison: the whole trunk residual (trunk output - input)
    forecast, so the gates of a forecast step are extrapolated instead of computed from the current c."""
    x, y = noise_and_labels(model)
    times, full, forecaster = time_grid(steps), ts.full(steps), Forecaster(ts.order)
    with torch.no_grad():
        for s in range(steps):
            t = torch.full((len(SEEDS),), times[s])
            if full[s]:
                v, residual = cached_forward(model, x, t, y, keep_residual=True)
                forecaster.update(residual, s)
            else:
                v, _ = cached_forward(model, x, t, y, residual=forecaster.predict(s))
            x = x + (times[s + 1] - times[s]) * v
    return x


@pytest.mark.parametrize("order,interval", [(0, 3), (1, 3), (2, 5), (4, 4)])
def test_sublayer_forecasts_stay_closer_to_the_base_model_than_a_trunk_forecast(models, order, interval):
    """With t-dependent adaLN gates, forecasting each sublayer and gating it with the current gate (released)
    lands nearer the base model's samples than forecasting the gated trunk residual."""
    model, steps, ts = models["dit"], 20, TaylorSeer(order, interval)
    base = run(model, steps=steps)
    distance = lambda x: ((x - base).norm() / base.norm()).item()
    assert distance(run(model, steps=steps, taylorseer=ts)) < distance(trunk_forecast(model, steps, ts))


def test_a_budget_change_restarts_the_forecast_at_a_full_pass(models):
    """A budget schedule changes the core's latents: the first evaluation at a new budget runs in full."""
    model = models["elit"]
    setup = prepare(model, Recipe(steps=8, schedule="4x4,2x4", taylorseer=TaylorSeer(1, 10)))
    assert [p.skip for ev in setup.plan for p in ev.passes] == [False, False, True, True, False, True, True, True]
    assert run(model, steps=8, schedule="4x4,2x4", taylorseer=TaylorSeer(1, 10)).isfinite().all()


# ---------------------------------------------------------------- the forecaster
def trajectory(coeffs, s):
    """A feature (3, 4) that is a polynomial in the position s: sum_k coeffs[k] s^k (float64)."""
    return sum(c * s ** k for k, c in enumerate(coeffs))


def test_order_one_is_exact_on_a_linear_trajectory_at_any_spacing():
    g = torch.Generator().manual_seed(0)
    coeffs = [torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    for order in (1, 2, 4):
        f = Forecaster(order)
        for s in (0, 1, 5, 9):  # the schedule of N = 4: uneven spacing first
            f.update(trajectory(coeffs, s), s)
        for s in (10, 11, 12, 20):
            torch.testing.assert_close(f.predict(s), trajectory(coeffs, s), rtol=1e-12, atol=1e-12)


def test_order_zero_reuses_the_last_full_feature():
    f = Forecaster(0)
    a, b = torch.ones(2), torch.full((2,), 5.0)
    f.update(a, 0)
    f.update(b, 3)
    assert f.predict(7) is b and len(f.factors) == 1


@pytest.mark.parametrize("degree,spacing", [(2, 1), (3, 2), (4, 3)])
def test_order_m_is_the_papers_backward_difference_expansion(degree, spacing):
    """With spacing N the factors are Delta^i F / N^i (backward differences, np.diff written out), the forecast
    F + sum_i Delta^i F / (i! N^i) k^i (paper Sec. 3.2); on a degree-m polynomial D_m is its m-th derivative."""
    g = torch.Generator().manual_seed(degree)
    coeffs = [torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(degree + 1)]
    positions = [spacing * k for k in range(degree + 1)]
    f = Forecaster(degree)
    for s in positions:
        f.update(trajectory(coeffs, s), s)
    values = np.stack([trajectory(coeffs, s).numpy() for s in positions])
    deltas = [np.diff(values, n=i, axis=0)[-1] / spacing ** i for i in range(degree + 1)]
    for got, want in zip(f.factors, deltas):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(f.factors[degree].numpy(), math.factorial(degree) * coeffs[degree].numpy(),
                               rtol=1e-9, atol=1e-9)
    k = spacing + 1
    want = sum(d * k ** i / math.factorial(i) for i, d in enumerate(deltas))
    np.testing.assert_allclose(f.predict(positions[-1] + k).numpy(), want, rtol=1e-9, atol=1e-9)


def test_a_full_evaluation_at_the_last_position_refreshes_the_value_and_keeps_the_derivatives():
    f = Forecaster(2)
    for s in (0, 1, 2):
        f.update(torch.tensor([float(s * s)]), s)
    derivatives = f.factors[1:]
    f.update(torch.tensor([10.0]), 2)  # Heun: corrector and next predictor at the same grid time
    assert f.factors[0].item() == 10.0 and f.factors[1:] == derivatives


# ---------------------------------------------------------------- schedule and plan
@pytest.mark.parametrize("interval,full", [(3, 18), (4, 14), (5, 11)])
def test_schedule_is_the_released_codes(interval, full):
    """50 steps: the first two full, then one in N (the released DiT code's 2.77x, 3.57x and 4.53x settings)."""
    schedule = TaylorSeer(2, interval).full(50)
    assert schedule[:2] == [True, True] and sum(schedule) == full
    assert [i for i, f in enumerate(schedule) if f][2] == 1 + interval


def test_heun_positions_put_the_corrector_at_the_next_grid_time():
    times = time_grid(3)
    assert grid_positions(times, evaluation_times(times, "heun")) == [0, 1, 1, 2, 2, 3]
    assert grid_positions(times, evaluation_times(times, "euler")) == [0, 1, 2]


def test_a_guide_pass_entering_the_guidance_interval_runs_in_full(models):
    plan = build_plan(models["dit"], time_grid(12), "euler", [None] * 12, Guidance("cfg", 1.0, interval=(0.5, 1.0)),
                      taylorseer=TaylorSeer(2, 4))
    guided = [ev for ev in plan if len(ev.passes) == 2]
    assert not guided[0].passes[1].skip and guided[0].passes[0].skip  # main forecast, guide new
    assert any(ev.passes[1].skip for ev in guided[1:])


# ---------------------------------------------------------------- FLOPs
def measured_sampling_flops(setup) -> float:
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        sample_seeds(setup, SEEDS, range(len(SEEDS)))
    return counter.get_total_flops() / len(SEEDS)


@pytest.mark.parametrize("name,kw", [
    ("dit", dict(steps=7, taylorseer=TaylorSeer(2, 3))),
    ("elit", dict(steps=4, sampler="heun", budget=2, guidance="ccfg", scale=0.5, guide_budget=1,
                  interval=(0.2, 1.0), taylorseer=TaylorSeer(1, 2))),
    ("uvit", dict(steps=6, guidance="cfg", scale=1.0, taylorseer=TaylorSeer(4, 4))),
])
def test_plan_flops_equal_a_measured_count(models, name, kw):
    model = models[name]
    setup = prepare(model, Recipe(**kw))
    forecast = sum(p.skip for ev in setup.plan for p in ev.passes)
    assert forecast > 0
    assert measured_sampling_flops(setup) == pytest.approx(setup.flops_per_sample, rel=1e-9)
    base = prepare(model, Recipe(**{**kw, "taylorseer": None}))
    assert setup.flops_per_sample < base.flops_per_sample


def test_plan_flops_equal_a_measured_count_with_tome(models):
    """ToMe's matching runs at full evaluations only: a forecast block merges nothing."""
    model = apply_tome(randomize(tiny("DiT-S/2", **TINY)).eval(), 0.5)
    setup = prepare(model, Recipe(steps=5, taylorseer=TaylorSeer(1, 2)))
    assert measured_sampling_flops(setup) == pytest.approx(setup.flops_per_sample, rel=1e-9)


def forecast_macs(model) -> int:
    """What a forecast pass of a plain DiT still computes: embed, final and the 6d x d adaLN of every block."""
    macs, d = model.macs(), model.hidden_size
    return macs["embed"] + macs["final"] + model.depth * d * 6 * d


def test_forecast_passes_cost_embed_final_and_modulation_on_the_paper_model():
    with torch.device("meta"):
        model = create_model("DiT-XL/2", resolution=256)
    setup = prepare(model, Recipe(steps=50, taylorseer=TaylorSeer(4, 4)))
    assert setup.flops_per_sample == 14 * forward_flops(model) + 36 * 2 * forecast_macs(model)
    # the released 3.57x is 50 / 14 full steps; the forecast passes' embed, final and adaLN cost 0.5% more
    assert 50 * forward_flops(model) / setup.flops_per_sample == pytest.approx(3.55, abs=0.005)


def test_models_it_cannot_forecast_block_by_block_are_refused():
    """Random dropping keeps other latents at every evaluation (a latent's forecast would mix slots); DyDiT runs
    its blocks at routed widths, outside `DiTBlock.forward`."""
    random = tiny("ELIT-DiT-S/2", **TINY, group_size=2, drop="random").eval()
    with pytest.raises(UserError, match="random dropping") as err:
        prepare(random, Recipe(steps=4, budget=2, taylorseer=TaylorSeer(1, 2)))
    assert "\n" not in str(err.value)
    prepare(random, Recipe(steps=4, taylorseer=TaylorSeer(1, 2)))  # the full budget draws nothing
    with pytest.raises(UserError, match="DyDiT runs its blocks"):
        prepare(tiny("DyDiT-S/2", **TINY).eval(), Recipe(steps=4, taylorseer=TaylorSeer(1, 2)))


# ---------------------------------------------------------------- options
@pytest.mark.parametrize("kw,needle", [
    (dict(taylorseer=TaylorSeer(-1, 3)), "order"),
    (dict(taylorseer=TaylorSeer(1.5, 3)), "order"),
    (dict(taylorseer=TaylorSeer(True, 3)), "order"),
    (dict(taylorseer=TaylorSeer(1, 0)), "interval"),
    (dict(taylorseer=TaylorSeer(1, 2), teacache=0.1), "use one of them"),
])
def test_bad_options_are_one_line_user_errors(kw, needle):
    with pytest.raises(UserError, match=needle) as err:
        Recipe(**kw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value,needle", [({"order": 1}, "interval"), ({"order": -1, "interval": 2}, "order"),
                                          ({"order": 1, "interval": 0}, "interval"), (3, "taylorseer")])
def test_suite_option_is_checked(value, needle):
    with pytest.raises(UserError, match=needle) as err:
        check("sample", SampleSettings, {"taylorseer": value})
    assert "\n" not in str(err.value)


def test_suite_option_reaches_the_recipe_and_plans_on_a_meta_model():
    recipe = check("sample", SampleSettings, {"taylorseer": {"order": 3, "interval": 3}}).recipe(None)
    assert recipe.taylorseer == TaylorSeer(3, 3)
    with torch.device("meta"):
        model = create_model("DiT-XL/2", resolution=256)
    assert sum(ev.passes[0].skip for ev in prepare(model, recipe).plan) == 40 - 14


# ---------------------------------------------------------------- the command and its record
def test_sample_command_records_the_settings_and_the_forecasts(models, tmp_path, capsys):
    model = models["dit"]
    sd = model.state_dict()
    data = {"name": "digits", "kind": "pixels", "resolution": 8, "channels": 1, "num_classes": 10, "frames": None,
            "crop": None, "autoencoder": None}
    ckpt = tmp_path / "dit.pt"
    save_checkpoint(ckpt, {"model": sd, "ema": sd, "step": 0, "config": {"model": "DiT-S/2", "model_kwargs": TINY,
                                                                         "data": data}})
    args = ["sample", str(ckpt), "--num", "2", "--steps", "8", "--no-progress"]
    assert cli.main([*args, "--out", str(tmp_path / "ts"), "--taylorseer", "2", "3"]) == 0
    assert "TaylorSeer forecast 4 of 8 evaluations" in capsys.readouterr().out
    rec = json.loads((tmp_path / "ts" / "samples.json").read_text())
    assert (rec["taylorseer_order"], rec["taylorseer_interval"], rec["taylorseer_forecast_evaluations"]) == (2, 3, 4)
    assert rec["teacache_skipped_steps"] == 0 and rec["settings"]["taylorseer"] == {"order": 2, "interval": 3}
    assert rec["flops_per_sample"] == 4 * forward_flops(model) + 4 * 2 * forecast_macs(model)
    assert cli.main([*args, "--out", str(tmp_path / "bad"), "--taylorseer", "1", "0"]) == 2
    assert cli.main([*args, "--out", str(tmp_path / "both"), "--taylorseer", "1", "2", "--teacache", "0.1"]) == 2
