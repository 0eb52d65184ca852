"""DDP on CPU (gloo): N processes train exactly the run one process trains, with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from elit_bench.checkpoint import load_checkpoint
from elit_bench.training import train
from helpers import train_ddp

# tiny ELIT, multi-budget with random dropping and class dropout: every per-iteration draw is exercised
CONFIG = {"model": "ELIT-DiT-S/2", "data": "digits", "resolution": 8, "batch": 8, "steps": 5, "multi_budget": True,
          "model_kwargs": {"hidden_size": 32, "depth": 3, "num_heads": 2, "group_size": 2, "drop": "random"},
          "lr": 1e-3, "warmup": 1, "ema_decay": 0.9, "log_every": 1, "progress": False}


def test_two_processes_follow_the_single_process_run(tmp_path):
    single = train({**CONFIG, "out": str(tmp_path / "single")})
    ranks = train_ddp({**CONFIG, "out": str(tmp_path / "ddp")}, tmp_path)

    # the budget (and batch) drawn each iteration: identical on both ranks and equal to one process's draws
    assert ranks[0]["budgets"] == ranks[1]["budgets"] == single["budgets"]
    assert len(set(single["budgets"])) > 1
    assert ranks[0]["world"] == 2 and single["world"] == 1
    # the loss curve (averaged over ranks) matches one process within float tolerance
    for r in ranks:
        assert r["losses"] == pytest.approx(single["losses"], rel=1e-4, abs=1e-6)
    a = load_checkpoint(tmp_path / "single/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "ddp/checkpoints/last.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)


def test_torchrun_run_continues_on_one_process(tmp_path):
    """`torchrun --nproc_per_node=2 -m elit_bench.cli train` for 2 steps, then 2 more steps on one process,
    equals 4 steps on one process: the data position and random streams do not depend on the world size."""
    out = tmp_path / "run"
    overrides = [f"{k}={json.dumps(v)}" for k, v in CONFIG.items() if k not in ("model", "steps")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "elit_bench.cli", "train", "--model", CONFIG["model"], "--steps", "2", "--out", str(out), *overrides]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert load_checkpoint(out / "checkpoints/last.pt")["step"] == 2
    assert train({**CONFIG, "steps": 4, "out": str(out)})["start_step"] == 2
    train({**CONFIG, "steps": 4, "out": str(tmp_path / "single")})
    a = load_checkpoint(tmp_path / "single/checkpoints/last.pt")
    b = load_checkpoint(out / "checkpoints/last.pt")
    assert a["data_position"] == b["data_position"]
    for key in a["ema"]:
        torch.testing.assert_close(a["ema"][key], b["ema"][key], rtol=1e-4, atol=1e-5)
