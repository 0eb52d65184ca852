"""`elit-bench convert`: the authors' checkpoints -> harness checkpoints.

Formats:
- `elit-official`: snap-research/elit (its `SiT-*` and `ELIT-SiT-*`, REPA's training
  code: a dict with `model`, `ema`, `opt`, `args`). Trained with t = 1 at noise and
  v = noise - data; the harness's `SiT` family flips both inside its forward, so
  `ours(x, t, y, budget=J) == -official(x, 1 - t, y, inference_budget=J / J_max)[0]`.
- `sit-official`: willisma/SiT (`SiT-*`, learned sigma, t = 0 at noise as here).
  Its sigma half of the output is dropped.
- `diffusers-qwen-image`: a diffusers `QwenImageTransformer2DModel` folder
  (config.json and safetensors, sharded or not) -> `MMDiT-*`, sized by its
  config.json. The key map is docs/mmdit.md's: q, k, v concatenated per stream,
  the halves of `norm_out.linear` swapped, the last block's text output (which
  nothing reads) dropped. Sigma = 1 - t, which `MMDiT` applies in its forward.
  The prompt table, which diffusers does not have, is written empty (every
  prompt id is the empty prompt until `set_prompts` loads a set).

The .pt files are read with `weights_only=True` and only `argparse.Namespace`
allowed beyond tensors and containers. Every source key must land on a harness
key of the same shape (REPA's training-only projectors and the dead keys above
excepted), and every harness key must be filled: the first mismatch is an error
naming the key, and nothing is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
from pathlib import Path

import torch

from elit_bench.checkpoint import check_output, save_checkpoint
from elit_bench.errors import UserError, choices_error
from elit_bench.metrics.weights import file_sha256
from elit_bench.models.elit import ELIT, to_groups
from elit_bench.models.layout import Grid

QWEN = "diffusers-qwen-image"
FORMATS = ("elit-official", "sit-official", QWEN)

# official key pattern -> harness key template (ELIT models add "backbone." before backbone keys)
BACKBONE_KEYS = [
    (r"x_embedder\.proj\.(weight|bias)", r"patch_embedders.0.proj.\1"),
    (r"(t_embedder\..*|y_embedder\..*|blocks\..*)", r"\1"),
    (r"final_layer\.linear\.(weight|bias)", r"final_layers.0.linear.\1"),
    (r"final_layer\.adaLN_modulation\.(.*)", r"final_layers.0.adaLN_modulation.\1"),
]
_READ = r"input_token_editor\.adapters\.0\."
_WRITE = r"output_token_editor\.adapters\.0\."
INTERFACE_KEYS = [
    (_READ + r"learned_query_embed", "interface.latent_embed"),
    (_READ + r"pos_embed", "interface.read_pos"),
    (_READ + r"latent_pos_embed", "interface.latent_pos"),
    (_READ + r"fit_layer\.adaLN_modulation\.(.*)", r"interface.read.adaLN_modulation.\1"),
    (_WRITE + r"pos_embed", "interface.write_pos"),
]
# per unit i of depth: attention is sublayer 2i, the MLP 2i + 1
UNIT_KEYS = [
    (_READ + r"fit_layer\.latents_attend_to_patches\.(\d+)\.", "interface.read.layers.{attn}."),
    (_READ + r"fit_layer\.read_ff\.(\d+)\.", "interface.read.layers.{mlp}."),
    (_WRITE + r"patches_attend_to_latents\.(\d+)\.", "interface.write.layers.{attn}."),
    (_WRITE + r"write_ff\.(\d+)\.", "interface.write.layers.{mlp}."),
]
ATTENTION_NAMES = {"q_proj": "q", "kv_proj": "kv", "q_norm": "q_norm", "k_norm": "k_norm", "proj": "proj"}
DROPPED = (r"projectors\..*",)  # REPA's alignment heads: used in training only

# diffusers' Qwen-Image key pattern -> harness key template (docs/mmdit.md); a `part` group names the slot of
# a tensor concatenated with others into one harness key (rows [q; k; v])
QWEN_KEYS = [
    (r"img_in\.(weight|bias)", r"patch_embedders.0.proj.\1"),
    (r"time_text_embed\.timestep_embedder\.linear_1\.(weight|bias)", r"t_embedder.mlp.0.\1"),
    (r"time_text_embed\.timestep_embedder\.linear_2\.(weight|bias)", r"t_embedder.mlp.2.\1"),
    (r"txt_norm\.weight", "text_embedder.norm.weight"),
    (r"txt_in\.(weight|bias)", r"text_embedder.proj.\1"),
    (r"norm_out\.linear\.(weight|bias)", r"final_layers.0.adaLN_modulation.1.\1"),
    (r"proj_out\.(weight|bias)", r"final_layers.0.linear.\1"),
]
_BLOCK = r"transformer_blocks\.(?P<block>\d+)\."
QWEN_BLOCK_KEYS = [  # after transformer_blocks.i. -> blocks.i.
    (r"img_mod\.1\.(weight|bias)", r"img.adaLN_modulation.1.\1"),
    (r"txt_mod\.1\.(weight|bias)", r"txt.adaLN_modulation.1.\1"),
    (r"attn\.to_(?P<part>[qkv])\.(weight|bias)", r"img.qkv.\2"),
    (r"attn\.add_(?P<part>[qkv])_proj\.(weight|bias)", r"txt.qkv.\2"),
    (r"attn\.norm_([qk])\.weight", r"img.\1_norm.weight"),
    (r"attn\.norm_added_([qk])\.weight", r"txt.\1_norm.weight"),
    (r"attn\.to_out\.0\.(weight|bias)", r"img.proj.\1"),
    (r"attn\.to_add_out\.(weight|bias)", r"txt.proj.\1"),
    (r"(img|txt)_mlp\.net\.0\.proj\.(weight|bias)", r"\1.mlp.fc1.\2"),
    (r"(img|txt)_mlp\.net\.2\.(weight|bias)", r"\1.mlp.fc2.\2"),
]
# the last block's text output: computed by diffusers, read by nothing, not built by the harness
QWEN_DEAD = r"attn\.(add_q_proj|norm_added_q|to_add_out)\..*|txt_mlp\..*"
# config.json switches of Qwen-Image variants (Edit-2511, Layered) that the harness's MM-DiT does not have
QWEN_VARIANTS = ("zero_cond_t", "use_additional_t_cond", "use_layer3d_rope")


def read_official(path, weights: str = "ema") -> tuple[dict, dict, int | None]:
    """(state dict, training args as a dict, training step) from an official checkpoint or a bare state dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"source checkpoint {str(path)!r} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read {str(path)!r} as a weights-only checkpoint: {exc}") from exc
    if not isinstance(obj, dict):
        raise UserError(f"{str(path)!r} holds a {type(obj).__name__}, not a checkpoint dict or state dict")
    args = obj.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    if "model" in obj and isinstance(obj["model"], dict):
        key = weights if obj.get(weights) is not None else "model"
        step = obj.get("steps", obj.get("step"))
        return obj[key], args, int(step) if isinstance(step, int) else None
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, args, None
    raise UserError(f"{str(path)!r} is neither an official training checkpoint (a dict with 'model', 'ema', "
                    "'opt', 'args') nor a bare state dict")


