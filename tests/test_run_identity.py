"""Run identity: raising `train.steps` continues a finished suite run; evaluations follow the checkpoint step
and reach the run's TensorBoard."""

import importlib.machinery
import json
import sys
import types

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from elit_bench.checkpoint import load_checkpoint
from elit_bench.cli import main
from elit_bench.suites.cli import parse_sets
from elit_bench.suites.runner import DONE, RECORDS, run_dir
from elit_bench.suites.spec import load_suite
from elit_bench.training import train

TINY = ["train.ckpt_every=2", "train.model_kwargs.hidden_size=32", "train.model_kwargs.depth=4",
        "metrics.num_samples=8", "sample.steps=2", "sample.batch=8"]


def quickstart(out, steps):
    sets = [arg for item in [*TINY, f"train.steps={steps}"] for arg in ("--set", item)]
    return main(["run", "quickstart", "--out", str(out), "--no-progress", *sets])


def quickstart_runs(steps):
    return load_suite("quickstart").runs("smoke", *parse_sets([*TINY, f"train.steps={steps}"]))


def test_raising_steps_continues_a_finished_quickstart_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ELIT_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    assert quickstart(out, 2) == 0
    first = quickstart_runs(2)
    assert quickstart(out, 4) == 0
    assert "resuming" in capsys.readouterr().out
    later = quickstart_runs(4)
    assert [r.id for r in later] == [r.id for r in first]  # the same runs, continued
    for run in later:
        rdir = run_dir(out, run)
        assert load_checkpoint(rdir / "train/checkpoints/last.pt")["step"] == 4
        assert json.loads((rdir / DONE).read_text())["step"] == 4
        for ev in run.evals:  # re-evaluated at the new step; the earlier record kept beside
            assert json.loads((rdir / RECORDS / f"{ev.id}.json").read_text())["train_step"] == 4
            old = json.loads((rdir / RECORDS / "superseded" / f"{ev.id}-step-2.json").read_text())
            assert old["train_step"] == 2 and old["provenance"]["train_config"]["steps"] == 2

    # every evaluation's metrics and sample grid are in the run's TensorBoard, at both checkpoint steps
    dit = later[0]
    events = EventAccumulator(str(run_dir(out, dit) / "train/tb"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    for ev in dit.evals:
        assert [e.step for e in events.Scalars(f"eval/{ev.label}/digits_fd")] == [2, 4]
        assert [e.step for e in events.Images(f"eval/{ev.label}/samples")] == [2, 4]
    assert events.Scalars("train/loss")[-1].step == 4


def test_wandb_logger_is_optional(tmp_path, monkeypatch):
    """logger: wandb logs the training scalars to W&B (here a stand-in module: no network, no package)."""
    calls = []
    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    run = types.SimpleNamespace(log=lambda values, step: calls.append((step, values)), finish=lambda: None)
    fake.init = lambda **kw: calls.append(kw) or run
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = {"model": "DiT-S/2", "resolution": 8, "batch": 4, "steps": 2, "log_every": 1, "progress": False,
              "model_kwargs": {"hidden_size": 32, "depth": 2, "num_heads": 2}, "logger": "wandb",
              "out": str(tmp_path / "run")}
    train(config)
    assert calls[0]["project"] == "elit-bench" and calls[0]["resume"] == "allow"
    assert [step for step, values in calls[1:] if "train/loss" in values] == [1, 2]
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed: refused before any work
    with pytest.raises(ValueError, match="pip install wandb"):
        train({**config, "out": str(tmp_path / "other")})
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("suite, scale", [("quickstart", "smoke"), ("claims", "cpu")])
def test_committed_results_have_the_ids_the_suite_expands_to(suite, scale):
    """The run and evaluation ids of the committed records (results/<suite>/<scale>/) are what expansion gives today: the
    folders they name stay the folders a rerun writes into."""
    from pathlib import Path

    from elit_bench.record import Record

    committed = set()
    for path in (Path(__file__).resolve().parents[1] / "results" / suite / scale).glob("*/records/*.json"):
        record = Record.read(path)
        assert path.parents[1].name == record.run_id
        if record.run_id != "real-data":
            committed.add((record.run_id, record.eval_id, record.provenance["config_hash"]))
    expanded = {(run.id, ev.id, run.config_hash) for run in load_suite(suite).runs(scale) for ev in run.evals}
    assert committed and committed == expanded
