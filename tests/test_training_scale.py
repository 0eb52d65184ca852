"""Training at scale: gradient accumulation, activation checkpointing, non-finite steps and divergence, and the
memory plan (micro-batch and checkpointing that fit a GPU) the dry run prints and `micro_batch: auto` uses."""


import numpy as np
import pytest
import torch

import elit_bench.training.memory as memory
import elit_bench.training.trainer as trainer_module
from elit_bench.checkpoint import load_checkpoint
from elit_bench.distributed import Dist
from elit_bench.errors import UserError
from elit_bench.models import create_model
from elit_bench.models.backbones import Backbone
from elit_bench.training import train
from elit_bench.training.config import resolve_config
from elit_bench.training.memory import Activations, plan_memory
from elit_bench.training.trainer import Trainer
from helpers import randomize, train_ddp

TINY = {"hidden_size": 32, "depth": 3, "num_heads": 2}
# multi-budget ELIT with random dropping and class dropout: every per-iteration draw is exercised
ELIT_MB = {"model": "ELIT-DiT-S/2", "multi_budget": True, "model_kwargs": {**TINY, "group_size": 2, "drop": "random"}}
DIT = {"model": "DiT-S/2", "model_kwargs": TINY}


def make_trainer(tmp_path, **over):
    cfg = {"data": "digits", "resolution": 8, "batch": 8, "steps": 100, "lr": 1e-3, "warmup": 1, "seed": 3,
           "progress": False, "out": str(tmp_path), **over}
    return Trainer(resolve_config(cfg), Dist())


def run_steps(trainer, n):
    norms = [float(trainer.train_step()[1]) for _ in range(n)]
    return norms, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


# ---------------------------------------------------------------- gradient accumulation
@pytest.mark.parametrize("setup", [DIT, ELIT_MB], ids=["DiT", "ELIT-multi-budget-random-drop"])
def test_micro_batches_give_the_unaccumulated_step(tmp_path, setup):
    # catches: unweighted chunk losses (4x the gradient: the grad norms differ), t / noise / class dropout or the
    # kept latents drawn per chunk instead of for the whole batch (different gradients), a chunk left out
    whole = make_trainer(tmp_path / "whole", micro_batch=8, **setup)
    chunked = make_trainer(tmp_path / "chunked", micro_batch=2, **setup)
    assert chunked.micro_batch == 2
    norms_a, weights_a = run_steps(whole, 4)
    norms_b, weights_b = run_steps(chunked, 4)
    assert norms_b == pytest.approx(norms_a, rel=1e-5)
    for key in weights_a:
        torch.testing.assert_close(weights_b[key], weights_a[key], rtol=1e-5, atol=1e-6)


def test_uneven_micro_batches_weight_each_chunk_by_its_size(tmp_path):
    # 8 = 3 + 3 + 2: the last chunk counts 2/8, not 1/3
    _, weights_a = run_steps(make_trainer(tmp_path / "a", **DIT), 3)
    _, weights_b = run_steps(make_trainer(tmp_path / "b", micro_batch=3, **DIT), 3)
    for key in weights_a:
        torch.testing.assert_close(weights_b[key], weights_a[key], rtol=1e-5, atol=1e-6)


def test_two_processes_with_micro_batches_follow_one_process(tmp_path):
    # DDP with no_sync on all chunks but the last: 2 ranks x 2 chunks of 2 equal one process with the whole batch
    config = {**ELIT_MB, "data": "digits", "resolution": 8, "batch": 8, "steps": 3, "lr": 1e-3, "warmup": 1,
              "log_every": 1, "progress": False}
    train({**config, "out": str(tmp_path / "single")})
    ranks = train_ddp({**config, "micro_batch": 2, "out": str(tmp_path / "ddp")}, tmp_path)
    assert ranks[0]["micro_batch"] == 2
    a = load_checkpoint(tmp_path / "single/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "ddp/checkpoints/last.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- activation checkpointing
def saved_bytes_and_grads(model, checkpointing: bool):
    for module in model.modules():
        if isinstance(module, Backbone):
            module.checkpoint_blocks = checkpointing
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, model.in_channels, *model.input_shape, generator=gen)
    t, y = torch.rand(4, generator=gen), torch.randint(model.num_classes, (4,), generator=gen)
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    model.zero_grad()
    kwargs = {"generator": torch.Generator().manual_seed(1)} if model.max_budget else {}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x, t, y, **kwargs)
    out.square().mean().backward()
    return total[0], {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["DiT-S/2", "UViT-S/2", "HDiT-S/2", "ELIT-DiT-S/2"])
