"""The digits a digits suite scores against, and the real-data floor: real training digits scored like a sample set.

A digits suite scores its samples against the held-out digits (`digits_reference`). Real training
digits drawn at the same count, through the same metrics (and intervals), give the best any generator
can expect under that protocol: the finite-sample bias of a Frechet distance and the classifier's own
error. Suites record it as the run ``real data`` (`real_data_record`), one record per sample count,
which tables show as their first row and figures as a line.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from elit_bench import distributed
from elit_bench.errors import UserError
from elit_bench.metrics.compute import Evaluator, parse_metrics, write_features
from elit_bench.metrics.settings import MetricsSettings
from elit_bench.metrics.sources import ArraySamples, open_source
from elit_bench.provenance import provenance
from elit_bench.record import Record

log = logging.getLogger(__name__)

REAL_DATA_LABEL = "real data"
REAL_DATA_RUN = "real-data"  # its folder beside the suite's runs
SUBSET_SEED = 0  # which training digits form the set


REFERENCE_PER_PROMPT = 20  # digits-t2i: held-out canvases per prompt in its reference set


def digits_set(resolution: int, split: str, data: str = "digits") -> ArraySamples:
    """The embedded digits data set `data` (digits, moving-digits, digits-t2i) of one split as uint8 RGB samples
    with labels (grey repeated to 3 channels): (N, H, W, 3), or (N, T, H, W, 3) for clips. digits-t2i: canvases
    with prompt ids, REFERENCE_PER_PROMPT per prompt for the held-out split, the training canvases otherwise."""
    from elit_bench.data import compositional
    from elit_bench.data.digits import digits_uint8, moving_digits_uint8

    if data == compositional.NAME:
        per_prompt = REFERENCE_PER_PROMPT if split == "heldout" else compositional.PER_PROMPT
        images, labels = compositional.compositional_uint8(resolution, split, per_prompt)
    else:
        images, labels = (moving_digits_uint8 if data == "moving-digits" else digits_uint8)(resolution, split=split)
    return ArraySamples(np.repeat(images.numpy()[..., None], 3, axis=-1), labels.numpy())


def digits_reference(out: Path, resolution: int, data: str = "digits") -> Path:
    """Held-out samples of an embedded data set as an ADM-layout .npz under OUT/reference/: the smoke scales'
    real set."""
    from elit_bench.sampling.generate import write_npz

    path = Path(out) / "reference" / f"{data}-{resolution}px-heldout.npz"
    if not path.is_file():
        held = digits_set(resolution, "heldout", data)
        write_npz(path, arr_0=held.array, arr_1=held.labels)
    return path


def real_digits(resolution: int, num: int, data: str = "digits", seed: int = SUBSET_SEED) -> ArraySamples:
    """`num` training samples of an embedded data set drawn without replacement, laid out like `digits_reference`."""
    train = digits_set(resolution, "train", data)
    if num > train.num:
        raise UserError(f"the real-data floor needs {num} training samples of {data}; the train split has "
                        f"{train.num}: use num_samples <= {train.num} to compare with real data")
    index = np.sort(np.random.default_rng(seed).choice(train.num, num, replace=False))
    return ArraySamples(train.array[index], train.labels[index])


def floor_path(scale_dir: Path, resolution: int, num: int, data: str) -> Path:
    return Path(scale_dir) / REAL_DATA_RUN / "records" / f"{data}-{resolution}px-n{num}.json"


def real_data_record(eval_record: Record, metrics: MetricsSettings, names: list[str], samples: ArraySamples,
                     path: Path) -> Record:
    """The floor (metrics `names` of the real `samples`) that goes with a suite's evaluation record.

    Scored against the very reference file of the record (its provenance) with the evaluation's metric
    settings (`metrics`), so the floor is measured exactly like the record. Its features go beside PATH,
    where the record will be written (`compute.write_features`).
    """
    options = metrics.options.evaluator_kwargs() if metrics.options else {}
    data, num = eval_record.data_description, eval_record.num_samples
    evaluator = Evaluator(**options)
    fake = open_source(samples, "fake")
    real = open_source(eval_record.provenance["metrics"]["real"]["source"], "real")
    scores = evaluator.compute(fake, real, parse_metrics(names))
    score_provenance, intervals = scores.pop("provenance"), scores.pop("intervals")
    # the scale folder's parent is the output folder, which holds the shared reference features
    features = write_features(evaluator, fake, real, names, path, path.parents[4] / "_shared",
                              bool(metrics.options and metrics.options.keep_features))
    unit = {"moving-digits": "clips", "digits-t2i": "canvases"}.get(data["name"], "digits")
    return Record(
        suite=eval_record.suite, scale=eval_record.scale, run_id=REAL_DATA_RUN, run_label=REAL_DATA_LABEL,
        eval_id=floor_path(".", data["resolution"], num, data["name"]).stem,
        eval_label=f"{num} {unit}, {data['resolution']} px", paper_guidance="",
        series=REAL_DATA_LABEL, model=REAL_DATA_LABEL, metrics=scores, intervals=intervals, features=features,
        num_samples=num, sample={}, flops={}, data={"name": data["name"], "resolution": data["resolution"]},
        provenance={**provenance(), "metrics": score_provenance, "metric_names": names,
                    "real_data": {"split": "train", "subset_seed": SUBSET_SEED, "of": len(samples.array)}},
        time=time.strftime("%Y-%m-%dT%H:%M:%S"))


def write_real_data_record(scale_dir, eval_record: Record, metrics: MetricsSettings) -> Path | None:
    """Write the floor of `eval_record` (scored with its evaluation's `metrics`) under SCALE_DIR/real-data/records/
    unless it is there already.

    Only records scored against the held-out digits (`metrics.real: digits`) have one; returns its path,
    or None (also, with a warning, when the train split is smaller than the sample count). The real
    digits' grid.png goes where an evaluation's would (real-data/evals/<eval id>/). Under torchrun every
    rank calls it: the features shard over the job's ranks, rank 0 decides and writes.
    """
    from elit_bench.sampling.generate import GRID, save_grid

    if metrics.real != "digits":
        return None
    data = eval_record.data_description
    path = floor_path(scale_dir, data["resolution"], eval_record.num_samples, data["name"])
    names = list(metrics.names)
    job = distributed.join()
    held = job.broadcast(_held_metrics(path) if job.is_main else None)
    if held is not None:
        if set(names) <= set(held):
            return path
        names = list(dict.fromkeys(held + names))  # another evaluation's metrics: keep the ones already there
    log.info("scoring the real-data floor: %d training samples of %s", eval_record.num_samples, data["name"])
    try:
        samples = real_digits(data["resolution"], eval_record.num_samples, data["name"])
    except UserError as exc:  # the suite's own records stand without their floor
        log.warning("no real-data record: %s", exc)
        return None
    record = real_data_record(eval_record, metrics, names, samples, path)
    if job.is_main:
        save_grid(path.parents[1] / "evals" / record.eval_id / GRID, samples.array)
        record.write(path)
    return path


def _held_metrics(path: Path) -> list[str] | None:
    """The metrics the floor at PATH holds; None when there is none (or it does not read as a record)."""
    if not path.is_file():
        return None
    try:
        return list(Record.read(path).provenance["metric_names"])
    except (UserError, KeyError):
        return None
