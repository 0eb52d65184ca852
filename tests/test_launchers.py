"""Launchers: the sbatch script submitit writes asks for one task per GPU, torchrun spans nodes by rendezvous."""

import os
import stat

import pytest

from elit_bench.cli import main
from elit_bench.suites.launchers import (
    SlurmLauncher,
    TorchrunLauncher,
    make_launcher,
    spec_from_json,
    spec_to_json,
)
from elit_bench.suites.spec import load_suite


@pytest.fixture
def runs():
    return load_suite("table1-256").runs("smoke")[:2]


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch):
    """An `sbatch` on PATH that keeps the script it is given and answers like SLURM."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "sbatch"
    script.write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "submitted.sh"


def test_sbatch_asks_for_one_task_per_gpu_as_one_array(runs, fake_sbatch, tmp_path, capsys):
    launcher = SlurmLauncher(partition="gpu", gpus=8, nodes=2, timeout_min=240, cpus=10,
                             folder=str(tmp_path / "logs"), wait=False)
    assert launcher.run(runs, tmp_path / "out") == []
    script = fake_sbatch.read_text()
    for line in ("#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=8", "#SBATCH --nodes=2",
                 "#SBATCH --cpus-per-task=10", "#SBATCH --partition=gpu", "#SBATCH --requeue",
                 "#SBATCH --array=0-1"):
        assert line in script, script
    assert "srun" in script  # one process per task


def test_cpu_tasks_and_bad_task_counts(tmp_path):
    assert SlurmLauncher(tasks_per_node=2, cpus=1).options["tasks_per_node"] == 2
    assert SlurmLauncher(gpus=4).options["tasks_per_node"] == 4
    with pytest.raises(ValueError, match="one process per GPU"):
        SlurmLauncher(gpus=8, tasks_per_node=2)


def test_torchrun_is_standalone_on_one_node_and_rendezvous_on_several(runs, tmp_path):
    run = runs[0]
    one = TorchrunLauncher(nproc=2).command(run, "spec.json", tmp_path, True)
    assert "--standalone" in one and "--nproc_per_node=2" in one
    many = TorchrunLauncher(nproc=8, nodes=4, rdzv_endpoint="node0:29500").command(run, "spec.json", tmp_path, False)
    assert {"--nnodes=4", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29500", f"--rdzv-id={run.id}"} <= set(many)
    assert "--standalone" not in many and many[-1] == "--no-progress"
    with pytest.raises(ValueError, match="--rdzv-endpoint"):
        make_launcher("torchrun", nodes=2)


def test_multi_node_torchrun_without_endpoint_exits_2(capsys):
    assert main(["run", "quickstart", "--launcher", "torchrun", "--nodes", "2", "--set", "train.steps=1"]) == 2
    assert "--rdzv-endpoint HOST:PORT" in capsys.readouterr().err


def test_a_run_travels_to_its_worker_unchanged(runs):
    for run in runs:
        again = spec_from_json(spec_to_json(run))
        assert again == run and again.id == run.id
