"""Inception feature-extraction throughput: ours against torch-fidelity's, side by side.

    elit-bench bench inception --images 256 --size 64 --batch 64

Both read the same PNG folder and run the same network (torch-fidelity's
``FeatureExtractorInceptionV3``) at the same batch size, each through its own
pipeline: ours (`extract_features` on a folder source) and torch-fidelity's
``extract_featuresdict_from_input_id``, with its defaults and with
``save_cpu_ram=True``. Runs alternate, and the best of `--repeats` counts for
each, in wall time and in CPU time. Without ``--inception-weights`` a random-weight file stands in (speed
does not depend on the weight values). Prints features/s and features per
CPU-second, the ratios of ours to each, and the largest feature difference
from ours.
"""

from __future__ import annotations

import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from elit_bench.data.samples import FolderSamples
from elit_bench.metrics.compute import extract_features
from elit_bench.metrics.extractors import get_extractor


def run_benchmark(folder: Path, weights: Path, batch: int, repeats: int) -> dict[str, dict]:
    """{pipeline: {"seconds", "cpu_seconds": best of `repeats`, "max_abs_diff": vs ours}} on `folder`.

    CPU seconds (process and DataLoader workers) are reported next to wall
    seconds because on a shared machine other processes inflate wall time.

    Pipelines: ours; torch-fidelity with its defaults (a DataLoader with
    min(4, 2 x cores) workers decoding images); torch-fidelity with
    ``save_cpu_ram=True`` (decoding in the main process, like ours).
    """
    from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id

    ours_ex = get_extractor("inception-v3-tf", weights=weights)
    _ = ours_ex.net  # build now: torch-fidelity's network is built before timing as well
    samples = FolderSamples(folder)
    theirs_ex = create_feature_extractor(
        "inception-v3-compat", ["2048", "logits_unbiased"], cuda=False,
        feature_extractor_weights_path=str(weights), verbose=False,
    )

    def ours():
        f = extract_features(ours_ex, samples, ("pool", "logits_unbiased"), batch)
        return f["pool"], f["logits_unbiased"]

    def theirs(save_cpu_ram: bool):
        f = extract_featuresdict_from_input_id(
            1, theirs_ex, input1=str(folder), batch_size=batch, cuda=False, verbose=False, save_cpu_ram=save_cpu_ram
        )
        return f["2048"].numpy(), f["logits_unbiased"].numpy()

    pipelines = {
        "ours": ours,
        "torch-fidelity (defaults: loader workers)": lambda: theirs(False),
        "torch-fidelity (save_cpu_ram: no workers)": lambda: theirs(True),
    }
    # torch-fidelity's default DataLoader starts 4 workers whatever the core count; torch warns each time
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    wall: dict[str, list[float]] = {name: [] for name in pipelines}
    cpu: dict[str, list[float]] = {name: [] for name in pipelines}
    outputs = {}
    plan = [name for _ in range(repeats) for name in pipelines]  # alternate: load hits all pipelines alike
    for name in tqdm(plan, desc="bench inception", unit="run", dynamic_ncols=True):
        start_wall, start_cpu = time.perf_counter(), _cpu_seconds()
        outputs[name] = pipelines[name]()
        wall[name].append(time.perf_counter() - start_wall)
        cpu[name].append(_cpu_seconds() - start_cpu)
    return {
        name: {
            "seconds": min(wall[name]),
            "cpu_seconds": min(cpu[name]),
            "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(outputs[name], outputs["ours"])),
        }
        for name in pipelines
    }


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its reaped children (DataLoader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def inception_speed(images: int, size: int, batch: int, repeats: int, weights: Path | None) -> list[dict]:
    """Our Inception feature extraction against torch-fidelity's on random PNG images (`run_benchmark`)."""
    from elit_bench.metrics.synthetic import random_images, write_png_folder, write_random_inception_weights

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_png_folder(random_images(images, size, seed=0), Path(tmp) / "images")
        weights = weights or write_random_inception_weights(Path(tmp) / "inception.pth")
        results = run_benchmark(folder, weights, batch, repeats)
    ours = results["ours"]
    return [{"pipeline": name, "images": images, "size": size, "batch": batch,
             "features_per_s": images / r["seconds"], "ours_speedup": r["seconds"] / ours["seconds"],
             "features_per_cpu_s": images / r["cpu_seconds"], "ours_cpu_speedup": r["cpu_seconds"] / ours["cpu_seconds"],
             "max_abs_feature_diff": r["max_abs_diff"]} for name, r in results.items()]
