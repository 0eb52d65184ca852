"""Records keep what their numbers came from: the sample features beside them (and the reference's, shared), with
hashes, and the training curve in brief; a record's Frechet values and interval are recomputed from them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elit_bench.metrics.frechet import frechet_distance
from elit_bench.metrics.intervals import frechet_bootstrap
from elit_bench.results.records import read_record

SUITE = """name: kept
base:
  train: {data: digits, resolution: 8, batch: 8, steps: 4, ckpt_every: 2, log_every: 1, progress: false,
          model: DiT-S/2, model_kwargs: {hidden_size: 32, depth: 2, num_heads: 2}}
  sample: {steps: 2, batch: 16}
  metrics: {names: [digits_fd, digits_kid, digits_acc], num_samples: 32, real: digits, options: {bootstrap_replicates: 20}}
runs:
  - {label: D}
evals:
  - {label: E}
scales: {smoke: {}}
"""


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("kept")
    (tmp / "kept.yaml").write_text(SUITE)
    env = dict(os.environ, OMP_NUM_THREADS="1", ELIT_BENCH_CACHE=str(tmp / "cache"))
    proc = subprocess.run([sys.executable, "-m", "elit_bench.cli", "run", str(tmp / "kept.yaml"), "--out",
                           str(tmp / "out"), "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return tmp / "out" / "kept" / "smoke"


def load_sidecar(record_path: Path, entry: dict) -> np.ndarray:
    path = record_path.parent / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], path
    features = np.load(path, allow_pickle=False)
    assert features.dtype == np.float32 and list(features.shape) == entry["shape"]
    return features.astype(np.float64)


def check_recomputes(record_path: Path) -> dict:
    """The record's digits FD, its debiased estimate and its interval, from its features and the reference's."""
    record = read_record(record_path)
    entry = record["features"]["digits_fd"]
    fake, real = load_sidecar(record_path, entry), load_sidecar(record_path, entry["reference"])
    assert fake.shape == (record["num_samples"], 64)
    stored = record["intervals"]["digits_fd_debiased"]
    plug_in = frechet_distance(fake.mean(0), np.cov(fake, rowvar=False), real.mean(0), np.cov(real, rowvar=False))
    assert record["metrics"]["digits_fd"] == pytest.approx(plug_in, rel=1e-9)
    again = frechet_bootstrap(fake, real, replicates=len(stored["replicates"]), seed=stored["seed"])
    for key in ("estimate", "low", "high", "value_at_n"):
        assert stored[key] == pytest.approx(again[key], rel=1e-9, abs=1e-9), key
    assert record["metrics"]["digits_fd_debiased"] == stored["estimate"]
    assert stored["low"] <= stored["estimate"] <= stored["high"] and stored["method"] == "bootstrap-both-sides"
    assert "digits_fd" not in record["intervals"]  # no interval that does not hold its value
    return record


def test_a_record_is_recomputed_from_its_features(out):
    [record_path] = out.glob("d-*/records/*.json")
    record = check_recomputes(record_path)
    # the reference's features are stored once, outside the run, and named by the record
    assert (record_path.parent / record["features"]["digits_fd"]["reference"]["file"]).resolve().parent == (
        out.parents[1] / "_shared" / "features").resolve()
    # named by its own bytes too: another run's features of the same reference (last bits differ across thread
    # counts) land beside it when results are gathered, not over it
    reference = record["features"]["digits_fd"]["reference"]
    assert Path(reference["file"]).name.endswith(f".{reference['sha256'][:16]}.npy")
    # KID on the digits features, beside the Frechet distance (unbiased: its interval is around it)
    kid = record["intervals"]["digits_kid"]
    assert np.isfinite(record["metrics"]["digits_kid"]) and kid["low"] <= record["metrics"]["digits_kid"] <= kid["high"]
    # the training curve in brief: every logged window (log_every 1, 4 steps), from the run's TensorBoard
    training = record["training"]
    assert training["loss"]["windows"] == 4 and training["loss"]["steps"][-1] == 4
    assert np.isfinite(training["loss"]["mean_tail"]) and training["grad_norm"]["values"]
    assert training["nonfinite_steps"] == 0
    # accuracy per sample (1 where the class is recognised), so two sets compare sample by sample
    correct = load_sidecar(record_path, record["features"]["digits_acc"])
    assert correct.shape == (32, 1) and set(np.unique(correct)) <= {0.0, 1.0}
    assert record["metrics"]["digits_acc"] == pytest.approx(correct.mean(), rel=1e-12)
    assert "reference" not in record["features"]["digits_acc"]


def test_a_training_seed_samples_its_own_noise_block(out):
    from elit_bench.sampling.generate import NOISE_BLOCK, noise_seeds

    assert noise_seeds(2, 3) == [2 * NOISE_BLOCK, 2 * NOISE_BLOCK + 1, 2 * NOISE_BLOCK + 2]
    assert noise_seeds(1, 256) == noise_seeds(1, 512)[:256]  # sets nest within a seed's block
    [settings] = out.glob("d-*/evals/*/step-*/settings.json")
    assert json.loads(settings.read_text())["seeds"] == "0-31"  # training seed 0: block 0
    [record_path] = out.glob("d-*/records/*.json")
    assert read_record(record_path)["sample"]["seeds"] == "0-31"  # the record names them: sets that share them pair


def test_the_real_data_floor_keeps_its_features_and_reads_about_zero(out):
    [floor_path] = out.glob("real-data/records/*.json")
    floor = check_recomputes(floor_path)
    assert floor["metrics"]["digits_fd_debiased"] < floor["metrics"]["digits_fd"]
    assert floor["intervals"]["digits_fd_debiased"]["low"] <= floor["metrics"]["digits_fd"]


def test_superseded_records_take_their_features_along(out, tmp_path):
    from elit_bench.record import Record
    from elit_bench.suites.runner import supersede_features

    [record_path] = out.glob("d-*/records/*.json")
    copy = tmp_path / "run" / "records"
    copy.mkdir(parents=True)
    record = json.loads(record_path.read_text())
    for sidecar in record["features"].values():
        (copy / sidecar["file"]).write_bytes((record_path.parent / sidecar["file"]).read_bytes())
    (copy / record_path.name).write_text(json.dumps(record))
    moved = copy / "superseded" / "e-step-2.json"
    record = supersede_features(Record.read(copy / record_path.name), copy / record_path.name, moved)
    entry = record.features["digits_fd"]
    assert entry["file"] == "e-step-2.digits_fd.features.npy" and not list(copy.glob("*.npy"))
    assert (moved.parent / entry["file"]).is_file()
    old_reference = json.loads(record_path.read_text())["features"]["digits_fd"]["reference"]["file"]
    # the same shared file, seen from one folder deeper
    assert (moved.parent / entry["reference"]["file"]).resolve() == (copy / old_reference).resolve()


def test_tables_print_the_value_at_n_and_the_debiased_estimate_labelled(out):
    header = next(line for line in (out / "report" / "table.md").read_text().splitlines() if line.startswith("| run"))
    assert "FD(digits)@N" in header and "FD(digits, debiased)" in header and "KID(digits)" in header


def test_a_leaderboard_ranks_debiased_estimates_and_shows_the_value_at_n(tmp_path):
    from test_sample_grids import record, table_rows

    from elit_bench.cli import main
    from elit_bench.suites.floor import REAL_DATA_LABEL

    runs = tmp_path / "runs"
    # (FD@N, debiased, low, high): A is worse at N but better debiased (a smaller generated-side bias)
    for run, (at_n, value, low, high) in {"A": (60.0, 10.0, 8.0, 12.0), "B": (50.0, 20.0, 18.0, 22.0)}.items():
        record(runs, "quickstart", run, "e", {"digits_fd": at_n, "digits_fd_debiased": value},
               {"digits_fd_debiased": {"low": low, "high": high, "estimate": value, "method": "bootstrap-both-sides"}})
    record(runs, "quickstart", REAL_DATA_LABEL, "512 digits, 16 px", {"digits_fd": 30.0, "digits_fd_debiased": 1.0},
           {"digits_fd_debiased": {"low": 0.0, "high": 4.0, "estimate": 1.0, "method": "bootstrap-both-sides"}})
    assert main(["leaderboard", "digits-16px", "--out", str(runs), "--dest", str(tmp_path / "lb")]) == 0
    text = (tmp_path / "lb" / "digits-16px.md").read_text()
    header, *rows = table_rows(text)
    rows = [r for r in rows if r != header]  # each kind of entry (floor, single seed) has its own table
    assert [r[header.index("run")] for r in rows] == [REAL_DATA_LABEL, "A", "B"]
    assert [r[header.index("rank")] for r in rows] == ["-", "1", "2"]
    assert [r[header.index("digits_fd@N")] for r in rows] == ["30", "60", "50"]
    assert "Ranked by digits_fd_debiased" in text
