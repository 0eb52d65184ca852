"""Checkpoints and other artifacts: atomic writes, safe and verified loads, content hashes.

A checkpoint is a dict with at least `model` (state dict), `ema` (state
dict), `step` and `config` (the resolved run config; `config["model"]` names
the registry entry and `config["model_kwargs"]` its `create_model` overrides).
`save_checkpoint` writes the file's SHA-256 beside it (`last.pt.sha256`, in
`sha256sum` format) and `load_checkpoint` checks it: torch does not check the
CRCs of its zip archive, so a flipped byte in tensor data would otherwise load
as a slightly different model. A checkpoint without that file (older runs,
imported files) loads unverified, as before. A leaf module: models are rebuilt from
a checkpoint's config in `elit_bench.models.loading`.

Hashes: `file_sha256` of a file's bytes; `canonical_hash` of a JSON-able value
(sorted keys), cut to an explicit length: run ids, evaluation ids and cache keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path

import torch

from elit_bench.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)
HASH_CHUNK = 1 << 20
SHA256_SUFFIX = ".sha256"


@contextlib.contextmanager
def interrupts_deferred():
    """Ctrl-C (SIGINT) inside the block takes effect when it ends, as a KeyboardInterrupt.

    A KeyboardInterrupt raised inside torch.save's archive writer is replaced by the writer's own
    RuntimeError while it unwinds, so an interrupted run would report a failed save instead of an
    interruption; the write is short, so it is finished first. Main thread only (signals are delivered there).
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path) then rename over `path`: readers never see a partial file.

    An OSError without a file name (a full disk found by write or fsync) is raised again naming `path`.
    Ctrl-C during the write takes effect once the file is in place (`interrupts_deferred`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with interrupts_deferred():
        return _write_and_replace(path, write)


def _write_and_replace(path: Path, write) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # the mode a plain open() gives, not mkstemp's private 0600
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
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


def read_text(path: str | os.PathLike, what: str) -> str:
    """A text file's content; a file that is not UTF-8 is a UserError naming it (`what`: "suite file", ...)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") \
            from None


def check_output(path: str | os.PathLike, what: str, folder: bool = True) -> Path:
    """Check, before any work, that `path` can be written: a folder (or a file when `folder` is False) that
    exists or can be created. UserError naming the problem otherwise; nothing is created."""
    path = Path(path).expanduser()
    if path.exists() and path.is_dir() != folder:
        raise UserError(f"{what} {str(path)!r} is a {'file' if folder else 'folder'}; give a "
                        f"{'folder' if folder else 'file'} path")
    parent = path if folder else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} {str(path)!r} cannot be created: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {str(path)!r} cannot be written: {str(parent)!r} is read-only or not yours; "
                        "choose another path")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_hash(obj, length: int) -> str:
    """The first `length` hex digits of the SHA-256 of `obj` as JSON with sorted keys (other values as str).

    Equal settings give equal hashes whatever their key order: run ids (10 digits), evaluation ids (8)
    and feature-cache keys (40) are such hashes, so changing this changes every stored id.
    """
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


class _HashingWriter:
    """A binary file that hashes what is written through it, and keeps the OSError of a failed write:
    torch.save reports a full disk as "unexpected pos ..." instead."""

    def __init__(self, file):
        self.file, self.digest, self.error = file, hashlib.sha256(), None

    def write(self, data) -> int:
        try:
            written = self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.digest.update(data)
        return written

    def flush(self) -> None:
        self.file.flush()


def sha256_path(path: str | os.PathLike) -> Path:
    """The SHA-256 sidecar of a checkpoint: `last.pt` -> `last.pt.sha256`."""
    path = Path(path)
    return path.with_name(path.name + SHA256_SUFFIX)


def save_checkpoint(path, obj: dict) -> Path:
    """Atomically write `obj` with torch.save, then its SHA-256 beside it (also atomically)."""
    path, sidecar, digest = Path(path), sha256_path(path), []

    def write(tmp):
        with open(tmp, "wb") as f:
            writer = _HashingWriter(f)
            try:
                torch.save(obj, writer)
            except RuntimeError:
                if writer.error is not None:
                    raise OSError(writer.error.errno, writer.error.strerror, str(path)) from None
                raise
        digest.append(writer.digest.hexdigest())
        # the old hash goes before the new file replaces the old one: a kill in between leaves a checkpoint that
        # loads unverified, never one that fails against the hash of its predecessor
        sidecar.unlink(missing_ok=True)

    with interrupts_deferred():  # Ctrl-C leaves the checkpoint and its hash both written
        atomic_write(path, write)
        atomic_write(sidecar, lambda tmp: Path(tmp).write_text(f"{digest[0]}  {path.name}\n"))
    return path


def verify_checkpoint(path) -> bool | None:
    """True if `path` matches its SHA-256 sidecar, False if not, None when it has none (not verifiable)."""
    sidecar = sha256_path(path)
    if not sidecar.is_file():
        return None
    expected = sidecar.read_text().split()[:1]
    return bool(expected) and file_sha256(path) == expected[0]


def last_good_snapshot(path) -> Path | None:
    """The newest `step_*.pt` beside `path` (itself excluded) that matches its SHA-256, if any."""
    path = Path(path)
    for snapshot in sorted(path.parent.glob("step_*.pt"), reverse=True):
        if snapshot != path and verify_checkpoint(snapshot):
            return snapshot
    return None


def load_checkpoint(path, map_location="cpu", mmap: bool = False) -> dict:
    """Load with `weights_only=True` (checkpoints are untrusted files), after checking the SHA-256 written at save.
    mmap: map the file's tensors rather than read them into memory (the ranks of one host share the page cache)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist (expected a .pt file written by `elit-bench train`)")
    if verify_checkpoint(path) is False:
        good = last_good_snapshot(path)
        raise UserError(f"checkpoint {str(path)!r} does not match its SHA-256 ({sha256_path(path).name}): the file is "
                        "damaged; " + (f"the last good snapshot is {str(good)!r}: copy it (and its .sha256) over it"
                                       if good else "no verified snapshot beside it: delete it and retrain"))
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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
    if not isinstance(config, dict) or "model" not in config:
        raise UserError(f"checkpoint {str(path)!r} has no config['model']: write it with `elit-bench train` or "
                        "import it with `elit-bench convert`")
    return config, ckpt.get("step")
