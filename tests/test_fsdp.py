"""Sharded training (`train.sharding: fsdp`, FSDP2) on CPU (gloo): 2 processes train what one process trains,
and a run stopped at one world size resumes at another from its sharded checkpoint.

The multi-process runs are few and shared by the tests (each launch costs most of its time in start-up):
one spawned job of 2 ranks trains several runs in turn, and one `torchrun ... elit-bench train` run has its
rank 1 arrive late, as ranks busy loading do.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from elit_bench.checkpoint import load_checkpoint
from elit_bench.distributed import SKEW_ENV
from elit_bench.errors import UserError
from elit_bench.training import resolve_config, train
from elit_bench.training.memory import gathered_bytes, run_memory_plan, state_bytes
from elit_bench.training.sharding import blocks
from helpers import free_port

# tiny ELIT, multi-budget with random dropping, micro-batches and activation checkpointing: FSDP's gathers run
# in every chunk's forward, in the recomputation of backward, and in ELIT's Read/Write (the root)
CONFIG = {"model": "ELIT-DiT-S/2", "data": "digits", "resolution": 8, "batch": 8, "multi_budget": True,
          "model_kwargs": {"hidden_size": 32, "depth": 3, "num_heads": 2, "group_size": 2, "drop": "random"},
          "lr": 1e-3, "warmup": 1, "ema_decay": 0.9, "log_every": 1, "progress": False, "sharding": "fsdp",
          "micro_batch": 2, "activation_checkpointing": True}
# the MM-DiT the paper's largest experiment shards (ELIT on its image stream; prompts indexed like labels)
MMDIT = {**CONFIG, "model": "ELIT-MMDiT-S/2", "steps": 3,
         "model_kwargs": {"hidden_size": 32, "depth": 3, "num_heads": 2, "group_size": 2, "text_dim": 16,
                          "text_tokens": 4}}
LAST = os.path.join("checkpoints", "last.pt")


def _job(rank: int, world: int, port: int, configs: list[dict], out_dir: str) -> None:
    """One job of `world` gloo ranks: `train` each config in turn in the same process group (a config trained
    twice stops and resumes), then the dtypes FSDP's mixed precision gives; rank 0 writes the summaries."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from elit_bench import distributed

    with distributed.job() as dist:
        summaries = [train(config) for config in configs]
        dtypes = {bf16: _precision_probe(dist, bf16) for bf16 in (False, True)}
    if rank == 0:
        with open(os.path.join(out_dir, "job.json"), "w") as f:
            json.dump({"summaries": summaries, "dtypes": dtypes}, f)


