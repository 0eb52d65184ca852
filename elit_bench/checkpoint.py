"""Checkpoints and other artifacts: atomic writes, safe loads, models rebuilt from their config.

A checkpoint is a dict with at least `model` (state dict), `ema` (state
dict), `step` and `config` (the resolved run config; `config["model"]` names
the registry entry and `config["model_kwargs"]` its `create_model` overrides).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from elit_bench.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path) then rename over `path`: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # the mode a plain open() gives, not mkstemp's private 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_save(path: str | os.PathLike, save) -> Path:
    """`atomic_write` for savers that take an open binary file (np.save, np.savez, torch.save):
    given the temporary path itself, np.savez would append ".npz" to it."""
    def write(tmp):
        with open(tmp, "wb") as f:
            save(f)
    return atomic_write(path, write)


def save_checkpoint(path, obj: dict) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load with `weights_only=True` (checkpoints are untrusted files)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist (expected a .pt file written by `elit-bench train`)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupted or not a checkpoint
        raise UserError(f"cannot read checkpoint {str(path)!r}: {exc}") from exc


def checkpoint_config(path) -> tuple[dict, int | None]:
    """(config, step) of a harness checkpoint, memory-mapped so that a large file is not read."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist (a .pt file written by `elit-bench train` "
                        "or `elit-bench convert`)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise UserError(f"cannot read checkpoint {str(path)!r}: {exc}") from exc
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not config or "model" not in config:
        raise UserError(f"checkpoint {str(path)!r} has no config['model']: write it with `elit-bench train` or "
                        "import it with `elit-bench convert`")
    return config, ckpt.get("step")


def model_from_checkpoint(ckpt: dict, ema: bool = True, device="cpu"):
    """Rebuild the model named in the checkpoint's config and load its (EMA) weights."""
    from elit_bench.models import create_model

    config = ckpt.get("config") or {}
    if "model" not in config:
        raise UserError("checkpoint has no config['model']: it was not written by elit-bench train")
    model = create_model(config["model"], **config.get("model_kwargs", {}))
    key = "ema" if ema and ckpt.get("ema") is not None else "model"
    model.load_state_dict(ckpt[key])
    return model.to(device).eval()
