"""The real-data floor: real training digits scored exactly like a generated set.

A digits suite scores its samples against the held-out digits. Real training
digits drawn at the same count, through the same metrics (and intervals),
give the best any generator can expect under that protocol: the finite-sample
bias of a Frechet distance and the classifier's own error. Suites record it
as the run ``real data`` (`real_data_record`), one record per sample count,
which tables show as their first row and figures as a line.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from elit_bench import distributed
from elit_bench.errors import UserError
from elit_bench.metrics.compute import Evaluator, parse_metrics, write_features
from elit_bench.metrics.sources import ArraySamples, open_source
from elit_bench.provenance import provenance

log = logging.getLogger(__name__)

REAL_DATA_LABEL = "real data"
REAL_DATA_RUN = "real-data"  # its folder beside the suite's runs
SUBSET_SEED = 0  # which training digits form the set


def real_digits(resolution: int, num: int, video: bool = False, seed: int = SUBSET_SEED) -> ArraySamples:
    """`num` training digits (or moving-digits clips) drawn without replacement, as uint8 RGB with labels.

    Laid out like the held-out reference (`suites.runner.digits_reference`): grey repeated to 3 channels.
    """
    from elit_bench.data.digits import digits_uint8, moving_digits_uint8

    images, labels = (moving_digits_uint8 if video else digits_uint8)(resolution, split="train")
    if num > len(images):
        raise UserError(f"the real-data floor needs {num} training digits; the train split has {len(images)}: "
                        f"use num_samples <= {len(images)} to compare with real data")
    index = np.sort(np.random.default_rng(seed).choice(len(images), num, replace=False))
    return ArraySamples(np.repeat(images.numpy()[index][..., None], 3, axis=-1), labels.numpy()[index])


def floor_path(scale_dir: Path, resolution: int, num: int, video: bool) -> Path:
    kind = "moving-digits" if video else "digits"
    return Path(scale_dir) / REAL_DATA_RUN / "records" / f"{kind}-{resolution}px-n{num}.json"


def real_data_record(eval_record: dict, names: list[str], samples: ArraySamples, path: Path) -> dict:
    """The floor (metrics `names` of the real `samples`) that goes with a suite's evaluation record.

    Takes the reference and metric options from the record's provenance, so the floor is scored
    against the very same reference file with the very same settings. Its features go beside PATH,
    where the record will be written (`compute.write_features`).
    """
    from elit_bench.schema import MetricsSettings

    spec = MetricsSettings(**eval_record["provenance"]["eval"]["metrics"])
    options = spec.options.evaluator_kwargs() if spec.options else {}
    data = eval_record["provenance"]["train_config"]["data"]
    num = eval_record["num_samples"]
    reference = eval_record["provenance"]["metrics"]["real"]["source"]
    evaluator = Evaluator(**options)
    fake, real = open_source(samples, "fake"), open_source(reference, "real")
    scores = evaluator.compute(fake, real, parse_metrics(names))
    score_provenance = scores.pop("provenance")
    # the scale folder's parent is the output folder, which holds the shared reference features
    features = write_features(evaluator, fake, real, names, path, path.parents[4] / "_shared",
                              bool(spec.options and spec.options.keep_features))
    video = data["name"] == "moving-digits"
    return {
        "suite": eval_record["suite"], "scale": eval_record["scale"], "run_id": REAL_DATA_RUN,
        "run_label": REAL_DATA_LABEL, "paper_row": None, "paper_setting": None,
        "eval_id": floor_path(".", data["resolution"], num, video).stem,
        "eval_label": f"{num} {'clips' if video else 'digits'}, {data['resolution']} px", "paper_guidance": "", "series": REAL_DATA_LABEL, "model": REAL_DATA_LABEL,
        "train_step": None, "intervals": scores.pop("intervals"), "metrics": scores, "features": features,
        "num_samples": num,
        "sample": {}, "flops": {}, "data": {"name": data["name"], "resolution": data["resolution"]},
        "provenance": {**provenance(), "metrics": score_provenance, "metric_names": names,
                       "real_data": {"split": "train", "subset_seed": SUBSET_SEED, "of": len(samples.array)}},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_real_data_record(scale_dir, eval_record: dict) -> Path | None:
    """Write the floor of `eval_record` under SCALE_DIR/real-data/records/ unless it is there already.

    Only records scored against the held-out digits (`metrics.real: digits`) have one; returns its path,
    or None (also, with a warning, when the train split is smaller than the sample count). The real
    digits' grid.png goes where an evaluation's would (real-data/evals/<eval id>/). Under torchrun every
    rank calls it: the features shard over the job's ranks, rank 0 decides and writes.
    """
    from elit_bench.checkpoint import atomic_write
    from elit_bench.sampling.generate import GRID, save_grid
    from elit_bench.schema import MetricsSettings

    spec = MetricsSettings(**eval_record["provenance"]["eval"]["metrics"])
    if spec.real != "digits":
        return None
    data = eval_record["provenance"]["train_config"]["data"]
    path = floor_path(scale_dir, data["resolution"], eval_record["num_samples"], data["name"] == "moving-digits")
    names = list(spec.names)
    job = distributed.join()
    held = job.broadcast(json.loads(path.read_text())["provenance"]["metric_names"]
                         if job.is_main and path.is_file() else None)
    if held is not None:
        if set(names) <= set(held):
            return path
        names = list(dict.fromkeys(held + names))  # another evaluation's metrics: keep the ones already there
    log.info("scoring the real-data floor: %d training digits", eval_record["num_samples"])
    try:
        samples = real_digits(data["resolution"], eval_record["num_samples"], data["name"] == "moving-digits")
    except UserError as exc:  # the suite's own records stand without their floor
        log.warning("no real-data record: %s", exc)
        return None
    record = real_data_record(eval_record, names, samples, path)
    if job.is_main:
        save_grid(path.parents[1] / "evals" / record["eval_id"] / GRID, samples.array)
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
    return path
