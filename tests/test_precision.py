"""Matched precision: one residual-stream dtype for every backbone and its ELIT version under bf16 autocast;
sampling precision is a setting, validated, recorded and applied."""

import dataclasses

import pydantic
import pytest
import torch

from elit_bench.errors import UserError
from elit_bench.models import create_model
from elit_bench.models.elit import InterfaceLayer
from elit_bench.models.layers import DiTBlock
from elit_bench.models.precision import DEFAULT_SAMPLE_PRECISION, sample_precision
from elit_bench.sampling.generate import Recipe, prepare, sample_seeds
from elit_bench.schema import SampleSettings

TINY = dict(input_size=8, in_channels=4, num_classes=10, hidden_size=32, depth=7, num_heads=2)
MODELS = ["DiT-S/2", "UViT-S/2", "HDiT-S/2", "SiT-S/2", "MultiPatch-DiT-S/2",
          "ELIT-DiT-S/2", "ELIT-UViT-S/2", "ELIT-HDiT-S/2", "ELIT-SiT-S/2"]
EXTRA = {"ELIT-HDiT-S/2": dict(blocks=(1, 5, 1), latents_per_group=8),  # merges and splits inside the core
         "ELIT-SiT-S/2": dict(blocks=(2, 3, 2))}


def stream_dtypes(model, **forward_kwargs) -> dict[str, torch.dtype]:
    """Output dtype of every transformer block, Read and Write in one forward under CPU bf16 autocast."""
    seen, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, (DiTBlock, InterfaceLayer)):
            hooks.append(module.register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out.dtype)))
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x, torch.rand(2), torch.tensor([1, 2]), **forward_kwargs)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("name", MODELS)
def test_every_block_keeps_an_fp32_residual_stream_under_bf16_autocast(name):
    torch.manual_seed(0)
    model = create_model(name, **TINY, **EXTRA.get(name, {}))
    passes = [{"patch_size": 4}, {}] if name.startswith("MultiPatch") else [{}]
    if model.max_budget is not None:
        passes.append({"budget": 1})
    for kwargs in passes:
        dtypes = stream_dtypes(model, **kwargs)
        blocks = [k for k in dtypes if "blocks" in k]
        assert len(blocks) == model.depth, dtypes  # every block was hooked and ran
        if model.max_budget is not None:
            assert any("read" in k for k in dtypes) and any("write" in k for k in dtypes)
        assert set(dtypes.values()) == {torch.float32}, (kwargs, dtypes)


def test_fp32_forward_is_unchanged_by_the_stream_cast():
    """Without autocast the cast to the weights' dtype is the identity: same values as tokens never cast."""
    torch.manual_seed(0)
    model = create_model("DiT-S/2", **TINY).eval()
    x, t, y = torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([1, 2])
    plan = model.plan(x)
    tokens, _ = model.embed(x, t, y, dict(plan))
    assert tokens.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto_tokens, _ = model.embed(x, t, y, dict(plan))
    raw = model.patch_embedders[0](x)  # the patch embedding alone returns bf16 under autocast ...
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.patch_embedders[0](x).dtype == torch.bfloat16
    assert auto_tokens.dtype == torch.float32  # ... and the stream is cast back to the weights' dtype
    assert torch.equal(tokens, raw)


def test_sample_precision_is_a_validated_recorded_setting():
    assert Recipe().precision == DEFAULT_SAMPLE_PRECISION == "tf32"
    assert "precision" in dataclasses.asdict(Recipe(precision="bf16"))  # settings.json holds asdict(recipe)
    with pytest.raises(UserError, match="sampling precision 'fp16'"):
        Recipe(precision="fp16")
    assert SampleSettings(precision="bf16").recipe(None).precision == "bf16"
    with pytest.raises(pydantic.ValidationError, match="'fp32', 'tf32' or 'bf16'"):
        SampleSettings.model_validate({"precision": "fp64"})


def test_sample_precision_context_applies_autocast_and_restores_matmul_precision():
    before = torch.get_float32_matmul_precision()
    a = torch.randn(4, 4)
    with sample_precision("bf16", "cpu"):
        assert (a @ a).dtype == torch.bfloat16
    with sample_precision("tf32", "cpu"):  # on CPU tf32 is fp32
        assert (a @ a).dtype == torch.float32
    assert torch.get_float32_matmul_precision() == before
    with pytest.raises(UserError, match="valid choices: fp32, tf32, bf16"):
        with sample_precision("half", "cpu"):
            pass


def test_sampling_precision_changes_the_solve_only_through_the_model_arithmetic():
    torch.manual_seed(0)
    model = create_model("ELIT-DiT-S/2", **TINY).eval()
    for p in model.parameters():  # non-zero outputs, so the arithmetic shows in the samples
        torch.nn.init.normal_(p, std=0.05)
    runs = {}
    for precision in ("fp32", "tf32", "bf16"):
        setup = prepare(model, Recipe(steps=3, precision=precision))
        runs[precision], _ = sample_seeds(setup, [0, 1], [0, 1])
    assert torch.equal(runs["fp32"], runs["tf32"])  # CPU: TF32 does not apply
    assert runs["bf16"].dtype == torch.float32
    diff = (runs["bf16"] - runs["fp32"]).abs().max()
    assert 0 < diff < 0.1
