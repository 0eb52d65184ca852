"""Training mechanics, each against its definition on a tiny model with a fixed seed: the budget draw J~ ~
Uniform{J_min..J_max}, the class-dropout rate, the linear LR warmup, gradient clipping and the EMA update
(paper Sec. 4.1: "learning rate 1e-4 with 10k warmup steps, gradient clipping at 1.0, Adam, and EMA")."""

import numpy as np
import pytest
import torch
from scipy import stats

import elit_bench.training.trainer as trainer_module
from elit_bench.distributed import Dist
from elit_bench.training.config import resolve_config
from elit_bench.training.trainer import DataOrder, Trainer

TINY = {"hidden_size": 32, "depth": 3, "num_heads": 2}
P_VALUE = 1e-3  # two-sided level for the statistical checks below (fixed seeds: a pass is reproducible)


def make_trainer(tmp_path, model="ELIT-DiT-S/2", model_kwargs=None, **over):
    cfg = {"model": model, "data": "digits", "resolution": 8, "batch": 8, "steps": 100, "lr": 1e-3, "warmup": 1,
           "progress": False, "out": str(tmp_path), "seed": 3,
           "model_kwargs": {**TINY, **({"group_size": 2} if model.startswith("ELIT") else {}), **(model_kwargs or {})},
           **over}
    return Trainer(resolve_config(cfg), Dist())


def params(model):
    return {n: p.detach().clone().double() for n, p in model.named_parameters()}


# ---------------------------------------------------------------- J~ ~ Uniform{J_min..J_max}
@pytest.mark.parametrize("budget_range, expected", [("3:10", range(3, 11)), (None, range(1, 17))])
def test_budgets_are_drawn_uniformly_over_the_configured_range(tmp_path, budget_range, expected):
    # catches: an off-by-one range (J_max never drawn, or J_min - 1), the full range drawn when a narrower one is
    # configured, or a non-uniform draw (e.g. biased to large budgets); chi-square over 200 draws per budget
    over = {"budget_range": budget_range} if budget_range else {"multi_budget": True}
    trainer = make_trainer(tmp_path, model_kwargs={"group_size": 4}, resolution=16, **over)  # 4 groups, J = 16
    draws = [trainer.variants[trainer.draw_variant(step)][0] for step in range(200 * len(expected))]
    counts = np.array([draws.count(b) for b in expected])
    assert set(draws) == set(expected)
    chi2 = ((counts - 200) ** 2 / 200).sum()
    assert chi2 < stats.chi2.ppf(1 - P_VALUE, df=len(expected) - 1), counts


# ---------------------------------------------------------------- class dropout, and what reaches the model
def capture_loss_inputs(monkeypatch):
    seen = []
    real = trainer_module.rectified_flow_loss

    def spy(net, x, y, t, noise, mask=None, **kw):
        seen.append({"y": y.clone(), "budget": kw.get("budget")})
        return real(net, x, y, t, noise, mask, **kw)

    monkeypatch.setattr(trainer_module, "rectified_flow_loss", spy)
    return seen


@pytest.mark.parametrize("rate", [0.1, 0.0])
def test_class_dropout_rate_and_null_label(tmp_path, monkeypatch, rate):
    # catches: a dropout that never fires or fires at 1 - p, one coin per batch instead of per sample, a null label
    # other than num_classes, kept samples whose labels change, or a drawn budget that does not reach the model
    seen = capture_loss_inputs(monkeypatch)
    trainer = make_trainer(tmp_path, batch=200, class_dropout=rate, multi_budget=True)
    order = DataOrder(len(trainer.dataset), trainer.cfg["seed"])  # the same data stream, replayed
    budgets = []
    for _ in range(5):
        v = trainer.train_step()[2]
        budgets.append(trainer.variants[v][0])
    null = trainer.model.num_classes
    dropped_per_step = []
    for step in seen:
        true = trainer.dataset.load(order.take(200))[1]
        dropped = step["y"] == null
        assert torch.equal(step["y"][~dropped], true[~dropped])
        dropped_per_step.append(int(dropped.sum()))
    assert [s["budget"] for s in seen] == budgets
    total = sum(dropped_per_step)
    if rate == 0:
        assert total == 0
    else:
        lo, hi = stats.binom.interval(1 - P_VALUE, 1000, rate)
        assert lo <= total <= hi, dropped_per_step
        assert max(dropped_per_step) < 200 and sum(d > 0 for d in dropped_per_step) == 5  # per sample, every step


