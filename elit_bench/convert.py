"""`elit-bench convert`: the authors' checkpoints -> harness checkpoints.

Formats:
- `elit-official`: snap-research/elit (its `SiT-*` and `ELIT-SiT-*`, REPA's training
  code: a dict with `model`, `ema`, `opt`, `args`). Trained with t = 1 at noise and
  v = noise - data; the harness's `SiT` family flips both inside its forward, so
  `ours(x, t, y, budget=J) == -official(x, 1 - t, y, inference_budget=J / J_max)[0]`.
- `sit-official`: willisma/SiT (`SiT-*`, learned sigma, t = 0 at noise as here).
  Its sigma half of the output is dropped.

The file is read with `weights_only=True` and only `argparse.Namespace` allowed
beyond tensors and containers. Every source key must land on a harness key of
the same shape (REPA's training-only projectors excepted), and every harness key
must be filled: the first mismatch is an error naming the key, and nothing is
written.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import torch

from elit_bench.checkpoint import check_output, save_checkpoint
from elit_bench.errors import UserError, choices_error
from elit_bench.metrics.weights import file_sha256
from elit_bench.models.elit import ELIT, to_groups
from elit_bench.models.layout import Grid

FORMATS = ("elit-official", "sit-official")

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


def convert_state(state: dict, model) -> tuple[dict, list[str]]:
    """Official state dict -> the harness model's state dict (checked), and the dropped keys."""
    elit = isinstance(model, ELIT)
    ours = model.state_dict()
    out, dropped = {}, []
    for key, value in state.items():
        target = _target_key(key, elit)
        if target is None:
            dropped.append(key)
            continue
        if target not in ours:
            raise UserError(f"source key {key!r} maps to {target!r}, which the model {model.name!r} does not have "
                            "(a different model size, depth or format?)")
        value = _transform(key, value, model)
        if tuple(value.shape) != tuple(ours[target].shape):
            raise UserError(f"source key {key!r} has shape {tuple(value.shape)} but {model.name!r} expects "
                            f"{tuple(ours[target].shape)} for {target!r}: set the model's arguments with --set")
        out[target] = value.to(ours[target].dtype)
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


def convert(src, fmt: str, model_name: str, overrides: dict | None = None, weights: str = "ema",
            data: dict | None = None) -> dict:
    """An official checkpoint -> a harness checkpoint dict (see `checkpoint.py`)."""
    from elit_bench.models import create_model

    if fmt not in FORMATS:
        raise choices_error("format", fmt, FORMATS)
    elit = model_name.startswith("ELIT-")
    if fmt == "sit-official" and elit:
        raise UserError("willisma/SiT checkpoints hold SiT models: use --format elit-official for ELIT-SiT")
    state, args, step = read_official(src, weights)
    kwargs = inferred_kwargs(state, args, elit)
    if fmt == "sit-official":
        kwargs["time_reversed"] = False  # willisma/SiT trains with t = 0 at noise, v = data - noise
    kwargs.update(overrides or {})
    model = create_model(model_name, **kwargs)
    converted, dropped = convert_state(state, model)
    model.load_state_dict(converted)
    sha = file_sha256(src)
    return {
        "model": converted, "ema": converted, "step": step,
        "config": {
            "model": model_name, "model_kwargs": kwargs,
            "data": data or {"kind": "latents", "autoencoder": {"path": None, "scaling_factor": 0.18215}},
            "converted_from": {"path": str(Path(src).resolve()), "sha256": sha, "format": fmt,
                               "weights": weights, "dropped_keys": dropped,
                               "args": {k: v for k, v in args.items() if isinstance(v, (int, float, str, bool))}},
        },
    }


# ---------------------------------------------------------------- CLI
def register(sub) -> None:
    p = sub.add_parser(
        "convert", help="import an official ELIT / SiT checkpoint as a harness checkpoint",
        description="Convert a checkpoint of the released ELIT code (snap-research/elit, REPA-style: SiT-* and "
                    "ELIT-SiT-*) or of willisma/SiT into a checkpoint that `elit-bench sample`, suites and "
                    "leaderboards accept. Example: elit-bench convert 0400000.pt --format elit-official "
                    "--model ELIT-SiT-XL/2 --autoencoder /weights/sd-vae-ft-ema --out elit-xl.pt")
    p.add_argument("src", help="official checkpoint (.pt): a dict with model/ema/opt/args, or a bare state dict")
    p.add_argument("--format", required=True, choices=FORMATS, help="where the checkpoint comes from")
    p.add_argument("--model", required=True, help="harness model name, e.g. ELIT-SiT-XL/2 or SiT-XL/2")
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
    print(f"wrote {args.out}: {args.model} {ckpt['config']['model_kwargs']} from {args.format} "
          f"(sha256 {src['sha256'][:12]}; dropped {len(src['dropped_keys'])} training-only keys)")
    return 0
