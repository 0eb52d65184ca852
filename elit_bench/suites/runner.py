"""Execute a suite: train each run, sample and score each evaluation, write records, mark runs done.

Layout under `OUT/<suite>/<scale>/<run id>/`:

    run.json            resolved run spec, config hash, provenance (written first)
    train/              the training run (config.yaml, checkpoints/last.pt, tb/)
    evals/<eval id>/    the sample set (samples.npz, samples.json)
    records/<eval id>.json   one result record per evaluation
    DONE                written last, listing the evaluations it covers

Re-running the same command resumes: a run whose DONE covers all its
evaluations is skipped, training continues from its checkpoint, sample sets
complete their missing seeds, and finished records are kept.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from elit_bench import __version__
from elit_bench.checkpoint import atomic_write
from elit_bench.errors import UserError
from elit_bench.sampling.generate import write_npz
from elit_bench.suites.spec import EvalSpec, RunSpec

DONE, RUN_JSON, RECORDS, EVALS = "DONE", "run.json", "records", "evals"
SAMPLE_KEYS = ("steps", "sampler", "shift", "guidance", "scale", "budget", "guide_budget", "schedule", "interval",
               "teacache", "patch_size", "class_labels")


def run_dir(out, run: RunSpec) -> Path:
    return Path(out) / run.suite / run.scale / run.id


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1, default=str)))


def is_done(out, run: RunSpec) -> bool:
    marker = run_dir(out, run) / DONE
    if not marker.is_file():
        return False
    try:
        covered = set(json.loads(marker.read_text())["evals"])
    except (ValueError, KeyError):
        return False
    return {e.id for e in run.evals} <= covered


def code_version() -> str:
    """Package version plus the git commit of the checkout, when there is one ("-dirty": uncommitted edits)."""
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True,
                                text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def provenance() -> dict:
    import numpy
    import pandas
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
                "pandas": pandas.__version__}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.machine()})"
    return {"code_version": code_version(), "versions": versions, "device": device, "host": platform.node()}


def resolve_budget(value, max_budget):
    """Budgets in suites: an int, None (full) or "N%" of J (so one suite serves every scale)."""
    if isinstance(value, str) and value.endswith("%"):
        if max_budget is None:
            raise UserError(f"budget {value!r} needs an ELIT model")
        return max(1, round(max_budget * float(value[:-1]) / 100))
    return value


def recipe_for(sample: dict, max_budget):
    from elit_bench.sampling.generate import Recipe

    kwargs = {k: sample[k] for k in SAMPLE_KEYS if k in sample}
    for key in ("budget", "guide_budget"):
        if key in kwargs:
            kwargs[key] = resolve_budget(kwargs[key], max_budget)
    if isinstance(kwargs.get("interval"), list):
        kwargs["interval"] = tuple(kwargs["interval"])
    if isinstance(kwargs.get("class_labels"), list):
        kwargs["class_labels"] = tuple(kwargs["class_labels"])
    return Recipe(**kwargs)


def digits_reference(out: Path, resolution: int, video: bool = False) -> Path:
    """Held-out embedded digits (or moving-digits clips) as an ADM-layout .npz: the smoke scales' real set."""
    from elit_bench.data.digits import digits_uint8, moving_digits_uint8

    path = Path(out) / "reference" / f"{'moving-' if video else ''}digits-{resolution}px-heldout.npz"
    if not path.is_file():
        images, labels = (moving_digits_uint8 if video else digits_uint8)(resolution, split="heldout")
        arr = np.repeat(images.numpy()[..., None], 3, axis=-1)
        write_npz(path, arr_0=arr, arr_1=labels.numpy())
    return path


