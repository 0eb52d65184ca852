"""TREAD: exactly the base model at inference, a routed pass in training whose FLOPs the harness matches."""

import pytest
import torch

from elit_bench.errors import UserError
from elit_bench.flops import forward_flops, measure_forward_flops, train_forward_flops
from elit_bench.models import create_model
from elit_bench.models.backbones import UViT
from elit_bench.models.layers import rope_tables
from elit_bench.models.tread import TREAD
from helpers import randomize, tiny

ROUTE = (1, 3)  # blocks 1..3 of 6


def inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 1, 16, 16, generator=g), torch.rand(batch, generator=g), torch.tensor([3, 7][:batch])


@pytest.mark.parametrize("name", ["TREAD-DiT-S/2", "TREAD-SiT-S/2"])
def test_eval_mode_and_rate_zero_are_the_base_model(name):
    """Same weights, bit for bit: a TREAD checkpoint samples as the base model."""
    x, t, y = inputs()
    model = randomize(tiny(name, route=ROUTE))
    base = randomize(tiny(name.removeprefix("TREAD-")))
    base.load_state_dict(model.backbone.state_dict())
    with torch.no_grad():
        want = base.eval()(x, t, y)
        assert not torch.equal(model.train()(x, t, y), want)  # training routes, so the checks below can fail
        assert torch.equal(model.eval()(x, t, y), want)
        still = tiny(name, route=ROUTE, route_rate=0.0).train()
        still.backbone.load_state_dict(base.state_dict())
        assert torch.equal(still(x, t, y), want)


@pytest.mark.parametrize("name, rate, route", [
    ("TREAD-DiT-S/2", 0.5, ROUTE),
    ("TREAD-DiT-S/2", 0.25, (0, 5)),
    ("TREAD-DiT-S/2", 0.75, (2, 2)),
    ("TREAD-SiT-S/4", 0.5, (2, 4)),
])
def test_measured_flops_equal_the_analytic_twins(name, rate, route):
    model = tiny(name, route_rate=rate, route=route)
    routed, full = train_forward_flops(model), forward_flops(model)
    tokens = model.backbone.macs_embed(model.input_shape)[1].num_tokens
    kept = tokens - int(tokens * rate)
    blocks = route[1] - route[0] + 1
    # the span's blocks see `kept` tokens instead of all; one block's cost at either count from the backbone
    per_block = model.backbone.blocks[0].macs
    assert full - routed == 2 * blocks * (per_block(tokens) - per_block(kept)) > 0
    assert measure_forward_flops(model.train(), batch=2) == routed
    assert measure_forward_flops(model.eval(), batch=2) == full


@pytest.mark.parametrize("per_sample", [False, True])
def test_routed_tokens_pass_unchanged_and_kept_tokens_keep_their_positions(per_sample):
    x, t, y = inputs()
    model = randomize(tiny("TREAD-DiT-S/2", route=ROUTE)).train()
    bb, (i, j) = model.backbone, ROUTE
    seen = {}  # the tokens before block i (block i - 1's output) and the input of block j + 1
    hooks = [bb.blocks[i - 1].register_forward_hook(lambda m, args, out: seen.update(before=out.clone())),
             bb.blocks[j + 1].register_forward_pre_hook(lambda m, args: seen.update(after=args[0].clone()))]
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)] if per_sample else torch.Generator().manual_seed(5)
    with torch.no_grad():
        plan = model.plan(x, generator=gens)
        model.compute(x, t, y, plan)
    for hook in hooks:
        hook.remove()
    keep, subset = plan["route"]
    assert keep.shape == ((2, 32) if per_sample else (1, 32)) and subset.num_tokens == 32  # 64 tokens, rate 0.5
    assert per_sample == (not torch.equal(keep[0], keep[-1]))
    for b in range(2):
        kept = keep[b if per_sample else 0]
        routed = torch.ones(64, dtype=torch.bool)
        routed[kept] = False
        before, after = seen["before"][b], seen["after"][b]
        assert torch.equal(after[routed], before[routed])  # the identity bypass
        assert not torch.allclose(after[kept], before[kept])  # the kept tokens did run blocks i..j
        # the kept tokens alone through blocks i..j, with the RoPE phases of their own grid positions
        c = bb.t_embedder(t[b:b + 1]) + bb.y_embedder(y[b:b + 1])
        rope = rope_tables(plan["grid"].positions()[kept], bb.head_dim)
        wrong = rope_tables(plan["grid"].positions()[:32], bb.head_dim)
        with torch.no_grad():
            outs = []
            for phases in (rope, wrong):
                h = before[kept][None]
                for k in range(i, j + 1):
                    h = bb.blocks[k](h, c, rope=phases)
                outs.append(h[0])
        torch.testing.assert_close(after[kept], outs[0])  # up to the rounding of a batch of 2 vs 1
        assert (after[kept] - outs[1]).abs().max() > 1e-3  # other positions give other tokens
    # the subset comes from the caller's generator: the same state draws the same tokens
    again = model.plan(x, generator=[torch.Generator().manual_seed(s) for s in (5, 6)] if per_sample
                       else torch.Generator().manual_seed(5))["route"][0]
    assert torch.equal(again, keep)