def inferred_kwargs(state: dict, args: dict, elit: bool) -> dict:
    """Model arguments the weights (and the training args, where they say) fix."""
    try:
        width, channels, patch, _ = state["x_embedder.proj.weight"].shape
        kw = {"in_channels": channels, "num_classes": state["y_embedder.embedding_table.weight"].shape[0] - 1}
    except KeyError as exc:
        raise UserError(f"source state dict has no {exc.args[0]!r}: not a SiT / ELIT-SiT checkpoint") from exc
    if "pos_embed" in state:
        kw["input_size"] = math.isqrt(state["pos_embed"].shape[1]) * patch
    elif args.get("resolution"):
        kw["input_size"] = int(args["resolution"]) // 8
    kw["qk_norm"] = "layer" if "blocks.0.attn.q_norm.weight" in state else None
    if elit:
        query = state.get(_READ.replace("\\", "") + "learned_query_embed")
        if query is not None:
            kw["group_size"] = math.isqrt(query.shape[0])
        if args.get("encoder_depth") is not None:
            kw["encoder_depth"] = int(args["encoder_depth"])
    return kw


def read_diffusers(path) -> tuple[dict, dict, dict]:
    """(state dict, config.json, {file name: sha256}) from a diffusers model folder (`save_pretrained`)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"source {str(path)!r} is not a folder: give a diffusers model folder (config.json and "
                        "diffusion_pytorch_model*.safetensors), e.g. the transformer/ folder of Qwen/Qwen-Image")
    if not (path / "config.json").is_file():
        hint = " (a pipeline: give its transformer/ folder)" if (path / "transformer" / "config.json").is_file() else ""
        raise UserError(f"{str(path)!r} has no config.json{hint}: not a diffusers model folder")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {str(path / 'config.json')!r} as JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise UserError(f"{str(path / 'config.json')!r} holds a {type(config).__name__}, not a model config")
    index = path / "diffusion_pytorch_model.safetensors.index.json"
    try:
        names = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
                 else ["diffusion_pytorch_model.safetensors"])
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise UserError(f"cannot read {str(index)!r} as a safetensors index (a 'weight_map'): {exc}") from exc
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as exc:
        raise UserError("reading a diffusers model needs safetensors: pip install 'elit_bench[data]'") from exc

    state = {}
    for name in names:
        if not (path / name).is_file():
            raise UserError(f"{str(path)!r} has no {name}: save the model with safetensors (save_pretrained's "
                            "default) and copy every shard its index names")
        try:
            state.update(load_file(path / name))
        except (OSError, SafetensorError) as exc:
            raise UserError(f"cannot read {str(path / name)!r} as safetensors: {exc}") from exc
    return state, config, {name: file_sha256(path / name) for name in ["config.json", *names]}


def qwen_kwargs(config: dict) -> dict:
    """`MMDiT` arguments from a `QwenImageTransformer2DModel` config.json; an empty prompt table (num_classes 0)."""
    name = config.get("_class_name", "QwenImageTransformer2DModel")
    if name != "QwenImageTransformer2DModel":
        raise UserError(f"config.json describes a {name}, not a QwenImageTransformer2DModel: is --format right?")
    variant = next((k for k in QWEN_VARIANTS if config.get(k)), None)
    if variant:
        raise UserError(f"config.json sets {variant}: a Qwen-Image variant the harness's MM-DiT does not build; "
                        "only text-to-image Qwen-Image transformers convert")
    fields = ("patch_size", "in_channels", "num_layers", "attention_head_dim", "num_attention_heads",
              "joint_attention_dim", "axes_dims_rope")
    if any(k not in config for k in fields):
        raise UserError(f"config.json has no {next(k for k in fields if k not in config)!r}: not a Qwen-Image "
                        "transformer config")
    patch = config["patch_size"]
    channels, rest = divmod(config["in_channels"], patch * patch)
    if rest or (config.get("out_channels") or channels) != channels:
        raise UserError(f"config.json's in_channels {config['in_channels']} and out_channels "
                        f"{config.get('out_channels')} are not C * {patch}^2 and C: the harness's MM-DiT predicts a "
                        "velocity of its input's channels")
    heads = config["num_attention_heads"]
    return {"in_channels": channels, "patch_size": patch, "depth": config["num_layers"],
            "hidden_size": heads * config["attention_head_dim"], "num_heads": heads,
            "text_dim": config["joint_attention_dim"], "rope_axes": list(config["axes_dims_rope"]), "num_classes": 0}


def _qwen_target(key: str, depth: int) -> tuple[str | None, int]:
    """(harness key, slot among the tensors concatenated into it) for a diffusers Qwen-Image key; None: dropped."""
    for pattern, template in QWEN_KEYS:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, template, key), 0
    m = re.match(_BLOCK, key)
    rest = key[m.end():] if m else ""
    if m and int(m["block"]) == depth - 1 and re.fullmatch(QWEN_DEAD, rest):
        return None, 0
    for pattern, template in QWEN_BLOCK_KEYS if m else ():
        inner = re.fullmatch(pattern, rest)
        if inner:
            part = "qkv".index(inner["part"]) if "part" in inner.groupdict() else 0
            return f"blocks.{m['block']}." + re.sub(pattern, template, rest), part
    raise UserError(f"source key {key!r} has no place in the harness's model: is --format right?")


def _target_key(key: str, elit: bool) -> str | None:
    """Harness key for an official key, None for keys that are dropped on purpose."""
    if key == "pos_embed" or any(re.fullmatch(p, key) for p in DROPPED):
        return None
    for pattern, template in BACKBONE_KEYS:
        if re.fullmatch(pattern, key):
            return ("backbone." if elit else "") + re.sub(pattern, template, key)
    for pattern, template in INTERFACE_KEYS:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, template, key)
    for pattern, template in UNIT_KEYS:
        m = re.match(pattern, key)
        if m:
            unit, rest = int(m.group(1)), key[m.end():]
            name, _, leaf = rest.partition(".")
            return template.format(attn=2 * unit, mlp=2 * unit + 1) + ATTENTION_NAMES.get(name, name) + "." + leaf
    raise UserError(f"source key {key!r} has no place in the harness's model: is --format right?")


def _transform(key: str, value: torch.Tensor, model) -> torch.Tensor:
    """Layout differences between the official tensors and ours."""
    backbone = model.backbone if isinstance(model, ELIT) else model
    if key.startswith("norm_out.linear."):  # diffusers' AdaLayerNormContinuous: (scale, shift); ours (shift, scale)
        return torch.cat(value.chunk(2)[::-1])
    if key.startswith(f"transformer_blocks.{backbone.depth - 1}.txt_mod.1."):
        return value[: 2 * backbone.hidden_size]  # the last block's text keeps its attention's shift and scale only
    if key == "x_embedder.proj.weight":  # conv over a patch == Linear over the flattened (C, p, p) patch
        return value.reshape(value.shape[0], -1)
    if key.startswith("final_layer.linear."):
        # official rows are (p, q, c) with c over the output channels (2C with learned sigma);
        # ours are (c, p, q) with the velocity's C only
        p, c = backbone.patch_embedders[0].patch[0], backbone.in_channels
        v = value.reshape(p, p, -1, *value.shape[1:])[:, :, :c]
        return v.permute(2, 0, 1, *range(3, v.ndim)).reshape(c * p * p, *value.shape[1:])
    if key.endswith("fit_layer.adaLN_modulation.1.weight") or key.endswith("fit_layer.adaLN_modulation.1.bias"):
        return value[: 6 * model.hidden_size]  # its seventh chunk is computed but never used
    if key.endswith("latent_pos_embed"):  # one row per latent at its raster position -> group-major
        grid = Grid(tuple(s // p for s, p in zip(backbone.input_shape, backbone.patch_embedders[0].patch)))
        if value.shape[0] < grid.num_tokens:
            raise UserError(f"{key} has {value.shape[0]} rows, fewer than the {grid.num_tokens} latents "
                            "of this input size")
        raster = to_groups(torch.arange(grid.num_tokens).view(1, -1, 1), grid, model.interface.group_size)
        return value[raster.reshape(-1)]
    return value


def convert_state(state: dict, model, fmt: str = "elit-official") -> tuple[dict, list[str]]:
    """Source state dict -> the harness model's state dict (checked), and the dropped keys."""
    elit = isinstance(model, ELIT)
    ours = model.state_dict()
    pieces, dropped = {}, []  # harness key -> {slot: (source key, tensor)}
    for key, value in state.items():
        target, slot = _qwen_target(key, model.depth) if fmt == QWEN else (_target_key(key, elit), 0)
        if target is None:
            dropped.append(key)
            continue
        if target not in ours:
            raise UserError(f"source key {key!r} maps to {target!r}, which the model {model.name!r} does not have "
                            "(a different model size, depth or format?)")
        pieces.setdefault(target, {})[slot] = (key, value)
    out = {}
    for target, slots in pieces.items():
        keys, values = zip(*(slots[i] for i in sorted(slots)))
        value = _transform(keys[0], torch.cat(values) if len(values) > 1 else values[0], model)
        if tuple(value.shape) != tuple(ours[target].shape):
            raise UserError(f"source key {' + '.join(map(repr, keys))} has shape {tuple(value.shape)} but "
                            f"{model.name!r} expects {tuple(ours[target].shape)} for {target!r}: set the model's "
                            "arguments with --set")
        out[target] = value.to(ours[target].dtype)
    if fmt == QWEN:  # no prompt set yet: every prompt id is the empty prompt (all padding)
        for name in ("text_embedder.prompts", "text_embedder.prompt_mask"):
            out[name] = torch.zeros(ours[name].shape, dtype=ours[name].dtype)
    missing = [k for k in ours if k not in out]
    if missing:
        raise UserError(f"the source has nothing for {missing[0]!r} ({len(missing)} keys missing in all): "
                        "is --model or --format right?")
    if "pos_embed" in state:  # fixed sin-cos: equal to ours unless the input size is wrong
        pos = model.backbone.pos_embed if elit else model.pos_embed
        if state["pos_embed"].shape != pos.shape:
            raise UserError(f"source key 'pos_embed' {tuple(state['pos_embed'].shape)} is not the sin-cos table of "
                            f"this model's grid {tuple(pos.shape)}: set input_size with --set")
        differ = (state["pos_embed"] - pos).abs().max().item()
        if differ > 1e-4:
            raise UserError(f"source key 'pos_embed' has this model's shape {tuple(pos.shape)} but other values (they "
                            f"differ by up to {differ:.3g}): not the sin-cos table of this grid; is input_size or the "
                            "checkpoint right?")
    return out, dropped


