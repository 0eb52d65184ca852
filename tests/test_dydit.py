"""DyDiT: the base DiT exactly with every router open, FLOPs that match `macs()` at any router state, a FLOPs
loss that pulls the realised cost to its target, and fine-tuning from a DiT checkpoint."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from elit_bench.checkpoint import load_checkpoint, save_checkpoint
from elit_bench.errors import UserError
from elit_bench.flops import _cpu_sdpa_flops, forward_flops, measure_forward_flops
from elit_bench.models.loading import load_init_weights
from elit_bench.training import train
from elit_bench.training.config import resolve_config
from helpers import randomize, tiny, tiny_suite

T = 0.3


def inputs(batch: int = 2, t=None):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, 1, 16, 16, generator=g), torch.arange(batch) % 10
    return x, torch.full((batch,), t) if t is not None else torch.rand(batch, generator=g), y


def counted(model, x, t, y) -> int:
    """FLOPs of one forward, counted by torch (with the CPU attention kernel's formula)."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(x, t, y)
    return counter.get_total_flops()


def pair():
    """A randomized tiny DyDiT and the DiT with the same weights."""
    model = randomize(tiny("DyDiT-S/2")).eval()
    base = tiny("DiT-S/2").eval()
    base.load_state_dict(model.backbone.state_dict())
    return model, base


def test_open_routers_are_the_base_dit():
    """Fresh routers keep every head, group and token: same weights, same output bit for bit."""
    model, base = pair()
    x, t, y = inputs(3)
    with torch.no_grad():
        want = base(x, t, y)
        assert torch.equal(model(x, t, y), want)
        assert model.usage.mlp_tokens == [3 * 64] * model.depth  # every token went through every MLP
        model.routers[2].heads.bias[1] = -50.0  # one head of one block closed: the output moves
        assert not torch.equal(model(x, t, y), want)


def close(model):
    """Router states that are neither open nor closed: some heads and groups off in some blocks, a block whose
    MLP sees no token, one where it sees all, and data-dependent tokens elsewhere."""
    with torch.no_grad():
        for i, r in enumerate(model.routers):
            r.heads.bias[: i % 3] = -50.0
            r.groups.bias[i % 2:] = -50.0
            r.tokens[2].bias.fill_({0: -50.0, 1: 50.0}.get(i, 0.0))
    return model


def test_measured_flops_equal_macs_at_several_router_states():
    model, _ = pair()
    full = forward_flops(model)
    assert measure_forward_flops(model) == full  # all open: the analytic full cost
    close(model)
    x, t, y = inputs(1, T)
    model.reset_usage()
    measured = counted(model, x, t, y)
    L = 64
    shares = [n / L for n in model.usage.mlp_tokens]
    assert shares[0] == 0 and shares[1] == 1 and 0 < sum(shares[2:]) < len(shares) - 2
    assert measured == forward_flops(model, t=T, tokens=shares) == model.recorded_flops(1) < full
    # timestep-dependent width: rows of one batch at different widths run apart; the record sums them
    with torch.no_grad():
        for r in model.routers:
            r.heads.weight.normal_(std=30.0)
            r.heads.bias.zero_()
    times = [0.05, 0.5, 0.95]
    assert len({tuple(model.width_at(s)) for s in times}) > 1
    model.reset_usage()
    x, _, y = inputs(3)
    assert counted(model, x, torch.tensor(times), y) == model.recorded_flops(1) == 3 * model.recorded_flops(3)


def test_flops_loss_pulls_realised_flops_to_the_target():
    """A few Adam steps on the FLOPs-target loss alone close most of the gap; eval FLOPs fall with it."""
    torch.manual_seed(0)
    model = randomize(tiny("DyDiT-S/2", flops_target=0.4))
    x, t, y = inputs(8)

    def gap():
        model.train()(x, t, y)
        return model.auxiliary_loss()

    def sampled():
        model.eval().reset_usage()
        with torch.no_grad():
            model(x, t, y)
        return model.recorded_flops(len(x))

    before, flops_before = math.sqrt(gap().item() / model.flops_weight), sampled()
    optimizer = torch.optim.Adam(model.routers.parameters(), lr=0.5)
    for _ in range(40):
        optimizer.zero_grad()
        gap().backward()
        optimizer.step()
    after = math.sqrt(gap().item() / model.flops_weight)
    assert before > 0.55 and after < 0.3 * before
    assert sampled() < 0.8 * flops_before


def test_init_from_a_dit_checkpoint(tmp_path):
    """The DiT's (EMA) weights land in the backbone, the routers keep their init; a key that fits nowhere is one
    UserError line naming it."""
    model, base = pair()
    randomize(base, seed=3)
    state = base.state_dict()
    path = tmp_path / "dit.pt"
    save_checkpoint(path, {"model": {k: v + 1 for k, v in state.items()}, "ema": state, "step": 1,
                           "config": {"model": "DiT-S/2"}})
    routers = {k: v.clone() for k, v in model.routers.state_dict().items()}
    load_init_weights(model, path)
    assert all(torch.equal(v, state[k]) for k, v in model.backbone.state_dict().items())
    assert all(torch.equal(v, routers[k]) for k, v in model.routers.state_dict().items())
    save_checkpoint(path, {"ema": {**state, "blocks.0.extra": torch.zeros(1)}, "step": 1, "config": {}})
    with pytest.raises(UserError) as err:
        load_init_weights(model, path)
    assert "backbone.blocks.0.extra" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="train.init"):
        resolve_config({"model": "DyDiT-S/2", "init": str(tmp_path / "missing.pt"), "out": str(tmp_path / "r")})


