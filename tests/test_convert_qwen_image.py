"""`elit-bench convert --format diffusers-qwen-image`: a tiny random diffusers Qwen-Image, saved with
`save_pretrained`, converts to an MMDiT whose forward is diffusers' (docs/mmdit.md), and ELIT-MMDiT starts
from it with `train.init`."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import QwenImageTransformer2DModel  # dev extra; Qwen-Image since diffusers 0.35
from test_mmdit import without_core

from elit_bench.checkpoint import load_checkpoint
from elit_bench.cli import main as cli
from elit_bench.convert import convert_state, qwen_kwargs
from elit_bench.models import create_model
from elit_bench.models.loading import load_init_weights, model_from_checkpoint
from elit_bench.models.mmdit import TextCondition

C, HEADS, HEAD_DIM, DEPTH, TEXT_DIM = 4, 2, 16, 3, 24
H, W = 12, 8  # latent rows != columns: a swapped RoPE axis or unpacking order shows


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny random diffusers QwenImageTransformer2DModel and its save_pretrained folder, sharded."""
    torch.manual_seed(0)
    ref = QwenImageTransformer2DModel(
        patch_size=2, in_channels=4 * C, out_channels=C, num_layers=DEPTH, attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS, joint_attention_dim=TEXT_DIM, axes_dims_rope=(2, 6, 8)).eval()
    with torch.no_grad():  # no zero-initialised path: every weight carries signal
        for p in ref.parameters():
            p.normal_(0, 0.3)
    folder = tmp_path_factory.mktemp("qwen") / "transformer"
    ref.save_pretrained(folder, safe_serialization=True, max_shard_size="20KB")
    assert (folder / "diffusion_pytorch_model.safetensors.index.json").is_file()  # the sharded layout is read
    return ref, folder


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "qwen.pt"
    assert cli(["convert", str(source[1]), "--format", "diffusers-qwen-image", "--set", f"input_size=[{H},{W}]",
                "--out", str(out)]) == 0
    return load_checkpoint(out)


def inputs(batch=2, tokens=5, seed=1):
    """Latents (B, C, H, W), harness times t (0 at noise), text (B, T, d_text) with padding in sample 1."""
    g = torch.Generator().manual_seed(seed)
    x, text = torch.randn(batch, C, H, W, generator=g), torch.randn(batch, tokens, TEXT_DIM, generator=g)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    mask[1, 3:] = False
    return x, torch.tensor([0.25, 0.8]), TextCondition(text, mask)


