"""Models rebuilt from a harness checkpoint: the registry entry its config names, with its (EMA) weights."""

from __future__ import annotations

import torch

from elit_bench.checkpoint import load_checkpoint
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
    problems = fit_problems(model.state_dict(), state)
    if problems:
        raise UserError(f"checkpoint[{key!r}] does not fit {config['model']!r} {kwargs}: {problems} tensor(s)")
    model.load_state_dict(state)
    return model.to(device).eval()


def fit_problems(ours: dict, state: dict, new: tuple[str, ...] = ()) -> str | None:
    """What keeps `state` from loading into a model whose state dict is `ours`: missing (except names
    starting with a `new` prefix), unexpected and differently shaped tensors, each counted with an example."""
    missing = [k for k in ours if k not in state and not k.startswith(new)]
    unexpected = [k for k in state if k not in ours]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in ours.items()
              if k in state and state[k].shape != v.shape]
    problems = [f"{len(items)} {what} (e.g. {items[0]})" for what, items in
                (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if items]
    return ", ".join(problems) or None


def load_init_weights(model, path) -> None:
    """Start training from the (EMA) weights of the checkpoint at `path` (`train.init`: fine-tuning).

    A wrapper that fine-tunes a base model (DyDiT around a DiT) keeps the base's weights under
    `model.base_prefix` and lists its own parameters' prefixes in `model.new_parameters`: a base checkpoint
    loads under the prefix and those parameters keep their initialisation; a checkpoint of the wrapper
    itself loads as it is. Anything else that does not fit is a UserError naming it.
    """
    ckpt = load_checkpoint(path)
    state = ckpt.get("ema") if isinstance(ckpt, dict) and ckpt.get("ema") is not None else \
        ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"train.init {str(path)!r} holds no model state dict (expected a checkpoint written by "
                        "`elit-bench train` or `elit-bench convert`)")
    ours, prefix = model.state_dict(), getattr(model, "base_prefix", "")
    if prefix and not set(state) & set(ours):  # a base model's weights
        state = {prefix + k: v for k, v in state.items()}
    problems = fit_problems(ours, state, tuple(getattr(model, "new_parameters", ())))
    if problems:
        raise UserError(f"train.init {str(path)!r} does not fit {getattr(model, 'name', type(model).__name__)!r}: "
                        f"{problems} tensor(s); give a checkpoint of the same architecture")
    model.load_state_dict(state, strict=False)
