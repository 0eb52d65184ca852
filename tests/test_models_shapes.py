"""Shapes and budgets: every registered model keeps the input shape; every budget runs; bad input is named."""

import pytest
import torch

from elit_bench.errors import UserError
from elit_bench.models import create_model, list_models, param_count
from helpers import tiny


def inputs(model, batch=2):
    x = torch.randn(batch, model.in_channels, *model.input_shape, device=next(model.parameters()).device)
    return x, torch.rand(batch, device=x.device), torch.arange(batch, device=x.device) % model.num_classes


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_keeps_shape_on_meta(name):
    with torch.device("meta"):
        model = create_model(name, resolution=256)
    assert model.in_channels == 16 and model.input_shape == (32, 32)
    x, t, y = inputs(model)
    assert model(x, t, y).shape == x.shape
    if model.max_budget:
        assert model(x, t, y, budget=1).shape == x.shape


@pytest.mark.parametrize("name", ["DiT-S/2", "ELIT-DiT-S/2", "UViT-S/2", "ELIT-UViT-S/2", "HDiT-S/2",
                                  "ELIT-HDiT-S/2", "MultiPatch-DiT-S/2", "DiT-S/2x4", "ELIT-DiT-S/1"])
def test_small_models_run_forward_backward_on_cpu(name):
    model = create_model(name, resolution=64)  # real S width and depth, 8x8 latent
    x, t, y = inputs(model)
    out = model(x, t, y)
    assert out.shape == x.shape
    out.square().mean().backward()


@pytest.mark.parametrize("name", ["DiT-S/2", "ELIT-DiT-S/2", "ELIT-UViT-S/2", "ELIT-HDiT-S/2"])
def test_video_models_keep_shape(name):
    kw = {"group_size": (2, 2, 2)} if name.startswith("ELIT") else {}
    model = tiny(name, frames=4, **kw)
    x, t, y = inputs(model)
    assert x.ndim == 5 and model(x, t, y).shape == x.shape


@pytest.mark.parametrize("name", ["ELIT-DiT-S/2", "ELIT-HDiT-S/2", "ELIT-UViT-S/2"])
def test_every_budget_runs(name):
    model = tiny(name, group_size=4)  # 8x8 tokens: 4 groups of 16, J = 16
    x, t, y = inputs(model)
    assert model.max_budget == 16
    for budget in range(1, 17):
        assert model(x, t, y, budget=budget).shape == x.shape


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