# ---------------------------------------------------------------- learning-rate warmup
def test_lr_warmup_is_linear_then_constant(tmp_path):
    # catches: a warmup that starts at 0 (first step wasted), ends late or never, decays afterwards, or a scheduler
    # stepped before the optimizer; the first update's size is measured, not read from the scheduler
    trainer = make_trainer(tmp_path, lr=1e-3, warmup=4)
    lrs = []
    before = params(trainer.model)
    for step in range(7):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.train_step()
        if step == 0:
            moved = max(float((p.detach().double() - before[n]).abs().max()) for n, p in trainer.model.named_parameters())
    np.testing.assert_allclose(lrs, [1e-3 * f for f in (0.25, 0.5, 0.75, 1, 1, 1, 1)], rtol=1e-12)
    # Adam's first step moves each weight by lr * g / (|g| + eps): by lr itself where |g| >> eps
    assert moved == pytest.approx(0.25e-3, rel=1e-3)


# ---------------------------------------------------------------- gradient clipping
@pytest.mark.parametrize("clip", [1e-6, None])
def test_gradient_clipping_bounds_the_norm_the_optimizer_uses(tmp_path, clip):
    # catches: clipping skipped, clipping by value, clipping after the optimizer step, or a reported norm that is
    # the clipped one; Adam's first step is checked against torch's definition on the gradients left behind
    trainer = make_trainer(tmp_path, grad_clip=clip, lr=1e-3, warmup=1)
    before = params(trainer.model)
    raw_norm = float(trainer.train_step()[1])
    grads = {n: p.grad.double() for n, p in trainer.model.named_parameters() if p.grad is not None}
    total = float(torch.sqrt(sum((g ** 2).sum() for g in grads.values())))
    if clip is None:
        assert total == pytest.approx(raw_norm, rel=1e-5)
        return
    assert raw_norm > 100 * clip and total == pytest.approx(clip, rel=1e-5)
    eps = trainer.optimizer.param_groups[0]["eps"]
    for n, p in trainer.model.named_parameters():  # first Adam step: m^ = g, v^ = g^2, update lr * g / (|g| + eps)
        g = grads.get(n, torch.zeros_like(before[n]))
        expected = before[n] - 1e-3 * g / (g.abs() + eps)
        torch.testing.assert_close(p.detach().double(), expected, rtol=0, atol=1e-7, msg=n)


# ---------------------------------------------------------------- EMA
def test_ema_update_value(tmp_path):
    # catches: decay and 1 - decay swapped, an EMA fed the weights from before the step, or an EMA never updated
    decay = 0.9  # not the paper's 0.9999, so one step's change is far above float32 rounding
    trainer = make_trainer(tmp_path, ema_decay=decay, lr=1e-3, warmup=1)
    ema = params(trainer.ema)
    assert all(torch.equal(ema[n], p) for n, p in params(trainer.model).items())  # starts as the model
    for _ in range(2):
        trainer.train_step()
        model = params(trainer.model)
        assert any(not torch.equal(model[n], ema[n]) for n in model)
        expected = {n: decay * ema[n] + (1 - decay) * model[n] for n in model}
        ema = params(trainer.ema)
        for n in model:
            torch.testing.assert_close(ema[n], expected[n], rtol=0, atol=1e-7, msg=n)