def diffusers_velocity(ref, x, t, text):
    """diffusers' forward on the same inputs, in the harness's convention: latents packed into 2x2 patches
    (the pipeline's `_pack_latents`), sigma = 1 - t, and its noise - data prediction negated."""
    B = x.shape[0]
    packed = x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * 4)
    out = ref(hidden_states=packed, encoder_hidden_states=text.tokens, encoder_hidden_states_mask=text.mask,
              timestep=1 - t, img_shapes=[[(1, H // 2, W // 2)]] * B, return_dict=False)[0]
    return -out.view(B, H // 2, W // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


def test_converted_mmdit_matches_diffusers_forward(source, converted):
    # catches: q/k/v in the wrong order, norm_out's (scale, shift) halves not swapped, the last block's text
    # modulation cut wrong, a transposed RoPE axis or patch order, sigma = t instead of 1 - t, a mask ignored
    ref, _ = source
    model = model_from_checkpoint(converted)
    assert converted["config"]["model_kwargs"] == {
        "in_channels": C, "patch_size": 2, "depth": DEPTH, "hidden_size": HEADS * HEAD_DIM, "num_heads": HEADS,
        "text_dim": TEXT_DIM, "rope_axes": [2, 6, 8], "num_classes": 0, "input_size": [H, W]}
    x, t, text = inputs()
    with torch.no_grad():
        want, ours = diffusers_velocity(ref, x, t, text), model(x, t, text)
    assert want.abs().max() > 0.1  # a forward that carries signal
    assert (ours - want).abs().max() < 1e-5
    # the padding matters to neither: changing it changes nothing, changing a real token does
    with torch.no_grad():
        padded = text.tokens.clone()
        padded[1, 3:] = 5.0
        assert torch.allclose(model(x, t, TextCondition(padded, text.mask)), ours, atol=1e-6)
        padded[1, 0] = 5.0
        assert not torch.allclose(model(x, t, TextCondition(padded, text.mask))[1], ours[1], atol=1e-3)


def test_the_last_blocks_dead_text_weights_are_dropped_and_recorded(source, converted):
    # catches: a live weight dropped, or a dead one kept (DDP would find it without a gradient), a shard unread
    recorded = converted["config"]["converted_from"]
    last = f"transformer_blocks.{DEPTH - 1}."
    index = json.loads((source[1] / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert recorded["format"] == "diffusers-qwen-image" and len(recorded["sha256"]) == 64
    assert set(recorded["files"]) == {"config.json", *index["weight_map"].values()} and len(recorded["files"]) > 2
    assert sorted(recorded["dropped_keys"]) == sorted(last + k for k in (
        "attn.add_q_proj.weight", "attn.add_q_proj.bias", "attn.norm_added_q.weight", "attn.to_add_out.weight",
        "attn.to_add_out.bias", "txt_mlp.net.0.proj.weight", "txt_mlp.net.0.proj.bias", "txt_mlp.net.2.weight",
        "txt_mlp.net.2.bias"))
    assert not converted["model"]["text_embedder.prompt_mask"].any()  # no prompt set: every id is the empty prompt


def test_elit_from_the_converted_checkpoint_starts_as_the_teacher_without_its_core(converted, tmp_path):
    """`train.init`: the converted MM-DiT loads under ELIT's `backbone.`, the interface keeps its init. A
    zero-initialised Write hands the image stream back unchanged, so where the image stream cannot read the
    text (an all-padding prompt) and the Read/Write position embeddings are zero, ELIT equals the teacher with
    its core blocks cut out of the image stream, at every budget; it is not the teacher (docs/mmdit.md)."""
    # catches: a converted checkpoint that does not load into ELIT-MMDiT's backbone, interface weights taken
    # from the source or left unset, a Write that is not zero at init
    teacher = model_from_checkpoint(converted)
    kwargs = converted["config"]["model_kwargs"]
    student = create_model("ELIT-MMDiT-QwenImage/2", **kwargs, blocks=(1, 1, 1), group_size=2).eval()
    interface = {k: v.clone() for k, v in student.interface.state_dict().items()}
    path = tmp_path / "qwen.pt"
    torch.save(converted, path)
    load_init_weights(student, path)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in student.backbone.state_dict().items())
    assert all(torch.equal(v, student.interface.state_dict()[k]) for k, v in interface.items())
    with torch.no_grad():
        student.interface.read_pos.zero_()
        student.interface.write_pos.zero_()
    x, t, text = inputs()
    empty = TextCondition(text.tokens, torch.zeros_like(text.mask))
    with torch.no_grad():
        want = without_core(teacher, x, t, empty, range(1, 2))
        assert not torch.allclose(want, teacher(x, t, empty), atol=1e-4)  # the core matters to the teacher
        for budget in (1, 2, 4):
            assert torch.allclose(student(x, t, empty, budget=budget), want, atol=1e-5), budget
        assert not torch.allclose(student(x, t, text), without_core(teacher, x, t, text, range(1, 2)), atol=1e-4)


def test_qwen_images_full_key_map_on_the_meta_device():
    """Every tensor of diffusers' default QwenImageTransformer2DModel (Qwen-Image's config, 20.4B parameters)
    lands on `MMDiT-QwenImage/2` with its shape; only the last block's text output (0.13B) is dropped."""
    # catches: a key pattern that only the tiny model exercises, a full-size width the config mapping gets wrong
    with torch.device("meta"):
        ref = QwenImageTransformer2DModel()
        model = create_model("MMDiT-QwenImage/2", **qwen_kwargs(dict(ref.config)))
    out, dropped = convert_state(ref.state_dict(), model, "diffusers-qwen-image")
    assert set(out) == set(model.state_dict()) and len(dropped) == 9
    assert all(k.startswith("transformer_blocks.59.") for k in dropped)
    assert sum(v.numel() for v in ref.state_dict().values()) / 1e9 == pytest.approx(20.43, abs=0.01)
    assert sum(v.numel() for v in model.parameters()) / 1e9 == pytest.approx(20.30, abs=0.01)


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written
def convert_fails(capsys, src, tmp_path) -> str:
    out = tmp_path / "o.pt"
    out.write_bytes(b"earlier file")
    assert cli(["convert", str(src), "--format", "diffusers-qwen-image", "--out", str(out)]) == 2
    assert out.read_bytes() == b"earlier file" and sorted(p.name for p in tmp_path.iterdir() if "o.pt" in p.name) \
        == ["o.pt"]  # no checkpoint, sidecar or temporary file
    return capsys.readouterr().err


def test_a_folder_without_config_json(source, tmp_path, capsys):
    pipeline = tmp_path / "pipeline"
    shutil.copytree(source[1], pipeline / "transformer")
    assert "no config.json (a pipeline: give its transformer/ folder)" in convert_fails(capsys, pipeline, tmp_path)


def test_an_unknown_key_is_named(source, tmp_path, capsys):
    from safetensors.torch import save_file

    folder = tmp_path / "extra"
    folder.mkdir()
    shutil.copy(source[1] / "config.json", folder)
    state = {k: v.contiguous() for k, v in source[0].state_dict().items()}
    save_file({**state, "transformer_blocks.0.attn.extra.weight": torch.zeros(3)},
              folder / "diffusion_pytorch_model.safetensors")
    assert "'transformer_blocks.0.attn.extra.weight' has no place" in convert_fails(capsys, folder, tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"zero_cond_t": True}, "sets zero_cond_t"),  # Qwen-Image-Edit-2511's variant
    ({"axes_dims_rope": [2, 6, 6]}, "RoPE axes (2, 6, 6) must be 3 even channel counts summing to the head dim"),
    ({"out_channels": 8}, "out_channels 8"),
])
def test_a_config_the_harness_cannot_build(source, tmp_path, capsys, change, message):
    folder = tmp_path / "changed"
    shutil.copytree(source[1], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    assert message in convert_fails(capsys, folder, tmp_path)
