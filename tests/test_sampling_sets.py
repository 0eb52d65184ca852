"""`elit-bench sample` sets: independent of batch size and process count, resumable after SIGKILL,
recorded (FLOPs included), refusing to mix settings, and failing fast on bad input."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from elit_bench import cli
from elit_bench.checkpoint import load_checkpoint, save_checkpoint
from elit_bench.flops import forward_flops
from elit_bench.models import model_from_checkpoint
from elit_bench.sampling.generate import Recipe, format_seeds, parse_seeds, prepare, sample_seeds, seed_list
from helpers import randomize, tiny

TINY = dict(input_size=8, in_channels=1, num_classes=10, hidden_size=64, depth=4, num_heads=4)
DATA = {"name": "digits", "kind": "pixels", "resolution": 8, "channels": 1, "num_classes": 10, "frames": None,
        "crop": None, "autoencoder": None}
# CCFG with TeaCache and a budget schedule: every stage of a sampling run in one set
GUIDED = ["--steps", "6", "--guidance", "ccfg", "--scale", "0.5", "--guide-budget", "1", "--schedule", "2@0,4@0.5",
          "--teacache", "1.5"]



def write_checkpoint(path, name, **kw):
    model = randomize(tiny(name, **TINY, **kw))
    sd = model.state_dict()
    save_checkpoint(path, {"model": sd, "ema": sd, "step": 0,
                           "config": {"model": name, "model_kwargs": {**TINY, **kw}, "data": DATA}})
    return str(path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "elit.pt", "ELIT-DiT-S/2", group_size=2)


@pytest.fixture(scope="module")
def baseline_ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "dit.pt", "DiT-S/2")


def sample(ckpt, out, *args):
    return cli.main(["sample", ckpt, "--out", str(out), "--no-progress", *args])


def load(out):
    with np.load(out / "samples.npz") as z:
        return z["arr_0"], z["arr_1"]


def record(out):
    return json.loads((out / "samples.json").read_text())


def command(ckpt, out, *args):
    return [sys.executable, "-m", "elit_bench.cli", "sample", ckpt, "--out", str(out), "--no-progress", *args]


def quiet_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------- independence from batch and processes
def test_same_seeds_give_the_same_floats_with_batch_1_and_7(ckpt):
    model = model_from_checkpoint(load_checkpoint(ckpt))
    setup = prepare(model, Recipe(steps=6, guidance="ccfg", scale=0.5, guide_budget=1, schedule="2@0,4@0.5",
                                  teacache=1.5))
    assert any(ev.passes[0].skip for ev in setup.plan)
    seeds = list(range(7))
    together, labels = sample_seeds(setup, seeds, seeds)
    alone = [sample_seeds(setup, [s], [s]) for s in seeds]
    torch.testing.assert_close(together, torch.cat([a[0] for a in alone]), rtol=0, atol=1e-6)
    assert labels.tolist() == [a[1].item() for a in alone]
    assert together.abs().mean() > 0.1  # a perturbed model: real samples, not zeros


def test_same_seeds_give_the_same_set_with_batch_1_and_7(ckpt, tmp_path):
    assert sample(ckpt, tmp_path / "b1", "--num", "9", "--batch", "1", *GUIDED) == 0
    assert sample(ckpt, tmp_path / "b7", "--num", "9", "--batch", "7", *GUIDED) == 0
    (a, la), (b, lb) = load(tmp_path / "b1"), load(tmp_path / "b7")
    assert a.shape == (9, 8, 8, 3) and a.dtype == np.uint8 and np.array_equal(a[..., 0], a[..., 2])
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert len(set(la.tolist())) > 1 and len(np.unique(a)) > 10


def test_same_seeds_give_the_same_set_on_1_and_2_processes(ckpt, tmp_path):
    args = ["--seeds", "0-6", "--batch", "2", *GUIDED]  # torchrun's parser takes --num for its --numa-binding
    assert sample(ckpt, tmp_path / "one", *args) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run = subprocess.run(torchrun + command(ckpt, tmp_path / "two", *args)[1:], env=quiet_env(),
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    (a, la), (b, lb) = load(tmp_path / "one"), load(tmp_path / "two")
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert record(tmp_path / "two")["world_size"] == 2


def test_seeds_select_samples_whatever_the_set(ckpt, tmp_path):
    assert sample(ckpt, tmp_path / "all", "--seeds", "0-5", "--steps", "3") == 0
    assert sample(ckpt, tmp_path / "some", "--seeds", "4,1", "--steps", "3") == 0
    (a, la), (b, lb) = load(tmp_path / "all"), load(tmp_path / "some")
    assert np.array_equal(b, a[[4, 1]]) and np.array_equal(lb, la[[4, 1]])
    assert sample(ckpt, tmp_path / "labels", "--num", "4", "--steps", "3", "--class-labels", "7", "2") == 0
    assert load(tmp_path / "labels")[1].tolist() == [7, 2, 7, 2]


def test_random_dropping_draws_from_each_samples_generator(tmp_path):
    model = randomize(tiny("ELIT-DiT-S/2", **TINY, group_size=2, drop="random")).eval()
    setup = prepare(model, Recipe(steps=3, budget=2))
    together = sample_seeds(setup, [0, 1, 2], [0, 1, 2])[0]
    alone = torch.cat([sample_seeds(setup, [s], [s])[0] for s in (0, 1, 2)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- record and FLOPs
def test_record_holds_the_settings_and_the_analytic_flops_of_ccfg(ckpt, tmp_path):
    out = tmp_path / "ccfg"
    args = ["--num", "3", "--steps", "5", "--guidance", "ccfg", "--scale", "0.25", "--budget", "4",
            "--guide-budget", "1", "--grid"]
    assert sample(ckpt, out, *args) == 0
    rec = record(out)
    model = model_from_checkpoint(load_checkpoint(ckpt))
    full, cheap = forward_flops(model, 4), forward_flops(model, 1)
    assert rec["flops_per_sample"] == 5 * (full + cheap)  # one full and one cheap forward per step
    assert rec["flops_vs_cfg"] == pytest.approx((full + cheap) / (2 * full))
    with open(ckpt, "rb") as f:
        assert rec["checkpoint_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert (rec["model"], rec["ema"], rec["steps"], rec["sampler"], rec["guidance"], rec["scale"]) == \
        ("ELIT-DiT-S/2", True, 5, "euler", "ccfg", 0.25)
    assert (rec["budget"], rec["guide_budget"], rec["schedule"], rec["seeds"], rec["num_samples"]) == \
        (4, 1, [4] * 5, "0-2", 3)
    assert rec["teacache_threshold"] is None and rec["teacache_skipped_steps"] == 0
    assert {"torch", "numpy"} <= set(rec["versions"]) and rec["device"].startswith("cpu")
    assert (out / "grid.png").exists() and not (out / "parts").exists()


def test_record_counts_teacache_skips_at_embed_and_final_cost(ckpt, tmp_path):
    out = tmp_path / "tea"
    assert sample(ckpt, out, "--num", "2", "--steps", "6", "--teacache", "1000") == 0
    rec = record(out)
    model = model_from_checkpoint(load_checkpoint(ckpt))
    macs = model.macs(budget=4)
    assert rec["teacache_skipped_steps"] == 4  # all but the first and the last
    assert rec["flops_per_sample"] == 2 * forward_flops(model, 4) + 4 * 2 * (macs["embed"] + macs["final"])


# ---------------------------------------------------------------- resume
def test_rerun_after_sigkill_completes_the_set_without_redoing_finished_seeds(ckpt, tmp_path):
    args = ["--num", "40", "--batch", "1", "--steps", "20"]
    out = tmp_path / "killed"
    proc = subprocess.Popen(command(ckpt, out, *args), env=quiet_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((out / "parts").glob("part-*.npz"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "samples.json").exists(), "the run finished before it could be killed"
    finished = set()
    for part in (out / "parts").glob("part-*.npz"):
        with np.load(part) as z:
            finished |= set(z["seeds"].tolist())
    assert 3 <= len(finished) < 40

    assert sample(ckpt, out, *args) == 0
    assert record(out)["resumed_samples"] == len(finished)
    assert sample(ckpt, tmp_path / "whole", *args[:2], "--batch", "8", *args[4:]) == 0
    (a, la), (b, lb) = load(out), load(tmp_path / "whole")
    assert np.array_equal(a, b) and np.array_equal(la, lb)


def test_rerun_of_a_complete_set_does_nothing_and_other_settings_are_refused(ckpt, tmp_path, capsys):
    out = tmp_path / "set"
    assert sample(ckpt, out, "--num", "2", "--steps", "3") == 0
    before = (out / "samples.npz").stat().st_mtime_ns
    assert sample(ckpt, out, "--num", "2", "--steps", "3", "--batch", "1") == 0  # batch size is not a setting
    assert (out / "samples.npz").stat().st_mtime_ns == before
    capsys.readouterr()
    assert sample(ckpt, out, "--num", "2", "--steps", "4") == 2
    assert "steps" in capsys.readouterr().err
    assert sample(ckpt, out, "--num", "3", "--steps", "3") == 2
    assert (out / "samples.npz").stat().st_mtime_ns == before



@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "no hash in the record"])
def test_a_set_that_does_not_verify_is_sampled_again(ckpt, tmp_path, damage, caplog):
    """samples.json holds the size and SHA-256 of samples.npz: a damaged file is deleted and drawn again (once),
    not trusted and not an endless "rerun" loop."""
    out = tmp_path / "set"
    assert sample(ckpt, out, "--num", "3", "--steps", "2") == 0
    good, rec = (out / "samples.npz").read_bytes(), record(out)
    assert rec["samples_npz"] == {"bytes": len(good), "sha256": hashlib.sha256(good).hexdigest()}
    if damage == "flipped byte":
        (out / "samples.npz").write_bytes(good[:-100] + bytes([good[-100] ^ 1]) + good[-99:])
    elif damage == "truncated":
        (out / "samples.npz").write_bytes(good[: len(good) // 2])
    else:  # a set written before sets were verified
        (out / "samples.json").write_text(json.dumps({k: v for k, v in rec.items() if k != "samples_npz"}))
    assert sample(ckpt, out, "--num", "3", "--steps", "2") == 0
    assert "does not match the size and SHA-256" in caplog.text
    assert (out / "samples.npz").read_bytes() == good and record(out)["resumed_samples"] == 0
    stamp = (out / "samples.npz").stat().st_mtime_ns
    assert sample(ckpt, out, "--num", "3", "--steps", "2") == 0  # verified now: kept as it is
    assert (out / "samples.npz").stat().st_mtime_ns == stamp


def test_a_stale_temporary_file_of_the_final_merge_is_removed(ckpt, tmp_path):
    out = tmp_path / "set"
    assert sample(ckpt, out, "--num", "3", "--steps", "2") == 0
    (out / "samples.json").unlink()  # killed during the final merge: no record yet, a half-written samples.npz
    stale = out / ".samples.npz.k1ll3d.tmp"
    stale.write_bytes(b"PK\x03\x04 half a zip")
    assert sample(ckpt, out, "--num", "3", "--steps", "2") == 0
    assert not stale.exists() and not list(out.glob(".*.tmp")) and record(out)["num_samples"] == 3


@pytest.mark.parametrize("text", ["{\"steps\": 2", "[1, 2]", "\xff\xfe"])
def test_a_damaged_settings_file_is_one_line_naming_it(ckpt, tmp_path, capsys, text):
    out = tmp_path / "set"
    out.mkdir()
    (out / "settings.json").write_bytes(text.encode("latin-1"))
    assert sample(ckpt, out, "--num", "2", "--steps", "2") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out / "settings.json") in err


def test_non_finite_samples_are_refused_not_cast_to_images(tmp_path, capsys):
    """A diverged model (NaN weights): the set stops with an error naming the checkpoint, the seeds and the
    sampling steps; no part, no samples.npz, no record."""
    path = tmp_path / "diverged.pt"
    model = randomize(tiny("DiT-S/2", **TINY))
    sd = {k: torch.full_like(v, float("nan")) if k.startswith("final_layer") else v
          for k, v in model.state_dict().items()}
    save_checkpoint(path, {"model": sd, "ema": sd, "step": 7, "config": {"model": "DiT-S/2", "model_kwargs": TINY,
                                                                         "data": DATA}})
    out = tmp_path / "set"
    assert sample(str(path), out, "--seeds", "4-6", "--steps", "3") == 2
    err = capsys.readouterr().err
    assert str(path) in err and "4-6" in err and "3 euler steps" in err and "NaN/inf" in err
    assert not (out / "samples.npz").exists() and not (out / "samples.json").exists()
    assert not list((out / "parts").glob("part-*.npz"))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("args", [
    ["--num", "2", "--budget", "0"],
    ["--num", "2", "--budget", "5"],
    ["--num", "2", "--guidance", "ccfg", "--budget", "2", "--guide-budget", "3"],
    ["--num", "2", "--guidance", "nope"],
    ["--num", "2", "--schedule", "4@0,x"],
    ["--seeds", "5-2"],
    ["--seeds", "a-b"],
    ["--num", "3", "--seeds", "0-9"],
    ["--num", "0"],
    ["--num", "2", "--batch", "0"],
])
def test_bad_input_exits_2_before_writing(ckpt, tmp_path, args, capsys):
    assert sample(ckpt, tmp_path / "out", "--steps", "2", *args) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_and_budgets_on_a_baseline_exit_2(baseline_ckpt, tmp_path):
    assert sample(str(tmp_path / "none.pt"), tmp_path / "out", "--num", "2") == 2
    assert sample(baseline_ckpt, tmp_path / "out", "--num", "2", "--budget", "2") == 2
    assert sample(baseline_ckpt, tmp_path / "out", "--num", "2", "--guidance", "ag", "--guide-budget", "1") == 2
    assert not (tmp_path / "out").exists()
    assert sample(baseline_ckpt, tmp_path / "ok", "--num", "2", "--steps", "2", "--guidance", "cfg") == 0


def test_seed_lists_round_trip():
    assert parse_seeds("0-3,7,9-10") == [0, 1, 2, 3, 7, 9, 10]
    assert format_seeds([0, 1, 2, 3, 7, 9, 10]) == "0-3,7,9-10"
    assert seed_list(num=3) == [0, 1, 2]
    assert seed_list(num=2, seeds="5-6") == [5, 6]