def convert(src, fmt: str, model_name: str | None, overrides: dict | None = None, weights: str = "ema",
            data: dict | None = None) -> dict:
    """A source checkpoint (file or diffusers folder) -> a harness checkpoint dict (see `checkpoint.py`)."""
    from elit_bench.models import create_model

    if fmt not in FORMATS:
        raise choices_error("format", fmt, FORMATS)
    if fmt == QWEN:
        model_name = model_name or "MMDiT-QwenImage/2"
        if not model_name.startswith("MMDiT-"):
            raise UserError(f"diffusers Qwen-Image converts to an MMDiT-* model, not {model_name!r}; an ELIT-MMDiT "
                            "fine-tunes from the converted checkpoint with train.init")
    elif not model_name:
        raise UserError(f"--format {fmt} needs --model (the harness model the checkpoint holds, e.g. SiT-XL/2)")
    elit = model_name.startswith("ELIT-")
    if fmt == "sit-official" and elit:
        raise UserError("willisma/SiT checkpoints hold SiT models: use --format elit-official for ELIT-SiT")
    if fmt == QWEN:
        state, args, files = read_diffusers(src)
        kwargs, step = qwen_kwargs(args), None
        sha = hashlib.sha256("".join(f"{name} {digest}\n" for name, digest in sorted(files.items())).encode())
        source = {"sha256": sha.hexdigest(), "files": files, "weights": None}  # one set of weights
    else:
        state, args, step = read_official(src, weights)
        kwargs = inferred_kwargs(state, args, elit)
        source = {"sha256": file_sha256(src)}
    if fmt == "sit-official":
        kwargs["time_reversed"] = False  # willisma/SiT trains with t = 0 at noise, v = data - noise
    kwargs.update(overrides or {})
    # a diffusers model is built without its tensors (Qwen-Image: 20B parameters): the converted ones suffice,
    # while the official formats need the model's values to check the sin-cos table
    with torch.device("meta" if fmt == QWEN else "cpu"):
        model = create_model(model_name, **kwargs)
    converted, dropped = convert_state(state, model, fmt)
    model.load_state_dict(converted, assign=True)  # assign: a meta model takes the tensors rather than ignore them
    return {
        "model": converted, "ema": converted, "step": step,
        "config": {
            "model": model_name, "model_kwargs": kwargs,
            "data": data or {"kind": "latents", "autoencoder": {"path": None, "scaling_factor": 0.18215}},
            "converted_from": {"path": str(Path(src).resolve()), "format": fmt, "weights": weights, **source,
                               "dropped_keys": dropped,
                               "args": {k: v for k, v in args.items() if isinstance(v, (int, float, str, bool))}},
        },
    }