def test_flops_matched_suite_gives_tread_its_larger_batch(tmp_path):
    from elit_bench.suites.spec import load_suite
    from elit_bench.training.config import expected_train_tflops

    kwargs = "{hidden_size: 32, depth: 6, num_heads: 2}"
    path = tmp_path / "s.yaml"
    path.write_text(f"""name: s
base:
  train: {{data: digits, resolution: 8, batch: 16, steps: 4, model_kwargs: {kwargs}}}
  sample: {{steps: 2, batch: 8}}
  metrics: {{names: [digits_fd], num_samples: 8, real: digits}}
runs:
  - {{label: DiT, train: {{model: DiT-S/2}}}}
  - {{label: TREAD, train: {{model: TREAD-DiT-S/2, model_kwargs: {{route: [1, 3]}}, batch: {{match_flops: DiT}}}}}}
scales: {{paper: {{}}, smoke: {{train: {{batch: 8}}}}}}
""")
    for scale, base in (("paper", 16), ("smoke", 8)):
        runs = {r.label: r for r in load_suite(str(path)).runs(scale)}
        (_, _, dit), (_, _, cfg) = runs["DiT"].model_args, runs["TREAD"].model_args
        model = runs["TREAD"].meta_model()
        ratio = forward_flops(model) / train_forward_flops(model)  # the routed pass is this much cheaper
        assert dit["batch"] == base and cfg["batch"] == round(base * ratio) > base
        assert expected_train_tflops(model, cfg) == pytest.approx(
            expected_train_tflops(runs["DiT"].meta_model(), dit), rel=0.05)  # the same FLOPs per iteration


def test_a_few_training_steps_and_the_checkpoint_samples_as_the_base_model(tmp_path):
    from elit_bench.checkpoint import load_checkpoint
    from elit_bench.models import model_from_checkpoint
    from elit_bench.training import train

    summary = train({"data": "digits", "resolution": 8, "batch": 8, "steps": 3, "lr": 1e-3, "warmup": 1,
                     "log_every": 1, "progress": False, "model": "TREAD-DiT-S/2", "out": str(tmp_path),
                     "model_kwargs": {"hidden_size": 32, "depth": 6, "num_heads": 2, "route": [1, 3]}})
    assert summary["step"] == 3 and all(v == v for v in summary["losses"])
    model = model_from_checkpoint(load_checkpoint(tmp_path / "checkpoints/last.pt"))
    assert isinstance(model, TREAD) and not model.training
    x = torch.randn(2, 1, 8, 8)
    t, y = torch.rand(2), torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.equal(model(x, t, y), model.backbone(x, t, y))


@pytest.mark.parametrize("kwargs, says", [
    ({"route_rate": 1.0}, "route_rate 1.0 must be a number in [0, 1)"),
    ({"route_rate": -0.1}, "route_rate -0.1"),
    ({"route_rate": "half"}, "route_rate 'half'"),
    ({"route_rate": True}, "route_rate True"),
    ({"route": (3, 1)}, "route (3, 1) must be two block indices"),
    ({"route": (0, 6)}, "0 <= i <= j < depth 6"),
    ({"route": [2]}, "route [2]"),
    ({"depth": 4}, "the paper's (2, depth - 4) needs depth >= 6"),
])
def test_bad_options_are_one_line_user_errors(kwargs, says):
    with pytest.raises(UserError) as err:
        tiny("TREAD-DiT-S/2", **kwargs)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_routes_past_token_operations_and_budgets_are_refused():
    with pytest.raises(UserError, match=r"token operations at block\(s\) \[1\], inside the route \(1, 3\)"):
        TREAD(UViT(input_size=8, in_channels=1, num_classes=10, hidden_size=32, depth=6, num_heads=2), route=ROUTE)
    model = tiny("TREAD-DiT-S/2", route=ROUTE)
    x, t, y = inputs()
    for call in (lambda: model(x, t, y, budget=2), lambda: model.train_macs(budget=2)):
        with pytest.raises(UserError, match="no latent interface: budget must be None"):
            call()
    assert create_model("DiT-S/2").macs() == create_model("TREAD-DiT-S/2").macs()  # inference cost: the base's