def test_fine_tuning_trains_with_the_flops_loss(tmp_path):
    """`train` from a DiT run: a few steps, finite losses, and the routers move toward the (low) FLOPs target."""
    common = {"data": "digits", "resolution": 8, "batch": 8, "lr": 1e-2, "warmup": 1, "log_every": 1,
              "progress": False}
    tiny_kw = {"hidden_size": 32, "depth": 3, "num_heads": 2}
    train({**common, "model": "DiT-S/2", "steps": 1, "model_kwargs": tiny_kw, "out": str(tmp_path / "dit")})
    summary = train({**common, "model": "DyDiT-S/2", "steps": 3, "init": str(tmp_path / "dit/checkpoints/last.pt"),
                     "model_kwargs": {**tiny_kw, "flops_target": 0.2, "flops_weight": 100.0},
                     "out": str(tmp_path / "dydit")})
    assert summary["step"] == 3 and all(math.isfinite(v) for v in summary["losses"])
    weights = load_checkpoint(tmp_path / "dydit/checkpoints/last.pt")["model"]
    biases = torch.cat([weights[f"routers.{i}.{k}.bias"] for i in range(3) for k in ("heads", "groups")])
    assert (biases < 15.0 - 0.02).all()  # every width gate pushed toward closing, by the FLOPs loss


def test_a_sample_set_records_the_flops_its_routers_realised(tmp_path):
    """Sampling a DyDiT counts what its routers computed: the set's FLOPs per sample are the realised ones (below
    the plan's full-width count once gates close) and do not depend on how the set was batched or resumed."""
    from elit_bench.sampling.generate import Recipe, generate

    common = {"data": "digits", "resolution": 8, "batch": 8, "lr": 1e-3, "warmup": 1, "progress": False,
              "model_kwargs": {"hidden_size": 32, "depth": 2, "num_heads": 2}}
    train({**common, "model": "DyDiT-S/2", "steps": 1, "out": str(tmp_path / "run")})
    path = tmp_path / "run/checkpoints/last.pt"
    ckpt = load_checkpoint(path)
    ckpt["ema"]["routers.0.heads.bias"].fill_(-30.0)  # block 0 runs head 0 only
    ckpt["ema"]["routers.1.tokens.2.bias"].fill_(0.0)  # block 1's MLP sees the tokens its router lets through
    save_checkpoint(path, ckpt)
    recipe, seeds = Recipe(steps=3), list(range(6))
    whole = generate(path, tmp_path / "whole", seeds, recipe, batch=6, progress=False)
    parts = generate(path, tmp_path / "parts", seeds, recipe, batch=4, progress=False)
    assert whole["flops_realised"] and whole["flops_per_sample"] < whole["planned_flops_per_sample"]
    assert parts["flops_per_sample"] == pytest.approx(whole["flops_per_sample"], rel=1e-12)


FINE_TUNE_RUNS = """  - {label: DiT, seeds: SEEDS, train: {model: DiT-S/2}}
  - {label: DyDiT, seeds: SEEDS, train: {model: DyDiT-S/2, init: INIT}}"""


def test_a_suite_run_fine_tunes_from_another_runs_checkpoint(tmp_path, capsys):
    # catches: `train.init: {run: LABEL}` starting from the wrong seed's run, an id that ignores where the run
    # starts, a fine-tuning run started before its start exists
    import json

    from elit_bench.cli import main
    from elit_bench.suites.spec import load_suite

    def suite(seeds="[0, 1]", init="{run: DiT}"):
        path = tmp_path / f"finetune-{len(list(tmp_path.glob('*.yaml')))}.yaml"
        path.write_text(tiny_suite("finetune", FINE_TUNE_RUNS.replace("SEEDS", seeds).replace("INIT", init)))
        return str(path)

    dit0, dit1, dy0, dy1 = load_suite(suite()).runs("smoke")
    assert (dy0.init_run, dy1.init_run) == (dit0.id, dit1.id) and "init" not in dy0.train
    alone = [r for r in load_suite(suite(seeds="[0]")).runs("smoke") if r.label == "DyDiT"][0]
    assert alone.id == dy0.id  # the same start and settings: the same run
    with pytest.raises(UserError, match="train.init names run 'Nope'"):
        load_suite(suite(init="{run: Nope}")).runs("smoke")
    with pytest.raises(UserError, match="checkpoint path or"):
        load_suite(suite(init="{label: DiT}")).runs("smoke")
    # the runner hands the fine-tuning the start's final checkpoint
    out = tmp_path / "out"
    assert main(["run", suite(seeds="[0]"), "--out", str(out), "--no-progress"]) == 0
    start = out / "finetune" / "smoke" / dit0.id / "train" / "checkpoints" / "last.pt"
    resolved = json.loads((out / "finetune" / "smoke" / dy0.id / "run.json").read_text())["resolved"]
    assert resolved["init"] == str(start)
