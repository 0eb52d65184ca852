"""Shapes and budgets: every registered model keeps the input shape; every budget runs; bad input is named."""

import pytest
import torch

from elit_bench.errors import UserError
from elit_bench.flops import measure_forward_flops
from elit_bench.models import create_model, list_models, param_count
from helpers import randomize, tiny


def inputs(model, batch=2):
    x = torch.randn(batch, model.in_channels, *model.input_shape, device=next(model.parameters()).device)
    return x, torch.rand(batch, device=x.device), torch.arange(batch, device=x.device) % model.num_classes


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_keeps_shape_on_meta(name):
    with torch.device("meta"):
        model = create_model(name, resolution=256)
    # FLUX autoencoder latents (16 channels, 8x down; docs/conventions.md#training); the released SiT family reads SD-VAE's 4
    assert model.in_channels == (4 if "SiT-" in name else 16) and model.input_shape == (32, 32)
    x, t, y = inputs(model)
    assert model(x, t, y).shape == x.shape
    if model.max_budget:
        assert model(x, t, y, budget=1).shape == x.shape


def assert_changes(a, b, what):
    assert not torch.allclose(a, b, rtol=1e-4, atol=1e-6), what


@pytest.mark.parametrize("name", ["DiT-S/2", "ELIT-DiT-S/2", "UViT-S/2", "ELIT-UViT-S/2", "HDiT-S/2",
                                  "ELIT-HDiT-S/2", "MultiPatch-DiT-S/2", "DiT-S/2x4", "ELIT-DiT-S/1"])
def test_small_models_run_forward_backward_on_cpu(name):
    # catches: an input the network ignores (noisy latent, timestep or class label not wired in) and a parameter
    # that gets no finite gradient, at the real S width and depth
    model = randomize(create_model(name, resolution=64))  # real S width and depth, 8x8 latent; random, not zero, init
    x, t, y = inputs(model)
    out = model(x, t, y)
    assert out.shape == x.shape
    with torch.no_grad():
        assert_changes(model(x + torch.randn_like(x), t, y), out, "input")
        assert_changes(model(x, 1 - t, y), out, "timestep")
        assert_changes(model(x, t, (y + 1) % model.num_classes), out, "class label")
    patches = getattr(model, "patch_options", None) or [None]
    reached = set()
    for p in patches:  # the multi-patch model uses one patchifier per call: every parameter is reached by some call
        model.zero_grad(set_to_none=True)
        model(x, t, y, **({"patch_size": p} if p else {})).square().mean().backward()
        reached |= {n for n, q in model.named_parameters() if q.grad is not None and q.grad.abs().sum() > 0}
        assert all(torch.isfinite(q.grad).all() for q in model.parameters() if q.grad is not None)
    assert reached == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("name", ["DiT-S/2", "ELIT-DiT-S/2", "ELIT-UViT-S/2", "ELIT-HDiT-S/2"])
def test_video_models_keep_shape_and_mix_frames(name):
    # catches: a video model that runs frames independently (time folded into the batch, no 3D groups or RoPE)
    kw = {"group_size": (2, 2, 2)} if name.startswith("ELIT") else {}
    model = randomize(tiny(name, frames=4, **kw)).eval()
    x, t, y = inputs(model)
    with torch.no_grad():
        out = model(x, t, y)
        assert x.ndim == 5 and out.shape == x.shape
        moved = x.clone()
        moved[:, :, 0] += torch.randn_like(moved[:, :, 0])  # change the first frame only
        assert_changes(model(moved, t, y)[:, :, -1], out[:, :, -1], "the last frame must see the first")
        if model.max_budget:
            assert_changes(model(x, t, y, budget=1), out, "budget")


