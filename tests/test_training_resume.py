"""Checkpoints and resume: exact continuation, idempotent re-runs, and crash safety under SIGKILL."""

import os
import random
import signal
import subprocess
import sys
import time

import torch

from elit_bench.checkpoint import load_checkpoint
from elit_bench.cli import main
from elit_bench.models import model_from_checkpoint

# tiny ELIT on 8 px digits (4x4 tokens, 4 groups of 2x2, J=4); random dropping and budget draws
# exercise every seeded random stream of an iteration
TINY = ["--model", "ELIT-DiT-S/2", "--data", "digits", "--resolution", "8", "--batch", "8",
        "--multi-budget", "--drop", "random", "model_kwargs.hidden_size=32", "model_kwargs.depth=3",
        "model_kwargs.num_heads=2", "model_kwargs.group_size=2", "ema_decay=0.9", "warmup=2", "lr=1e-3",
        "log_every=1", "progress=false"]



def _train(out, steps, *extra):
    return main(["train", *TINY, "--steps", str(steps), "--out", str(out), *extra])


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_is_bit_exact(tmp_path):
    """N steps at once == N/2 steps, then the same command with --steps N (model, EMA, optimizer)."""
    assert _train(tmp_path / "straight", 6) == 0
    assert _train(tmp_path / "halves", 3, "ckpt_every=100") == 0
    assert load_checkpoint(tmp_path / "halves/checkpoints/last.pt")["step"] == 3  # saved at the end
    assert _train(tmp_path / "halves", 6, "ckpt_every=100") == 0
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "halves/checkpoints/last.pt")
    assert a["step"] == b["step"] == 6
    assert a["data_position"] == b["data_position"]
    assert _states_equal(a["model"], b["model"])
    assert _states_equal(a["ema"], b["ema"])
    assert not _states_equal(a["model"], a["ema"])  # EMA lags the weights
    assert all(torch.equal(x, y) for x, y in zip(a["optimizer"]["state"][0].values(),
                                                 b["optimizer"]["state"][0].values()))


def test_checkpoint_rebuilds_model_and_rerun_is_noop(tmp_path, capsys):
    assert _train(tmp_path, 2) == 0
    ckpt = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert {"model", "ema", "step", "config", "optimizer", "scheduler", "rng", "data_position"} <= set(ckpt)
    model = model_from_checkpoint(ckpt)
    x = torch.randn(2, 1, 8, 8)
    assert model(x, torch.rand(2), torch.tensor([1, 10]), budget=2).shape == x.shape
    mtime = (tmp_path / "checkpoints/last.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert _train(tmp_path, 2) == 0
    assert "complete" in capsys.readouterr().out
    assert (tmp_path / "checkpoints/last.pt").stat().st_mtime_ns == mtime


def test_rerun_with_other_settings_is_refused(tmp_path, capsys):
    assert _train(tmp_path, 1) == 0
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert _train(tmp_path, 2, "lr=5e-4") == 2
    assert "different run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_sigkill_while_checkpointing_never_corrupts(tmp_path):
    """Kill -9 at random moments around checkpoint writes; last.pt always loads and a rerun finishes."""
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "last.pt"
    # a wider model so each checkpoint write takes a while; a checkpoint every step
    cmd = [sys.executable, "-m", "elit_bench.cli", "train", *TINY, "--steps", "400", "--out", str(out),
           "ckpt_every=1", "model_kwargs.hidden_size=128"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(0)
    steps_seen, torn_writes = [], 0
    for _ in range(5):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        previous = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        deadline = time.time() + 60
        while (not ckpt.exists() or ckpt.stat().st_mtime_ns == previous) and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))  # land inside a later write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        torn_writes += any(ckpt.parent.glob(".last.pt.*.tmp"))
        steps_seen.append(load_checkpoint(ckpt)["step"])  # never a partial file
    assert steps_seen == sorted(steps_seen) and steps_seen[0] >= 1
    assert torn_writes, "no kill landed inside a checkpoint write: the test did not exercise that case"
    last = steps_seen[-1]
    assert main(["train", *TINY, "--steps", str(last + 2), "--out", str(out), "ckpt_every=1",
                 "model_kwargs.hidden_size=128"]) == 0
    assert load_checkpoint(ckpt)["step"] == last + 2
    # temp files of killed writes are cleared; the checkpoint's SHA-256 is beside it
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt", "last.pt.sha256"]


def test_snapshots_for_convergence_curves(tmp_path):
    assert _train(tmp_path, 4, "snapshot_every=2") == 0
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert names == ["last.pt", "step_0000002.pt", "step_0000004.pt"]
    assert load_checkpoint(tmp_path / "checkpoints/step_0000002.pt")["step"] == 2
