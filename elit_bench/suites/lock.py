"""One writer per output root: `elit-bench run` holds OUT/<suite>/<scale>/LOCK while it works.

Two runs of one suite into one `--out` would train the same runs, merge each
other's sample parts and write the same records. The lock is an exclusive
`flock` on the file `LOCK`, which holds the holder's host, pid, start time and
command (JSON), so that a second `run` can say who holds it, then exit 2 or, with
`--wait-lock`, wait. The kernel drops the flock when its process dies (also on
SIGKILL, on the file server's side for NFS), so a lock is never stuck; a LOCK
file whose flock was dropped without the file being removed is stale, and the
next `run` takes it over with a warning naming the old holder. It is removed on
exit, also after an exception or Ctrl-C.

Only the launching process takes the lock: the processes it starts (torchrun
ranks, SLURM tasks) work under it. `torchrun --nodes N` starts the same command on
every node into one shared `--out`, so there the nodes share the root and no
lock is taken.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from elit_bench.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = "LOCK"


def holder_text(info: dict) -> str:
    """'pid 123 on host gpu-1 since 2026-01-02T03:04:05 (elit-bench run quickstart ...)'."""
    if not info:
        return "another process (no holder recorded yet)"
    command = f" ({info['command']})" if info.get("command") else ""
    return f"pid {info.get('pid')} on host {info.get('host')} since {info.get('started')}{command}"


def _read(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):
        return True  # someone else's process, or nothing we can check: not known to be dead
    return True


def run_lock(root, launcher: str = "local", nodes: int = 1, wait: bool = False, command: list[str] | None = None):
    """The lock a suite run into `root` holds: `output_lock`, or none in a process the launcher started (RANK or
    SLURM_PROCID above 0) and in a multi-node torchrun (every node starts the same command into the same root)."""
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    if rank != "0" or (launcher == "torchrun" and nodes > 1):
        return contextlib.nullcontext()
    return output_lock(root, wait, command)


@contextlib.contextmanager
def output_lock(root, wait: bool = False, command: list[str] | None = None):
    """Hold the lock of output root `root` for the body (see the module docstring).

    Held by another live process: UserError naming it, or (wait) block until it is released.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = holder_text(_read(path))
            if not wait:
                raise UserError(f"{str(root)!r} is in use by {holder}: wait for it to finish, pass --wait-lock, "
                                "or give another --out") from None
            if not told:
                log.warning("waiting for %s, which holds %s", holder, path)
                told = True
            time.sleep(1.0)
            continue
        # the holder we waited for removed the file after we opened it: lock the file now at `path` instead
        if not path.exists() or os.stat(path).st_ino != os.fstat(fd).st_ino:
            os.close(fd)
            continue
        break
    try:
        stale = _read(path)
        if stale:  # the flock is free but the file was not removed: its holder died
            dead = "not running" if stale.get("host") == socket.gethostname() and not _alive(stale.get("pid")) \
                else "its lock released"
            log.warning("taking over the stale lock %s of %s (%s)", path, holder_text(stale), dead)
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": " ".join(command or sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield info
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before the flock goes: a waiter then sees a new file (see the inode check above)
        os.close(fd)
