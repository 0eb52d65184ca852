"""Finding pretrained weights offline.

Nothing here downloads: machines that run the harness have no internet. A
weights file comes from the path the user names, else from the standard torch
hub cache (``torch.hub.get_dir()/checkpoints``, where torch-fidelity,
pytorch-fid and ``torch.hub`` keep downloads); otherwise the error says which
file to put where.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from elit_bench import checkpoint
from elit_bench.errors import UserError


def hub_dir() -> Path:
    """The torch hub directory (honours ``TORCH_HOME`` and ``torch.hub.set_dir``)."""
    return Path(torch.hub.get_dir())


def hub_checkpoint_dir() -> Path:
    """Where ``torch.hub`` caches downloaded weights files."""
    return hub_dir() / "checkpoints"


def resolve_weights(explicit: str | Path | None, filenames: tuple[str, ...], what: str, flag: str, url: str) -> Path:
    """Path of a weights file: `explicit` if given, else the first of `filenames` in the hub cache.

    what: human name of the network; flag: the CLI option that names the file;
    url: where the file can be fetched on a machine with internet.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UserError(f"{what} weights file {path} does not exist; check the path given to {flag}")
        return path
    for name in filenames:
        candidate = hub_checkpoint_dir() / name
        if candidate.is_file():
            return candidate
    raise UserError(
        f"{what} weights not found and this machine cannot download them: pass {flag} FILE, "
        f"or put {filenames[0]} into {hub_checkpoint_dir()}/ (fetch it elsewhere from {url})"
    )


def load_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict of tensors read with ``weights_only=True``; `UserError` for anything else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle errors, non-tensor payloads come in many types
        raise UserError(f"{path} is not a readable {what} weights file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict (name -> tensor) of {what} weights")
    return state


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return checkpoint.file_sha256(path)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, memoised on (path, size, mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)
