"""Models rebuilt from a harness checkpoint: the registry entry its config names, with its (EMA) weights."""

from __future__ import annotations

import torch

from elit_bench.errors import UserError
from elit_bench.models.registry import create_model


def model_from_checkpoint(ckpt: dict, ema: bool = True, device="cpu"):
    """Rebuild the model named in the checkpoint's config and load its (EMA) weights.

    A checkpoint of another structure, or whose weights do not fit the model its config names (missing,
    unexpected or differently shaped tensors), is a UserError that says which.
    """
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(config, dict) or "model" not in config:
        raise UserError("checkpoint has no config['model']: it was not written by elit-bench train")
    kwargs = config.get("model_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise UserError(f"checkpoint config['model_kwargs'] must be a mapping, got {type(kwargs).__name__}")
    try:
        model = create_model(config["model"], **kwargs)
    except TypeError as exc:
        raise UserError(f"checkpoint config does not build {config['model']!r}: {exc}") from None
    key = "ema" if ema and ckpt.get("ema") is not None else "model"
    state = ckpt.get(key)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"checkpoint[{key!r}] is not a state dict (name -> tensor) but a {type(state).__name__}")
    ours = model.state_dict()
    missing, unexpected = [k for k in ours if k not in state], [k for k in state if k not in ours]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in ours.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        problems = [f"{len(items)} {what} (e.g. {items[0]})" for what, items in
                    (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if items]
        raise UserError(f"checkpoint[{key!r}] does not fit {config['model']!r} {kwargs}: "
                        f"{', '.join(problems)} tensor(s)")
    model.load_state_dict(state)
    return model.to(device).eval()