def test_activation_checkpointing_keeps_less_and_gives_the_same_gradients(name):
    kwargs = {"input_size": 16, "in_channels": 1, "num_classes": 10, "hidden_size": 32, "depth": 4, "num_heads": 2}
    if name.startswith("ELIT"):
        kwargs.update(group_size=2, drop="random")
    torch.manual_seed(0)
    model = randomize(create_model(name, **kwargs))
    saved_plain, grads_plain = saved_bytes_and_grads(model, False)
    saved_ckpt, grads_ckpt = saved_bytes_and_grads(model, True)
    assert saved_ckpt < 0.7 * saved_plain  # the blocks' activations are not kept
    assert grads_ckpt.keys() == grads_plain.keys()
    for key in grads_plain:
        torch.testing.assert_close(grads_ckpt[key], grads_plain[key], rtol=1e-5, atol=1e-7)


def test_trainer_with_activation_checkpointing_trains_the_same_weights(tmp_path):
    plain = make_trainer(tmp_path / "a", activation_checkpointing=False, **ELIT_MB)
    ckpt = make_trainer(tmp_path / "b", activation_checkpointing=True, **ELIT_MB)
    assert all(m.checkpoint_blocks for m in ckpt.model.modules() if isinstance(m, Backbone))
    _, weights_a = run_steps(plain, 3)
    _, weights_b = run_steps(ckpt, 3)
    for key in weights_a:
        torch.testing.assert_close(weights_b[key], weights_a[key], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- non-finite steps and divergence
def test_a_non_finite_step_is_skipped_and_counted(tmp_path, monkeypatch):
    # catches: a NaN step that updates the weights or the EMA, a counter that does not count, a run that stops
    # at the first one
    real, calls = trainer_module.rectified_flow_loss, []

    def poisoned(*args, **kw):
        calls.append(1)
        loss = real(*args, **kw)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(trainer_module, "rectified_flow_loss", poisoned)
    trainer = make_trainer(tmp_path, **DIT)
    trainer.train_step()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
    trainer.train_step()  # the NaN one
    assert trainer.nonfinite_steps == 1 and trainer.step == 2
    for key in before:
        assert torch.equal(trainer.model.state_dict()[key], before[key])
        assert torch.equal(trainer.ema.state_dict()[key], ema_before[key])
    trainer.train_step()
    assert trainer.nonfinite_in_a_row == 0 and trainer.nonfinite_steps == 1
    assert not torch.equal(trainer.model.state_dict()["final_layers.0.linear.weight"],
                           before["final_layers.0.linear.weight"])


def test_a_diverging_run_stops_with_a_clear_error_and_no_nan_checkpoint(tmp_path):
    out = tmp_path / "run"
    config = {**DIT, "data": "digits", "resolution": 8, "batch": 8, "steps": 40, "lr": 1e12, "grad_clip": None,
              "warmup": 0, "ckpt_every": 1, "progress": False, "out": str(out), "max_nonfinite_steps": 3}
    with pytest.raises(UserError, match=r"training diverged at step \d+: .*3 steps in a row.*lower train.lr"):
        train(config)
    ckpt = out / "checkpoints/last.pt"
    if ckpt.exists():  # whatever was written holds finite weights
        state = load_checkpoint(ckpt)
        assert all(torch.isfinite(v).all() for v in state["model"].values())
        assert state["step"] < 40


# ---------------------------------------------------------------- the memory plan
GiB = 2 ** 30


def test_plan_picks_the_largest_micro_batch_that_fits_then_evens_it_out():
    act = Activations(per_sample=2 * GiB, fixed=GiB, per_sample_checkpointed=GiB // 4, fixed_checkpointed=GiB // 8)
    capacity = 80e9 * memory.USABLE_FRACTION
    state = memory.state_bytes(10 ** 9, 8)
    plan = plan_memory(act, 10 ** 9, 48, 8, 80e9)
    largest = int((capacity - state - GiB) // (2 * GiB))
    assert not plan.checkpointing and plan.fits
    assert plan.micro_batch == -(-48 // -(-48 // largest))  # same number of chunks, evened out
    assert plan.peak == state + GiB + 2 * GiB * plan.micro_batch
    # nothing fits without checkpointing: it turns on, and the micro-batch is the one that fits with it
    small = plan_memory(act, 10 ** 9, 48, 8, (state + 2.5 * GiB) / memory.USABLE_FRACTION)
    assert small.checkpointing and small.fits and small.micro_batch >= 1
    # an explicit setting is kept, and the plan says whether it fits
    fixed = plan_memory(act, 10 ** 9, 48, 8, 80e9, micro_batch=48, checkpointing=False)
    assert (fixed.micro_batch, fixed.checkpointing, fixed.fits) == (48, False, False)


def test_fake_trace_counts_what_a_real_forward_saves():
    # the fake-tensor trace sees the same saved tensors as a real CPU forward (fp32 here; weights excluded)
    kwargs = {"input_size": 16, "in_channels": 1, "num_classes": 10, "hidden_size": 32, "depth": 2, "num_heads": 2}
    act = memory.measure_activations("DiT-S/2", kwargs, bf16=False)
    model = create_model("DiT-S/2", **kwargs)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    sizes = []
    for batch in (1, 2):
        seen, x = set(), torch.randn(batch, 1, 16, 16)

        def pack(tensor, seen=seen, batch=batch):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in weights and storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                sizes.append((batch, storage.nbytes()))
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = model(x, torch.rand(batch), torch.zeros(batch, dtype=torch.long))
        del out
    real = [sum(n for b, n in sizes if b == batch) for batch in (1, 2)]
    assert act.per_sample == real[1] - real[0] and act.fixed == 2 * real[0] - real[1]
    assert 0 < act.per_sample_checkpointed < act.per_sample


def test_auto_micro_batch_is_the_dry_run_plan(tmp_path, monkeypatch):
    # a run with micro_batch: auto on a GPU uses the plan the dry run prints for that GPU's memory
    from elit_bench.suites.estimate import estimate_memory
    from elit_bench.suites.spec import TrainingRun

    config = {**ELIT_MB, "data": "digits", "resolution": 16, "batch": 64, "steps": 10}
    cfg = resolve_config({**config, "out": str(tmp_path)})
    act = memory.measure_activations(cfg["model"], cfg["model_kwargs"], (None, None), True)
    with torch.device("meta"):
        params = sum(p.numel() for p in create_model(cfg["model"], **cfg["model_kwargs"]).parameters())
    # a GPU that holds 5.5 samples: 5 fit, so 64 runs as 13 chunks of 5 ... evened out to 13 chunks of 5
    gpu = (memory.state_bytes(params, 1) + act.fixed + 5.5 * act.per_sample) / memory.USABLE_FRACTION
    monkeypatch.setattr(trainer_module, "device_memory", lambda device: gpu)
    trainer = make_trainer(tmp_path, **{k: v for k, v in config.items() if k not in ("data", "resolution")},
                           resolution=16)
    planned = estimate_memory([TrainingRun("s", "x", "r", train=config)], gpu_gb=gpu / 1e9, world=1)
    (plan,) = planned.values()
    assert plan["micro_batch"] == trainer.micro_batch == 5
    assert plan["checkpointing"] is False and trainer.checkpointing is False
    assert plan["fits"] and plan["accumulation"] == 13


# ---------------------------------------------------------------- data: flipped views and prefetching
def test_data_order_draws_one_view_per_sample_and_peek_does_not_consume():
    from elit_bench.training.trainer import DataOrder

    plain, views = DataOrder(50, 7), DataOrder(50, 7, views=2)
    a, b = plain.take(120), views.take(120)
    assert ((b % 50) == a).all()  # the same samples in the same order; one view each
    assert 0.3 < (b >= 50).mean() < 0.7
    assert np.array_equal(views.peek(30), views.take(30)) and views.state() == {"epoch": 3, "index": 0}


def test_the_next_batch_is_prefetched_for_exactly_the_indices_the_next_step_takes(tmp_path):
    trainer = make_trainer(tmp_path, **ELIT_MB)
    trainer.train_step()
    pending, _ = trainer.loader.pending
    following = trainer.batches[trainer.draw_variant(trainer.step)]
    assert np.array_equal(pending, trainer.order.peek(following))
    trainer.train_step()  # uses it
    assert trainer.loader.pending is not None and not np.array_equal(trainer.loader.pending[0], pending)


SHARDED_WORLD = 64  # an FSDP run (a model no GPU holds whole: Qwen-Image, 20B) is planned on 8 nodes of 8 GPUs


@pytest.mark.slow
def test_every_paper_scale_training_run_fits_an_80_gb_gpu():
    # the dry run's plan for every suite at paper scale (about a minute, most of it expanding the suites; the
    # fake-tensor trace traces each distinct block shape once): a micro-batch (checkpointing if need be) that fits
    from elit_bench.suites.estimate import estimate_memory
    from elit_bench.suites.spec import list_suites, load_suite

    planned = 0
    for name in list_suites():
        suite = load_suite(name)
        if "paper" not in suite.raw["scales"]:
            continue
        runs = suite.runs("paper", {}, {}, strict_variables=False)
        for sharded, world in ((False, 1), (True, SHARDED_WORLD)):
            group = [r for r in runs if (getattr(r, "train", {}).get("sharding") == "fsdp") == sharded]
            for run_id, plan in estimate_memory(group, 80.0, world).items():
                assert plan["fits"] and plan["peak_gib"] <= plan["usable_gib"], (name, run_id, plan)
                planned += 1
    assert planned > 50