@pytest.mark.parametrize("name", ["ELIT-DiT-S/2", "ELIT-HDiT-S/2", "ELIT-UViT-S/2"])
def test_every_budget_changes_output_and_measured_flops(name):
    # catches: a model that ignores `budget` (outputs or FLOPs equal across budgets), budget=None not meaning the
    # full J, or a budget that runs more FLOPs than the next larger one
    model = randomize(tiny(name, group_size=4)).eval()  # 8x8 tokens: 4 groups of 16, J = 16
    x, t, y = inputs(model)
    assert model.max_budget == 16
    with torch.no_grad():
        outs = {b: model(x, t, y, budget=b) for b in range(1, 17)}
        torch.testing.assert_close(model(x, t, y), outs[16], rtol=0, atol=0)  # budget=None is budget=J
    for b in range(1, 16):
        assert outs[b].shape == x.shape
        assert_changes(outs[b], outs[b + 1], f"budget {b} vs {b + 1}")
    measured = [measure_forward_flops(model, b, batch=2) for b in range(1, 17)]
    assert all(lo < hi for lo, hi in zip(measured, measured[1:])), measured
    assert measure_forward_flops(model, None, batch=2) == measured[-1]


def test_multipatch_runs_both_patchifiers():
    model = tiny("MultiPatch-DiT-S/2")
    x, t, y = inputs(model)
    for p in model.patch_options:
        assert model(x, t, y, patch_size=p).shape == x.shape
    with pytest.raises(UserError, match=r"patchifiers"):
        model(x, t, y, patch_size=8)


def test_create_model_works_on_meta_device():
    with torch.device("meta"):
        model = create_model("ELIT-HDiT-XL/2", resolution=512)
    assert all(p.is_meta for p in model.parameters())
    assert param_count(model) > 1.3e9


def test_list_models_filters_by_pattern():
    assert "ELIT-DiT-XL/2" in list_models("ELIT-*XL*")
    assert all(n.startswith("UViT") for n in list_models("UViT-*"))


@pytest.mark.parametrize("budget", [0, 17, -1, 2.5, "4"])
def test_budget_outside_range_names_valid_range(budget):
    model = tiny("ELIT-DiT-S/2", group_size=4)
    x, t, y = inputs(model)
    with pytest.raises(UserError, match=r"outside 1\.\.16"):
        model(x, t, y, budget=budget)


def test_budget_on_a_baseline_is_an_error():
    model = tiny("DiT-S/2")
    with pytest.raises(UserError, match="no latent interface"):
        model(*inputs(model), budget=2)


def test_group_size_that_does_not_tile_lists_valid_sizes():
    with pytest.raises(UserError, match=r"does not tile .*valid sizes per axis: \[\(1, 2, 4, 8\)"):
        tiny("ELIT-DiT-S/2", group_size=3)


def test_unknown_model_names_choices():
    with pytest.raises(UserError, match=r"unknown model 'DiT-XXL/2'.*valid choices"):
        create_model("DiT-XXL/2")


@pytest.mark.parametrize("kw, match", [
    ({"blocks": (2, 1, 2)}, "summing to the depth"),
    ({"read": "perceiver"}, "valid choices: cross, qformer, self"),
    ({"drop": "middle"}, "valid choices: tail, random"),
])
def test_bad_elit_settings(kw, match):
    with pytest.raises(UserError, match=match):
        tiny("ELIT-DiT-S/2", **kw)


def test_uvit_skips_need_symmetric_head_and_tail():
    with pytest.raises(UserError, match="B_in == B_out"):
        tiny("ELIT-UViT-S/2", depth=6, blocks=(1, 3, 2))


def test_hdit_merge_must_sit_inside_the_latent_core():
    # depth 7: merge before block 2; a Read after block 3 would see merged tokens
    with pytest.raises(UserError, match="merges inside the latent core"):
        tiny("ELIT-HDiT-S/2", depth=7, blocks=(3, 3, 1))


def test_interface_settings_rejected_on_baselines():
    with pytest.raises(UserError, match="only apply to ELIT"):
        tiny("DiT-S/2", group_size=2)


def test_wrong_input_shape_is_explained():
    model = tiny("DiT-S/2")
    with pytest.raises(UserError, match=r"expected input \(B, C, H, W\) with C=1"):
        model(torch.randn(1, 3, 16, 16), torch.rand(1), torch.zeros(1, dtype=torch.long))