def evaluate(run: RunSpec, ev: EvalSpec, rdir: Path, train_config: dict, progress: bool) -> dict:
    """Sample the evaluation's set and compute its metrics -> the result record."""
    from elit_bench.flops import forward_flops
    from elit_bench.metrics import compute_metrics
    from elit_bench.sampling.generate import generate, seed_list

    step = ev.sample.get("checkpoint_step")  # a snapshot (train.snapshot_every) for convergence curves
    ckpt = rdir / "train" / "checkpoints" / (f"step_{int(step):07d}.pt" if step else "last.pt")
    metrics = dict(ev.metrics)
    num = int(metrics.pop("num_samples", 64))
    with torch.device("meta"):
        from elit_bench.models import create_model
        model = create_model(train_config["model"], **train_config["model_kwargs"])
    recipe = recipe_for(ev.sample, model.max_budget)
    edir = rdir / EVALS / ev.id
    sample_record = generate(ckpt, edir, seed_list(num), recipe, ema=ev.sample.get("ema", True),
                             batch=int(ev.sample.get("batch", 64)), grid=True,
                             progress=progress)
    real = metrics.pop("real", None)
    if real == "digits":
        data = train_config["data"]
        real = digits_reference(rdir.parents[2] / "_shared", data["resolution"], data["name"] == "moving-digits")
    names = metrics.pop("names", ["fid"])
    scores = compute_metrics(edir / "samples.npz", real, names, **(metrics.pop("options", None) or {}))
    if metrics:
        raise UserError(f"unknown metrics setting(s) {sorted(metrics)} in evaluation {ev.label!r}")
    score_provenance, score_intervals = scores.pop("provenance", {}), scores.pop("intervals", {})
    return {
        "suite": run.suite, "scale": run.scale, "run_id": run.id, "run_label": run.label, "paper_row": run.paper_row,
        "paper_setting": run.paper_setting, "eval_id": ev.id, "eval_label": ev.label,
        "paper_guidance": ev.paper_guidance, "series": ev.series,
        "model": train_config["model"], "train_step": sample_record.get("checkpoint_step"),
        "metrics": scores, "intervals": score_intervals, "num_samples": num,
        "sample": {k: sample_record.get(k) for k in ("steps", "sampler", "guidance", "scale", "budget",
                                                     "guide_budget", "schedule", "teacache", "teacache_skipped")},
        "flops": {"sample_flops_per_sample": sample_record["flops_per_sample"],
                  "forward_flops_full": forward_flops(model),
                  "flops_vs_cfg": sample_record.get("flops_vs_cfg"),
                  **training_flops(train_config)},
        "provenance": {**provenance(), "config_hash": run.config_hash, "train_config": train_config,
                       "eval": asdict(ev), "checkpoint_sha256": sample_record.get("checkpoint_sha256"),
                       "metrics": score_provenance},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def expected_train_tflops(model, train_config: dict) -> float:
    """Training TFLOPs of one iteration in expectation over the variants (budget, patch) drawn uniformly."""
    from elit_bench.flops import forward_flops, train_tflops
    from elit_bench.training.config import training_variants, variant_batches

    variants = training_variants(model, train_config)
    batches = variant_batches(model, variants, train_config["batch"], train_config["batch_mode"])
    return sum(train_tflops(forward_flops(model, b, patch_size=p), n)
               for (b, p), n in zip(variants, batches)) / len(variants)


def training_flops(train_config: dict) -> dict:
    """Training TFLOPs per iteration (the paper's TF) and in total, from the analytic model."""
    from elit_bench.training.config import build_meta_model

    tf = expected_train_tflops(build_meta_model(train_config), train_config)
    return {"train_tflops_per_iter": tf, "train_total_flops": tf * 1e12 * train_config["steps"]}


def execute_run(run: RunSpec, out, progress: bool = True) -> Path:
    """Train, evaluate and mark one run done; safe to call again after any interruption."""
    from elit_bench.metrics.floor import write_real_data_record
    from elit_bench.training import train
    from elit_bench.training.config import resolve_config

    rdir = run_dir(out, run)
    if is_done(out, run):
        return rdir
    main = os.environ.get("RANK", "0") == "0"  # under torchrun every rank works, rank 0 writes
    if run.compute:
        return execute_compute(run, rdir) if main else rdir
    config = dict(run.train, out=str(rdir / "train"), progress=progress)
    resolved = resolve_config(config)
    if main and not (rdir / RUN_JSON).is_file():
        write_json(rdir / RUN_JSON, {"suite": run.suite, "scale": run.scale, "run_id": run.id, "label": run.label,
                                     "config_hash": run.config_hash, "train": run.train, "resolved": resolved,
                                     "evals": [asdict(e) | {"id": e.id} for e in run.evals], **provenance()})
    train(config)
    for ev in run.evals:
        record_path = rdir / RECORDS / f"{ev.id}.json"
        if not record_path.is_file():
            record = evaluate(run, ev, rdir, resolved, progress)
            if main:
                write_json(record_path, record)
        if main:  # the suite's `real data` record for this sample count, unless it is there already
            write_real_data_record(rdir.parent, json.loads(record_path.read_text()))
    if main:
        write_json(rdir / DONE, {"evals": [e.id for e in run.evals], "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return rdir


def execute_compute(run: RunSpec, rdir: Path) -> Path:
    """A measurement without training: one record, then DONE."""
    from elit_bench.suites.compute import run_compute

    record = {"suite": run.suite, "scale": run.scale, "run_id": run.id, "run_label": run.label,
              "paper_row": run.paper_row, "paper_setting": run.paper_setting, "eval_id": "compute",
              "eval_label": run.compute["kind"], "paper_guidance": "", "model": run.compute.get("model", ""),
              "metrics": run_compute(run.compute), "num_samples": None, "sample": {}, "flops": {},
              "provenance": {**provenance(), "config_hash": run.config_hash, "compute": run.compute},
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(rdir / RECORDS / "compute.json", record)
    write_json(rdir / DONE, {"evals": [], "time": record["time"]})
    return rdir


def run_all(runs: list[RunSpec], out, launcher, progress: bool = True) -> int:
    """Run every run through `launcher`; one failure does not stop the others. Returns the exit code."""
    pending = [r for r in runs if not is_done(out, r)]
    print(f"{len(runs)} run(s), {len(runs) - len(pending)} already done, {len(pending)} to do "
          f"(launcher: {launcher.name})", flush=True)
    failures = launcher.run(pending, out, progress)
    for run, error in failures:
        print(f"FAILED {run.id}: {error}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(pending)} run(s) failed; rerun the same command to retry them", file=sys.stderr)
        return 1
    print(f"all {len(runs)} run(s) done under {Path(out) / runs[0].suite / runs[0].scale}" if runs else "nothing to run")
    return 0


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