# ---------------------------------------------------------------- CLI
def register(sub) -> None:
    p = sub.add_parser(
        "convert", help="import an official ELIT / SiT checkpoint or a diffusers Qwen-Image as a harness checkpoint",
        description="Convert a checkpoint of the released ELIT code (snap-research/elit, REPA-style: SiT-* and "
                    "ELIT-SiT-*), of willisma/SiT, or a diffusers Qwen-Image transformer (MMDiT-*, sized by its "
                    "config.json) into a checkpoint that `elit-bench sample`, suites and leaderboards accept. "
                    "Example: elit-bench convert 0400000.pt --format elit-official --model ELIT-SiT-XL/2 "
                    "--autoencoder /weights/sd-vae-ft-ema --out elit-xl.pt; elit-bench convert "
                    "/weights/Qwen-Image/transformer --format diffusers-qwen-image --set resolution=1024 "
                    "--out qwen-image.pt")
    p.add_argument("src", help="official checkpoint (.pt): a dict with model/ema/opt/args, or a bare state dict; "
                               "for diffusers-qwen-image a diffusers model folder (config.json, safetensors)")
    p.add_argument("--format", required=True, choices=FORMATS, help="where the checkpoint comes from")
    p.add_argument("--model", help="harness model name, e.g. ELIT-SiT-XL/2 or SiT-XL/2 (diffusers-qwen-image: "
                                   "MMDiT-QwenImage/2, the default, resized by config.json)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="model argument overriding what the weights imply, e.g. encoder_depth=8, group_size=4")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights to take (default ema)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--autoencoder", help="local diffusers AutoencoderKL folder that decodes the latents")
    data.add_argument("--pixels", action="store_true", help="the model works on pixels in [-1, 1]")
    p.add_argument("--scaling-factor", type=float, default=0.18215, help="latent scale (SD-VAE: 0.18215)")
    p.add_argument("--out", required=True, help="harness checkpoint to write (.pt)")
    p.set_defaults(func=main)


def main(args) -> int:
    data = ({"kind": "pixels"} if args.pixels else
            {"kind": "latents", "autoencoder": {"path": args.autoencoder, "scaling_factor": args.scaling_factor}})
    from elit_bench.yamlconfig import apply_overrides

    check_output(args.out, "--out", folder=False)
    overrides = apply_overrides({}, args.set or [], "--set", "encoder_depth=8")
    ckpt = convert(args.src, args.format, args.model, overrides, args.weights, data)
    save_checkpoint(args.out, ckpt)
    src = ckpt["config"]["converted_from"]
    print(f"wrote {args.out}: {ckpt['config']['model']} {ckpt['config']['model_kwargs']} from {args.format} "
          f"(sha256 {src['sha256'][:12]}; dropped {len(src['dropped_keys'])} unused keys)")
    return 0
