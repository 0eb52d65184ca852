"""Execute a suite: train each run, sample and score each evaluation, write records, mark runs done.

Layout under `OUT/<suite>/<scale>/<run id>/`:

    run.json            resolved run spec, config hash, provenance (written first)
    train/              the training run (config.yaml, checkpoints/last.pt, tb/: training scalars,
                        evaluation metrics and sample grids)
    evals/<eval id>/step-<N>/   the sample set drawn from the checkpoint of step N (samples.npz, samples.json)
    records/<eval id>.json      one result record per evaluation, naming its checkpoint step (`train_step`),
                                with its training curve in brief (`training`, from train/tb)
    records/<eval id>.<metric>.features.npy   the sample features behind its Frechet metrics (`features` in the
                                record: file, SHA-256, the reference's under OUT/_shared/features/)
    records/superseded/         records of earlier checkpoints (and their features), kept when more training
                                re-evaluates
    DONE                written last: the evaluations and the training step it covers

Re-running the same command resumes: a run whose DONE covers all its
evaluations at its `train.steps`, and whose records are all there and read
as records, is skipped; training continues from its checkpoint (also after
`train.steps` was raised: the run id does not depend on it), sample sets
complete their missing seeds (a set whose samples.npz does not verify is
sampled again), records of the current checkpoint are kept and missing or
damaged ones are evaluated again.

Under torchrun or SLURM every rank executes the run in the job's one process
group (`elit_bench.distributed`): training is DDP, sampling and feature
extraction shard over the ranks on each rank's device, rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from pathlib import Path

import numpy as np

from elit_bench import distributed
from elit_bench.checkpoint import atomic_write, checkpoint_config
from elit_bench.errors import UserError
from elit_bench.provenance import provenance
from elit_bench.record import Record
from elit_bench.suites.floor import digits_reference
from elit_bench.suites.spec import CheckpointRun, ComputeRun, EvalSpec, RunSpec, TrainingRun
from elit_bench.training.config import expected_train_tflops

log = logging.getLogger(__name__)

DONE, RUN_JSON, RECORDS, EVALS = "DONE", "run.json", "records", "evals"

def run_dir(out, run: RunSpec) -> Path:
    return Path(out) / run.suite / run.scale / run.id


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1, default=str)))


def current_record(path: Path, run: RunSpec, eval_id: str) -> Record | None:
    """The record at `path` if it reads as this evaluation's record (`Record.read`, naming the run and the
    evaluation); None when it is missing or damaged, so that the evaluation runs again."""
    try:
        record = Record.read(path)
    except UserError:
        return None
    return record if (record.run_id, record.eval_id) == (run.id, eval_id) else None


def is_done(out, run: RunSpec) -> bool:
    """DONE covers every evaluation of the run, at (or past) the run's `train.steps`, and every record it promises
    (one per evaluation; a measurement's one) is there and reads as a record."""
    rdir = run_dir(out, run)
    try:
        done = json.loads((rdir / DONE).read_text())
        covered, step = set(done["evals"]), done.get("step")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    steps = run.config["steps"] if isinstance(run, TrainingRun) else None
    promised = ["compute"] if isinstance(run, ComputeRun) else [e.id for e in run.evals]
    return ({e.id for e in run.evals} <= covered and (steps is None or (step or 0) >= steps)
            and all(current_record(rdir / RECORDS / f"{i}.json", run, i) is not None for i in promised))


def checkpoint_for(rdir: Path, ev: EvalSpec, last_step: int, given: str | None = None) -> tuple[Path, int]:
    """(checkpoint file, its step): the run's given checkpoint, a snapshot (`sample.checkpoint_step`, convergence
    curves) or the last one."""
    if given:
        return Path(given), last_step
    step = ev.sample_settings.checkpoint_step
    ckpts = rdir / "train" / "checkpoints"
    return (ckpts / f"step_{int(step):07d}.pt", int(step)) if step else (ckpts / "last.pt", last_step)


def evaluate(run: RunSpec, ev: EvalSpec, rdir: Path, train_config: dict, step: int, progress: bool,
             training: dict | None = None) -> Record:
    """Sample the evaluation's set from the checkpoint of `step` and compute its metrics -> the result record.

    Every rank of the job calls it and gets the record: sampling and feature extraction shard over the ranks,
    each on its own device; `provenance.metrics` names the device and the world size the features came from.
    `training`: the run's `training_summary`, stored as the record's `training`.
    """
    from elit_bench.flops import forward_flops
    from elit_bench.metrics.compute import METRICS, Evaluator, parse_metrics, write_features
    from elit_bench.metrics.sources import open_source
    from elit_bench.sampling.generate import generate, noise_seeds
    from elit_bench.training.config import build_meta_model

    job = distributed.join()
    given = run.checkpoint if isinstance(run, CheckpointRun) else None
    ckpt, step = checkpoint_for(rdir, ev, step, given)
    sample, metrics = ev.sample_settings, ev.metrics_settings
    model = run.meta_model() if given else build_meta_model(train_config)
    edir = rdir / EVALS / ev.id / f"step-{step}"
    seeds = noise_seeds(int(train_config.get("seed", 0)), metrics.num_samples)  # the training seed's noise block
    sample_record = generate(ckpt, edir, seeds, sample.recipe(model.max_budget),
                             ema=sample.ema, batch=sample.batch, grid=True, device=job.device, progress=progress)
    real = metrics.real
    if real == "digits":
        # an imported checkpoint's data description may not name the digits: `real: digits` and its model tell
        data = {"name": "digits", "resolution": model.input_shape[-1], **train_config["data"]}
        train_config = {**train_config, "data": data}
        real = digits_reference(rdir.parents[2] / "_shared", data["resolution"], data["name"])
    options = {"device": job.device, **(metrics.options.evaluator_kwargs() if metrics.options else {})}
    evaluator = Evaluator(progress=progress, **options)
    fake, real = open_source(edir / "samples.npz", "fake"), open_source(real, "real") if real is not None else None
    # metrics scored outside the harness (DPG-Bench: `elit-bench dpg import`) stay pending in the record
    pending = [n for n in parse_metrics(metrics.names) if METRICS[n].kind == "external"]
    names = [n for n in parse_metrics(metrics.names) if n not in pending]
    scores = evaluator.compute(fake, real, names) if names else {}
    score_provenance, score_intervals = scores.pop("provenance", {}), scores.pop("intervals", {})
    # the features behind its Frechet metrics go beside the record, the reference's once per output folder
    features = write_features(evaluator, fake, real, names, rdir / RECORDS / f"{ev.id}.json",
                              rdir.parents[2] / "_shared",
                              bool(metrics.options and metrics.options.keep_features)) if names else {}
    return Record(
        suite=run.suite, scale=run.scale, run_id=run.id, run_label=run.label, paper_row=run.paper_row,
        paper_setting=run.paper_setting, eval_id=ev.id, eval_label=ev.label, paper_guidance=ev.paper_guidance,
        series=ev.series, model=train_config["model"], train_step=sample_record.get("checkpoint_step"),
        metrics=scores, intervals=score_intervals, features=features, training=training,
        num_samples=metrics.num_samples,
        sample={k: sample_record.get(k) for k in ("steps", "sampler", "guidance", "scale", "budget", "guide_budget",
                                                  "schedule", "teacache_threshold", "teacache_skipped_steps",
                                                  "taylorseer_order", "taylorseer_interval",
                                                  "taylorseer_forecast_evaluations", "tome_ratio",
                                                  "seeds")},  # the noise seeds: sets that share them pair
        flops={"sample_flops_per_sample": sample_record["flops_per_sample"],
               "forward_flops_full": forward_flops(model),
               "flops_vs_cfg": sample_record.get("flops_vs_cfg"),
               **(training_flops(train_config) if isinstance(run, TrainingRun) else {})},
        provenance={**provenance(), "config_hash": run.config_hash, "train_config": train_config,
                    "eval": ev.to_dict(), "checkpoint_sha256": sample_record.get("checkpoint_sha256"),
                    "metrics": score_provenance, **({"pending_metrics": pending} if pending else {})},
        time=time.strftime("%Y-%m-%dT%H:%M:%S"))


def track_evaluation(rdir: Path, train_config: dict, ev: EvalSpec, record: Record) -> None:
    """The record's metrics and its sample grid into the run's TensorBoard (and W&B), at the checkpoint's step."""
    from PIL import Image

    from elit_bench.sampling.generate import GRID
    from elit_bench.tracking import Tracker

    step = record.train_step
    tracker = Tracker(rdir / "train", train_config.get("logger", "tensorboard"), train_config)
    try:
        tracker.scalars({f"eval/{ev.label}/{name}": float(value) for name, value in record.metrics.items()
                         if isinstance(value, (int, float))}, step)
        grid = rdir / EVALS / ev.id / f"step-{step}" / GRID
        if grid.is_file():
            tracker.image(f"eval/{ev.label}/samples", np.asarray(Image.open(grid).convert("RGB")), step)
    finally:
        tracker.close()


def training_summary(train_dir: Path, tail: float = 0.1, last: int = 5) -> dict | None:
    """The training curve in brief, from the run's TensorBoard scalars (every session's, so a resumed run's
    earlier steps count too; the trainer's own summary holds only the steps of one call).

    Per scalar (train/loss: each logging window's mean; train/grad_norm: the window's last step): `steps` and
    `values` of the last `last` windows, the mean and max over the last `tail` of the steps, the number of
    windows; plus `nonfinite_steps` (skipped steps so far). None when the run logged no loss.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from elit_bench.tracking import TB_DIR

    events = EventAccumulator(str(train_dir / TB_DIR), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    if "train/loss" not in tags:
        return None
    out = {}
    for name in ("loss", "grad_norm", "nonfinite_steps"):
        if f"train/{name}" not in tags:
            continue
        # one value per step, the last one written (a resumed run logs the steps after its checkpoint again)
        by_step = {e.step: e.value for e in sorted(events.Scalars(f"train/{name}"), key=lambda e: e.wall_time)}
        steps = np.array(sorted(by_step))
        values = np.array([by_step[k] for k in steps], dtype=np.float64)
        if name == "nonfinite_steps":
            out[name] = int(values[-1])
            continue
        window = values[steps >= steps[-1] * (1 - tail)]
        out[name] = {"steps": steps[-last:].tolist(), "values": values[-last:].tolist(), "windows": len(values),
                     "tail_fraction": tail, "mean_tail": float(window.mean()), "max_tail": float(window.max())}
    return out


def training_flops(train_config: dict) -> dict:
    """Training TFLOPs per iteration (the paper's TF) and in total, from the analytic model."""
    from elit_bench.training.config import build_meta_model

    tf = expected_train_tflops(build_meta_model(train_config), train_config)
    return {"train_tflops_per_iter": tf, "train_total_flops": tf * 1e12 * train_config["steps"]}


def supersede_features(record: Record, old: Path, new: Path) -> Record:
    """Move a record's feature sidecars from beside OLD to beside NEW (named after it) -> the record, its `features`
    paths pointing there."""
    from elit_bench.metrics.compute import FEATURES_SUFFIX

    features = {}
    for name, sidecar in (record.features or {}).items():
        sidecar = dict(sidecar)
        target = new.with_name(f"{new.stem}.{name}{FEATURES_SUFFIX}")
        if (old.parent / sidecar["file"]).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old.parent / sidecar["file"], target)
        sidecar["file"] = target.name
        if "reference" in sidecar:
            sidecar["reference"] = {**sidecar["reference"], "file": Path(os.path.relpath(
                old.parent / sidecar["reference"]["file"], new.parent)).as_posix()}
        features[name] = sidecar
    return record.model_copy(update={"features": features}) if features else record


def execute_run(run: RunSpec, out, progress: bool = True) -> Path:
    """Train (or continue), evaluate and mark one run done; safe to call again after any interruption."""
    rdir = run_dir(out, run)
    if is_done(out, run):
        return rdir
    job = distributed.join()  # under torchrun / SLURM tasks every rank works, rank 0 writes
    if isinstance(run, ComputeRun):
        return execute_compute(run, rdir) if job.is_main else rdir
    return execute_evaluations(run, rdir, progress)


def execute_evaluations(run: TrainingRun | CheckpointRun, rdir: Path, progress: bool) -> Path:
    """Train a training run (or continue it), then evaluate either kind at its checkpoint and write DONE."""
    from elit_bench.suites.floor import write_real_data_record
    from elit_bench.training import train
    from elit_bench.training.config import resolve_config

    job = distributed.join()
    main = job.is_main
    if isinstance(run, CheckpointRun):  # evaluated as given: its config names model, data and where it came from
        resolved, last_step = checkpoint_config(run.checkpoint)
        written = {"train": {}, "checkpoint": run.checkpoint}
    else:
        config = dict(run.train, out=str(rdir / "train"), progress=progress)
        # fine-tuned from / distilled from another run of the suite: its final checkpoint
        for key, start_id in (("init", run.init_run), ("teacher", run.teacher_run)):
            if start_id is None:
                continue
            if key in run.start_checkpoints:  # a checkpoint run of the suite: its file
                config[key] = run.start_checkpoints[key]
                continue
            start = rdir.parent / start_id
            if not (start / DONE).is_file():
                raise UserError(f"run {run.label!r} ({run.id}) starts from run {start_id} (train.{key}), which has "
                                f"not finished under {str(rdir.parent)!r}: run the suite (its runs go in order) or "
                                "that run first")
            config[key] = str(start / "train" / "checkpoints" / "last.pt")
        config.update(run.with_teacher)
        resolved, written = resolve_config(config), {"train": run.train, "checkpoint": None}
    if main:  # rewritten when the run is continued with more steps
        write_json(rdir / RUN_JSON, {"suite": run.suite, "scale": run.scale, "run_id": run.id, "label": run.label,
                                     "config_hash": run.config_hash, "train": written["train"], "resolved": resolved,
                                     "checkpoint": written["checkpoint"],
                                     "evals": [e.to_dict() | {"id": e.id} for e in run.evals], **provenance()})
    if isinstance(run, TrainingRun):
        last_step = train(config)["step"]
    training = None  # the training curve in brief, for the records
    for ev in run.evals:
        record_path = rdir / RECORDS / f"{ev.id}.json"
        step = checkpoint_for(rdir, ev, last_step)[1]
        record = current_record(record_path, run, ev.id)  # missing or damaged: evaluated again
        job.barrier()  # every rank has read it before rank 0 moves or replaces it
        if record is None or record.train_step != step:
            if record is not None and main:  # trained further since: keep the earlier record beside, evaluate again
                superseded = rdir / RECORDS / "superseded" / f"{ev.id}-step-{record.train_step}.json"
                supersede_features(record, record_path, superseded).write(superseded)
                record_path.unlink()
            if training is None and isinstance(run, TrainingRun):  # read once per run, when an evaluation needs it
                training = training_summary(rdir / "train")
            record = evaluate(run, ev, rdir, resolved, last_step, progress, training)
            if main:
                record.write(record_path)
                track_evaluation(rdir, resolved, ev, record)
        # the suite's `real data` record for this sample count, unless it is there already (scored by every rank)
        write_real_data_record(rdir.parent, record, ev.metrics_settings)
        job.barrier()
    if main:
        write_json(rdir / DONE, {"evals": [e.id for e in run.evals], "step": last_step,
                                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return rdir


def execute_compute(run: ComputeRun, rdir: Path) -> Path:
    """A measurement without training: one record, then DONE."""
    settings = run.settings
    record = Record(suite=run.suite, scale=run.scale, run_id=run.id, run_label=run.label, paper_row=run.paper_row,
                    paper_setting=run.paper_setting, eval_id="compute", eval_label=settings.kind, paper_guidance="",
                    model=getattr(settings, "model", ""), metrics=settings.measure(), sample={}, flops={},
                    provenance={**provenance(), "config_hash": run.config_hash, "compute": run.compute},
                    time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    record.write(rdir / RECORDS / "compute.json")
    write_json(rdir / DONE, {"evals": [], "time": record.time})
    return rdir


def run_all(runs: list[RunSpec], out, launcher, progress: bool = True) -> int:
    """Run every run through `launcher`; one failure does not stop the others. Returns the exit code."""
    pending = [r for r in runs if not is_done(out, r)]
    log.info("%d run(s), %d already done, %d to do (launcher: %s)", len(runs), len(runs) - len(pending),
             len(pending), launcher.name)
    failures = launcher.run(pending, out, progress)
    for run, error in failures:
        log.error("FAILED %s: %s", run.id, error)
    if failures:
        log.error("%d of %d run(s) failed; rerun the same command to retry them", len(failures), len(pending))
        return 1
    log.info(f"all {len(runs)} run(s) done under {Path(out) / runs[0].suite / runs[0].scale}" if runs
             else "nothing to run")
    return 0


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