def _precision_probe(dist, bf16: bool) -> dict:
    """Shard a tiny model as a run would and record the dtypes of a block's weight in its forward (gathered),
    of its shard, and of the shard's gradient."""
    from elit_bench.training.sharding import shard
    from helpers import tiny

    model = tiny("DiT-S/2", depth=2, hidden_size=32, num_heads=2)
    shard([model], dist, bf16)
    block = blocks(model)[0]
    seen = []  # the weight as the layer computes with it, inside the block's forward
    block.attn.qkv.register_forward_pre_hook(lambda module, args: seen.append(str(module.weight.dtype)))
    x, t, y = torch.randn(2, 1, 16, 16), torch.rand(2), torch.zeros(2, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x, t, y).float().square().mean().backward()
    weight = block.attn.qkv.weight
    return {"gathered": seen[0], "shard": str(weight.to_local().dtype), "grad": str(weight.grad.to_local().dtype),
            "shard_rows": weight.to_local().shape[0], "rows": weight.shape[0]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run the tests compare (see each test); returns their directories and the 2-rank job's summaries."""
    root = tmp_path_factory.mktemp("fsdp")
    names = ("single", "single_2", "single_exact", "two", "two_resumed", "cli", "mmdit_single", "mmdit_two",
             "distill_single", "distill_two")
    d = {name: root / name for name in names}
    train({**CONFIG, "steps": 4, "out": str(d["single"])})
    train({**CONFIG, "steps": 2, "out": str(d["single_2"])})
    shutil.copytree(d["single_2"], d["single_exact"])
    train({**CONFIG, "steps": 4, "out": str(d["single_exact"])})  # resumed at one process
    train({**MMDIT, "out": str(d["mmdit_single"])})
    distill = {**CONFIG, "steps": 2, "teacher": str(d["single"] / LAST)}  # the teacher is sharded too
    train({**distill, "out": str(d["distill_single"])})

    # 2 ranks: 4 steps uninterrupted; 2 steps then resumed to 4; the one-process run's step 2 resumed to 4;
    # the MM-DiT; distillation
    configs = [{**CONFIG, "steps": 4, "out": str(d["two"])}, {**CONFIG, "steps": 2, "out": str(d["two_resumed"])},
               {**CONFIG, "steps": 4, "out": str(d["two_resumed"])}, {**CONFIG, "steps": 4, "out": str(d["single_2"])},
               {**MMDIT, "out": str(d["mmdit_two"])}, {**distill, "out": str(d["distill_two"])}]
    torch.multiprocessing.spawn(_job, args=(2, free_port(), configs, str(root)), nprocs=2, join=True)
    job = json.loads((root / "job.json").read_text())

    # `torchrun --nproc_per_node=2 -m elit_bench.cli train` for 2 steps, rank 1 arriving late; then the same
    # command at one process, with more steps, continues it
    overrides = [f"{k}={json.dumps(v)}" for k, v in CONFIG.items() if k != "model"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "elit_bench.cli", "train", "--model", CONFIG["model"], "--steps", "2", "--out", str(d["cli"]),
           *overrides]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", SKEW_ENV: "1:1.5"}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{SKEW_ENV}: rank 1 arrives 1.5 s late" in proc.stderr
    job["cli_resumed"] = train({**CONFIG, "steps": 4, "out": str(d["cli"])})
    return d, job


def _weights(run_dir) -> dict:
    ckpt = load_checkpoint(run_dir / LAST)
    return {f"{part}.{k}": v for part in ("model", "ema") for k, v in ckpt[part].items()}


def _assert_close(a: dict, b: dict, exact: bool = False) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_two_processes_train_what_one_process_trains(runs):
    d, job = runs
    two = job["summaries"][0]
    single = load_checkpoint(d["single"] / LAST)
    assert two["world"] == 2 and two["step"] == 4
    _assert_close(_weights(d["two"]), _weights(d["single"]))
    # the weights were sharded: the sharded checkpoint holds every matrix as 2 shards, one per rank, and its
    # EMA and AdamW moments too; one process's holds each whole
    from torch.distributed.checkpoint import FileSystemReader

    for run, shards in (("two", 2), ("single", 1)):
        meta = FileSystemReader(str(d[run] / "checkpoints" / single["sharded"])).read_metadata().state_dict_metadata
        key = next(k for k in meta if k.startswith("model.") and k.endswith("qkv.weight"))
        name = key.removeprefix("model.")
        for stored in (key, f"ema.{name}", f"optimizer.state.{name}.exp_avg"):
            assert len(meta[stored].chunks) == shards, stored


def test_mmdit_and_distillation_train_as_one_process(runs):
    d, job = runs
    assert [s["world"] for s in job["summaries"][4:]] == [2, 2]
    for run in ("mmdit", "distill"):
        _assert_close(_weights(d[f"{run}_two"]), _weights(d[f"{run}_single"]))


def test_resume_at_another_world_size(runs):
    """Stopped at 2 processes, continued at 1 (and the other way): the weights of the uninterrupted run, within
    float tolerance (2 processes sum gradients in another order)."""
    d, job = runs
    assert job["cli_resumed"]["start_step"] == 2 and job["cli_resumed"]["world"] == 1
    _assert_close(_weights(d["cli"]), _weights(d["single"]))
    one_to_two = job["summaries"][3]
    assert one_to_two["start_step"] == 2 and one_to_two["world"] == 2
    _assert_close(_weights(d["single_2"]), _weights(d["single"]))
    for run in ("cli", "single_2"):
        a, b = load_checkpoint(d[run] / LAST), load_checkpoint(d["single"] / LAST)
        assert a["data_position"] == b["data_position"] and a["step"] == 4
        # last.pt names the step's sharded checkpoint; the step-2 one it replaced is gone
        assert a["sharded"] == "sharded/step_0000004" and "optimizer" not in a
        assert sorted(p.name for p in (d[run] / "checkpoints" / "sharded").iterdir()) == ["step_0000004"]


def test_resume_is_exact_at_the_same_world_size(runs):
    """Stopped and resumed (the same command re-run): bit for bit the uninterrupted run, at 1 and at 2 processes."""
    d, job = runs
    assert job["summaries"][2]["start_step"] == 2
    _assert_close(_weights(d["two_resumed"]), _weights(d["two"]), exact=True)
    _assert_close(_weights(d["single_exact"]), _weights(d["single"]), exact=True)


def test_mixed_precision_follows_the_run_precision(runs):
    """bf16: a block computes with bf16 weights, gathered; shards and their gradients stay fp32. fp32: fp32."""
    _, job = runs
    fp32, bf16 = job["dtypes"]["false"], job["dtypes"]["true"]
    assert bf16["gathered"] == "torch.bfloat16" and fp32["gathered"] == "torch.float32"
    for probe in (fp32, bf16):
        assert probe["shard"] == probe["grad"] == "torch.float32"
        assert probe["shard_rows"] == probe["rows"] // 2


def test_unsupported_settings_are_one_line(tmp_path):
    cases = [({"compile": True}, "compile"),
             ({"model": "DyDiT-S/2", "model_kwargs": {"hidden_size": 32, "depth": 2, "num_heads": 2}, "multi_budget": False},
              "runs its blocks' sublayers itself"),
             ({"sharding": "zero3"}, "sharding")]
    for override, fragment in cases:
        with pytest.raises(UserError) as err:
            resolve_config({**CONFIG, "out": str(tmp_path / "x"), **override})
        message = str(err.value)
        assert fragment in message and "\n" not in message, message


def test_memory_plan_shards_the_training_state():
    """Under fsdp a GPU holds 1/world of the 20 bytes a parameter, plus the root's and two blocks' weights whole
    (bf16) and one block's fp32 gradients."""
    from elit_bench.training.config import build_meta_model

    cfg = resolve_config({**CONFIG, "model": "ELIT-DiT-B/2", "model_kwargs": {}, "resolution": 32, "batch": 64,
                          "micro_batch": "auto", "activation_checkpointing": "auto"}, check_out=False)
    model = build_meta_model(cfg)
    named = dict(model.named_parameters())
    block = sum(p.numel() for k, p in named.items() if k.startswith("backbone.blocks.0."))
    total = sum(p.numel() for p in named.values())
    assert len(blocks(model)) == 12
    assert gathered_bytes(model, bf16=True) == (total - 12 * block + 2 * block) * 2 + 4 * block
    ddp = run_memory_plan(cfg["model"], cfg["model_kwargs"], model, {**cfg, "sharding": "ddp"}, 8, 80e9)
    fsdp = run_memory_plan(cfg["model"], cfg["model_kwargs"], model, cfg, 8, 80e9)
    assert ddp.state == state_bytes(total, 8) == total * 24
    assert fsdp.state == -(-total * 20 // 8) + gathered_bytes(model, bf16=True) < ddp.state / 3
    assert fsdp.activations == ddp.activations
