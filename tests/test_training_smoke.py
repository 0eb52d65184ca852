"""The trainer learns, trains every model family and variant strategy, and logs what it promises."""

import numpy as np
import pytest
import torch

from elit_bench.checkpoint import load_checkpoint
from elit_bench.training import train
from elit_bench.training.config import build_meta_model, resolve_config, training_variants, variant_batches

TINY_KW = {"hidden_size": 32, "depth": 3, "num_heads": 2}
BASE = {"data": "digits", "resolution": 8, "batch": 8, "steps": 2, "lr": 1e-3, "warmup": 1, "log_every": 1,
        "progress": False}



def test_tiny_multi_budget_elit_learns_digits(tmp_path):
    """150 CPU steps of a tiny ELIT (16 px, 4 groups of 4x4 tokens, J~ in 1..16) cut the loss by half."""
    summary = train({**BASE, "model": "ELIT-DiT-S/2", "resolution": 16, "batch": 16, "steps": 150, "lr": 2e-3,
                     "warmup": 20, "multi_budget": True, "model_kwargs": {**TINY_KW, "group_size": 4},
                     "log_every": 10, "out": str(tmp_path)})
    losses = summary["losses"]
    assert len(losses) == 150 and len(set(summary["budgets"])) > 8
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])


@pytest.mark.parametrize("model, extra", [
    ("DiT-S/2", {}),
    ("UViT-S/2", {}),
    ("HDiT-S/2", {}),
    ("MultiPatch-DiT-S/2", {}),
    ("ELIT-HDiT-S/2", {"group_size": 2, "depth": 7}),  # merge and split inside the latent core
    ("ELIT-UViT-S/2", {"group_size": 2, "drop": "random"}),
])
def test_every_family_trains(tmp_path, monkeypatch, model, extra):
    """One optimizer step lowers the loss on the batch it was computed from (same t, noise, labels, budget)."""
    # catches: an optimizer that does not step, steps the wrong parameters (a copy, not the trained model) or the
    # wrong way, or a loss detached from some family's forward; finite losses alone pass all of these
    import elit_bench.training.trainer as trainer_module
    from elit_bench.models import create_model

    seen = []
    real = trainer_module.rectified_flow_loss

    def spy(net, x, y, t, noise, mask=None, **kw):
        gen = kw.get("generator")
        seen.append((x, y, t, noise, mask, dict(kw), gen.get_state() if gen is not None else None))
        return real(net, x, y, t, noise, mask, **kw)

    monkeypatch.setattr(trainer_module, "rectified_flow_loss", spy)
    summary = train({**BASE, "model": model, "steps": 1, "lr": 1e-4, "model_kwargs": {**TINY_KW, **extra},
                     "out": str(tmp_path)})
    assert summary["step"] == 1 and np.isfinite(summary["losses"]).all()
    ckpt = load_checkpoint(tmp_path / "checkpoints/last.pt")
    stepped = create_model(ckpt["config"]["model"], **ckpt["config"]["model_kwargs"])
    stepped.load_state_dict(ckpt["model"])
    x, y, t, noise, mask, kw, gen_state = seen[0]
    if gen_state is not None:
        kw["generator"] = torch.Generator().set_state(gen_state)
    with torch.no_grad():
        after = float(real(stepped, x, y, t, noise, mask, **kw))
    assert after < summary["losses"][0]


def test_padded_digits_train_on_the_padded_grid(tmp_path):
    summary = train({**BASE, "model": "ELIT-DiT-S/2", "data": "padded-digits",
                     "model_kwargs": {**TINY_KW, "group_size": 2, "pos_embed": "learned"}, "out": str(tmp_path)})
    cfg = load_checkpoint(tmp_path / "checkpoints/last.pt")["config"]
    assert cfg["model_kwargs"]["input_size"] == 16 and cfg["data"]["crop"] == [4, 4, 8, 8]
    assert summary["step"] == 2


def test_scaled_batch_follows_the_budget(tmp_path):
    config = {**BASE, "model": "ELIT-DiT-S/2", "steps": 6, "multi_budget": True, "batch_mode": "scaled",
              "model_kwargs": {**TINY_KW, "group_size": 2}, "out": str(tmp_path)}
    summary = train(config)
    cfg = resolve_config(config)
    model = build_meta_model(cfg)
    variants = training_variants(model, cfg)
    per_budget = dict(zip((b for b, _ in variants), variant_batches(model, variants, 8, "scaled")))
    assert summary["batches"] == [per_budget[b] for b in summary["budgets"]]
    assert len(set(summary["batches"])) > 1


def test_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train({**BASE, "model": "ELIT-DiT-S/2", "steps": 3, "budget_range": "1:3", "out": str(tmp_path),
           "model_kwargs": {**TINY_KW, "group_size": 2}})
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"train/{k}" for k in ("loss", "lr", "grad_norm", "budget", "images_per_s", "model_tflops_per_s")} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert {e.value for e in events.Scalars("train/budget")} <= {1, 2, 3}
