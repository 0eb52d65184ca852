"""Faults a user meets: each ends with correct output (exit 0) or one line on stderr (exit 2), never a traceback
or a silently wrong result. One test per case of issue 20; those marked xfail name the part of the harness
that owns the fix."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_official_parity import OFFICIAL_KW, oracle  # noqa: F401  (the authors' modules, for `convert`)

from elit_bench.checkpoint import (
    load_checkpoint,
    save_checkpoint,
    sha256_path,
    verify_checkpoint,
)
from elit_bench.cli import main as cli
from elit_bench.errors import UserError
from elit_bench.models import model_from_checkpoint

SUITE = """name: faults
base:
  train: {{data: digits, resolution: 8, batch: 8, steps: {steps}, ckpt_every: 2, snapshot_every: 2, log_every: 1,
          progress: false, model_kwargs: {{hidden_size: 32, depth: 2, num_heads: 2}}}}
  sample: {{steps: 2, batch: 8}}
  metrics: {{names: [digits_fd], num_samples: 8, real: digits}}
runs:
{runs}
evals:
{evals}
scales: {{smoke: {{}}}}
"""
RUNS = "  - {label: D, train: {model: DiT-S/2}}"
EVALS = "  - {label: E}"


def write_suite(tmp_path, runs=RUNS, evals=EVALS, steps=4, name="faults.yaml") -> str:
    path = tmp_path / name
    path.write_text(SUITE.format(runs=runs, evals=evals, steps=steps))
    return str(path)


def env(tmp_path) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", ELIT_BENCH_CACHE=str(tmp_path / "cache"))


def default_sigint() -> None:
    """In the child: Ctrl-C as a terminal delivers it, even when the tests run in a background job (whose
    children start with SIGINT ignored, and Python then raises no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*argv, tmp_path, **kw) -> subprocess.Popen:
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
    return subprocess.Popen([sys.executable, "-m", "elit_bench.cli", *argv], text=True, env=env(tmp_path),
                            preexec_fn=default_sigint, **pipes)


def one_line_error(capsys, *needles) -> str:
    """The stderr of a command that exited 2: one line, no traceback, containing every needle."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished tiny suite (one run, one evaluation, snapshots at steps 2 and 4): (suite file, out)."""
    tmp = tmp_path_factory.mktemp("done")
    suite = write_suite(tmp)
    proc = run_cli("run", suite, "--out", str(tmp / "out"), "--no-progress", tmp_path=tmp)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return suite, tmp / "out"


def copy_of(done, tmp_path) -> tuple[str, Path]:
    suite, out = done
    shutil.copytree(out, tmp_path / "out")
    return suite, tmp_path / "out"


def run_dir(root: Path) -> Path:
    """The folder of run D under `root` (an output root or a suite's scale folder)."""
    return next(p.parent for p in root.rglob("d-*/run.json"))


# ---------------------------------------------------------------- compare: missing records are not a reproduction
def test_compare_reports_records_present_on_one_side_only(done, tmp_path, capsys):
    # catches: an inner merge that drops A's records without a counterpart and passes (exit 0)
    _, out = copy_of(done, tmp_path)
    a = out / "faults" / "smoke"
    b = tmp_path / "b"
    shutil.copytree(a, b)
    shutil.rmtree(run_dir(b))  # a rerun that lost a whole run: only the real-data floor is left
    assert cli(["compare", str(a), str(b)]) == 1
    text = capsys.readouterr().out
    # run D's one Frechet metric: its value at N and its debiased estimate
    assert "only in A (2 number(s) B lacks)" in text and "2 only in A" in text and "| D " in text
    assert cli(["compare", str(a), str(b), "--allow-subset"]) == 0
    assert cli(["compare", str(b), str(a), "--allow-subset"]) == 1  # B holding more than A is never a subset
    assert "2 only in B" in capsys.readouterr().out


def test_compare_refuses_two_different_suites(done, tmp_path, capsys):
    # catches: two suites "reproducing" each other because their real-data floors match
    _, out = copy_of(done, tmp_path)
    other = tmp_path / "other"
    shutil.copytree(out / "faults" / "smoke", other)
    for path in other.rglob("records/*.json"):
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "suite": "quickstart"}))
    assert cli(["compare", str(out / "faults" / "smoke"), str(other)]) == 2
    one_line_error(capsys, "suite(s) faults", "quickstart", "compare records of the same suite")


# ---------------------------------------------------------------- records validated on load
@pytest.mark.parametrize("text, problem", [("null", "holds null, not a JSON object"),
                                           ("{}", "malformed: suite: missing"),
                                           ('{"suite": 3}', "malformed: suite: input should be a valid string")])
def test_malformed_records_are_one_line_naming_the_file(done, tmp_path, capsys, text, problem):
    # catches: valid JSON that is not a record crashing table, leaderboard, status and run's report with a traceback
    suite, out = copy_of(done, tmp_path)
    bad = run_dir(out) / "records" / "extra.json"
    bad.write_text(text)
    for argv in (["table", suite, "--out", str(out)], ["leaderboard", "digits-16px", "--out", str(out)],
                 ["status", suite, "--out", str(out)], ["run", suite, "--out", str(out), "--no-progress"]):
        assert cli(argv) == 2, argv
        one_line_error(capsys, f"record {str(bad)!r}", problem)


# ---------------------------------------------------------------- labels unique, overrides used
def test_two_runs_with_one_label_are_refused(tmp_path, capsys):
    # catches: two runs labelled D (different lr) both trained and merged into one table row
    runs = RUNS + "\n  - {label: D, train: {model: DiT-S/2, lr: 1.0e-3}}"
    out = tmp_path / "out"
    assert cli(["run", write_suite(tmp_path, runs), "--out", str(out)]) == 2
    one_line_error(capsys, "run label(s) 'D' name runs with different settings")
    assert not out.exists()


def test_seeds_share_a_label_on_purpose(tmp_path):
    from elit_bench.suites.spec import load_suite

    runs = load_suite(write_suite(tmp_path, "  - {label: D, seeds: [0, 1], train: {model: DiT-S/2}}")).runs("smoke")
    assert [r.label for r in runs] == ["D", "D"] and len({r.id for r in runs}) == 2


def test_a_matrix_label_without_placeholder_is_refused(tmp_path, capsys):
    # catches: every combination of a matrix evaluated under one label, the table showing one of them
    evals = "  - {label: CFG, matrix: {sample.scale: [0.5, 1.0]}, sample: {guidance: cfg}}"
    assert cli(["run", write_suite(tmp_path, evals=evals), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    one_line_error(capsys, "run 'D': evaluation label(s) 'CFG' name more than one evaluation")


def test_an_override_no_run_uses_is_refused(tmp_path, capsys, caplog):
    # catches: --set train.model=NoSuch-DiT/2 silently unused when every run names its own model
    suite = write_suite(tmp_path)
    assert cli(["run", suite, "--out", str(tmp_path / "out"), "--set", "train.model=NoSuch-DiT/2"]) == 2
    one_line_error(capsys, "--set train.model=NoSuch-DiT/2: no run uses it", "(D)")
    evals = EVALS + "\n  - {label: F, sample: {steps: 3}}"
    assert cli(["run", write_suite(tmp_path, evals=evals), "--dry-run", "--no-estimate",
                "--set", "sample.steps=5"]) == 0
    assert "--set sample.steps=5 applies to 1 of the suite's evaluations; these set their own: D / F" in caplog.text


# ---------------------------------------------------------------- one writer per output root
def test_a_second_run_into_the_same_out_exits_2_and_a_waiting_one_resumes(tmp_path):
    # catches: two `run`s into one --out training the same run and failing on each other's files
    suite, out = write_suite(tmp_path, steps=100000), tmp_path / "out"
    first_log = tmp_path / "first.log"  # a file, not a pipe nobody reads: a full pipe would block the run
    with open(first_log, "w") as f:
        first = run_cli("run", suite, "--out", str(out), "--no-progress", tmp_path=tmp_path, stdout=f, stderr=f)
    lock = out / "faults" / "smoke" / "LOCK"
    deadline = time.time() + 120
    while not list(out.glob("faults/smoke/*/train/checkpoints/last.pt")) and time.time() < deadline:
        assert first.poll() is None, first_log.read_text()
        time.sleep(0.1)
    holder = json.loads(lock.read_text())
    assert holder["pid"] == first.pid and "run" in holder["command"]
    second = run_cli("run", suite, "--scale", "smoke", "--out", str(out), "--no-progress", tmp_path=tmp_path)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and f"is in use by pid {first.pid} on host" in err and "--wait-lock" in err
    assert first.poll() is None and json.loads(lock.read_text()) == holder  # the first works on, its lock intact
    # --wait-lock waits for the holder, then resumes what it left (train.steps lowered: done at its checkpoint)
    log = tmp_path / "third.log"
    with open(log, "w") as f:
        third = subprocess.Popen([sys.executable, "-m", "elit_bench.cli", "run", suite, "--out", str(out),
                                  "--no-progress", "--wait-lock", "--set", "train.steps=2"], stdout=f, stderr=f,
                                 text=True, env=env(tmp_path), preexec_fn=default_sigint)
    while "waiting for pid" not in log.read_text() and time.time() < deadline + 120:
        assert third.poll() is None, log.read_text()
        time.sleep(0.1)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=120) == 130, first_log.read_text()
    assert third.wait(timeout=300) == 0, log.read_text()
    assert len(list(out.glob("faults/smoke/*/DONE"))) == 1 and not lock.exists()


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    # catches: a lock left by a killed run blocking every later run
    from elit_bench.suites.lock import LOCK_FILE, output_lock

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with output_lock(tmp_path):
        pass
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": holder.pid,
                                                   "started": "2026-01-01T00:00:00"}))
    holder.kill()
    holder.wait()
    with output_lock(tmp_path) as info:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid() == info["pid"]
    assert f"taking over the stale lock {tmp_path / LOCK_FILE} of pid {holder.pid}" in caplog.text
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_is_released_on_exceptions_and_held_against_others(tmp_path):
    from elit_bench.suites.lock import LOCK_FILE, output_lock

    with pytest.raises(KeyboardInterrupt), output_lock(tmp_path):
        other = subprocess.run([sys.executable, "-c", f"from elit_bench.suites.lock import output_lock\n"
                                f"with output_lock({str(tmp_path)!r}): pass"], capture_output=True, text=True)
        assert other.returncode and f"is in use by pid {os.getpid()}" in other.stderr
        raise KeyboardInterrupt
    assert not (tmp_path / LOCK_FILE).exists()
    with output_lock(tmp_path):  # free again
        pass


def test_tensorboard_files_of_two_processes_never_collide(tmp_path, monkeypatch):
    # catches: event files named only by time, host and pid (two containers: same host name, pid 1, same second)
    from tensorboard.summary.writer import event_file_writer

    from elit_bench.tracking import Tracker

    monkeypatch.setattr(time, "time", lambda: 1.0e9)
    names = []
    for _ in range(2):  # as two fresh processes: the per-process writer counter starts at 0 in each
        monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(0))
        tracker = Tracker(tmp_path)
        names.append(Path(tracker.tb.file_writer.event_writer._file_name).name)
        tracker.close()
    assert names[0] != names[1] and len(list((tmp_path / "tb").iterdir())) == 2


# ---------------------------------------------------------------- verified checkpoints
def _tensor_offset(path: Path, values: np.ndarray) -> int:
    data = path.read_bytes()
    offset = data.find(values.tobytes())
    assert offset > 0
    return offset


def test_a_flipped_byte_in_tensor_data_is_detected_at_load(tmp_path):
    # catches: torch.load accepting a checkpoint whose tensor bytes changed (it does not check zip CRCs)
    weights = torch.arange(4096, dtype=torch.float32)
    ckpts = tmp_path / "checkpoints"
    save_checkpoint(ckpts / "step_0000002.pt", {"w": weights, "step": 2})
    save_checkpoint(ckpts / "last.pt", {"w": weights, "step": 4})
    assert sha256_path(ckpts / "last.pt").read_text().endswith("  last.pt\n")
    path = ckpts / "last.pt"
    raw = bytearray(path.read_bytes())
    raw[_tensor_offset(path, weights.numpy()) + 4001] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=r"last.pt' does not match its SHA-256 \(last.pt.sha256\).*the last good "
                                        r"snapshot is .*step_0000002.pt"):
        load_checkpoint(path)
    sha256_path(path).unlink()  # a checkpoint without its hash (older runs, imported files) loads as before
    assert not torch.equal(load_checkpoint(path)["w"], weights)


def test_a_damaged_checkpoint_is_one_line_in_the_cli(done, tmp_path, capsys):
    _, out = copy_of(done, tmp_path)
    ckpt = run_dir(out) / "train" / "checkpoints" / "last.pt"
    raw = bytearray(ckpt.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    ckpt.write_bytes(bytes(raw))
    assert cli(["sample", str(ckpt), "--out", str(tmp_path / "s"), "--num", "2", "--steps", "1"]) == 2
    one_line_error(capsys, f"checkpoint {str(ckpt)!r} does not match its SHA-256", "step_0000004.pt")


def test_checkpoints_that_do_not_fit_their_model_are_one_line(done):
    # catches: load_state_dict's multi-line RuntimeError for missing, unexpected or reshaped weights
    _, out = done
    ckpt = load_checkpoint(run_dir(out) / "train" / "checkpoints" / "last.pt")
    ema = ckpt["ema"]
    first = next(iter(ema))
    cases = [({**ckpt, "ema": {k: v for k, v in ema.items() if k != first}}, f"1 missing (e.g. {first})"),
             ({**ckpt, "ema": {**ema, "extra.weight": torch.zeros(2)}}, "1 unexpected (e.g. extra.weight)"),
             ({**ckpt, "ema": {**ema, first: torch.zeros(3)}}, "1 of another shape"),
             ({**ckpt, "ema": [1, 2]}, "is not a state dict"),
             ({**ckpt, "config": {**ckpt["config"], "model_kwargs": [2]}}, "model_kwargs'] must be a mapping"),
             ([ckpt], "no config['model']")]
    for bad, message in cases:
        with pytest.raises(UserError) as info:
            model_from_checkpoint(bad)
        assert message in str(info.value) and "\n" not in str(info.value)


def test_ctrl_c_while_checkpointing_leaves_the_checkpoint_whole_then_interrupts(tmp_path):
    # catches: Ctrl-C inside torch.save turned into the archive writer's RuntimeError (a "failed" run, exit 1)
    # and a checkpoint left without its hash
    path, original = tmp_path / "last.pt", torch.save

    def save_then_ctrl_c(obj, f):
        original(obj, f)
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the file is still being written

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in the CLI (xdist workers differ)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch, "save", save_then_ctrl_c)
            with pytest.raises(KeyboardInterrupt):
                save_checkpoint(path, {"step": 3, "w": torch.ones(4)})
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert verify_checkpoint(path) is True and load_checkpoint(path)["step"] == 3


def test_a_full_disk_while_checkpointing_names_the_path(tmp_path):
    # catches: torch.save reporting a failed write as "unexpected pos 704 vs 598"
    code = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
import sys, torch
from elit_bench.cli import main
import elit_bench.cli as c
def save(args):
    from elit_bench.checkpoint import save_checkpoint
    save_checkpoint({str(tmp_path / 'last.pt')!r}, {{"w": torch.zeros(1 << 16)}})
c.COMMAND_MODULES = ("elit_bench.models.cli",)
import elit_bench.models.cli as m
m.cmd_models = save
sys.exit(main(["models"]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"file too large on {str(tmp_path / 'last.pt')!r}" in proc.stderr and "unexpected pos" not in proc.stderr
    assert not list(tmp_path.glob("*.pt*")) and not list(tmp_path.glob(".last.pt*"))


# ---------------------------------------------------------------- the central handler
@pytest.mark.parametrize("exc, message", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/run/last.pt"),
     "no space left on device on '/data/run/last.pt'; free some space and rerun the same command to resume"),
    (PermissionError(errno.EACCES, "Permission denied", "/data"), "permission denied on '/data'"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/x"), "read-only file system on '/ro/x'"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/x"), "not a directory on '/f/x'"),
])
def test_os_errors_are_one_line(monkeypatch, capsys, exc, message):
    import elit_bench.models.cli as models_cli

    def fail(args):
        raise exc

    monkeypatch.setattr(models_cli, "cmd_models", fail)
    assert cli(["models"]) == 2
    one_line_error(capsys, f"elit-bench models: error: {message}")


def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    proc = run_cli("run", write_suite(tmp_path, steps=2000), "--out", str(tmp_path / "out"), "--no-progress",
                   tmp_path=tmp_path)
    ckpt = tmp_path / "out" / "faults" / "smoke"
    deadline = time.time() + 120
    while not list(ckpt.glob("*/train/checkpoints/last.pt")) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "elit-bench run: interrupted; rerun the same command to resume"
    assert not (ckpt / "LOCK").exists()


def test_a_non_utf8_suite_file_is_named_and_does_not_break_the_listing(tmp_path, monkeypatch, capsys):
    suites = tmp_path / "suites"
    suites.mkdir()
    shutil.copy(write_suite(tmp_path), suites / "faults.yaml")
    (suites / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    monkeypatch.setenv("ELIT_BENCH_SUITES", str(suites))
    assert cli(["run", str(suites / "latin1.yaml"), "--dry-run"]) == 2
    one_line_error(capsys, f"suite file {str(suites / 'latin1.yaml')!r} is not UTF-8 text")
    assert cli(["suites"]) == 0
    listing = capsys.readouterr().out
    assert "faults " in listing and "latin1  BROKEN: suite file" in listing
    assert cli(["leaderboard", "nope", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "unknown leaderboard 'nope'")


def test_a_yaml_alias_bomb_is_refused_before_expansion(tmp_path, capsys):
    levels = "".join(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))
    path = tmp_path / "bomb.yaml"
    path.write_text(f"name: bomb\nvariables:\n  l0: &l0 x\n{levels}runs: [{{label: a}}]\nscales: {{smoke: {{}}}}\n")
    start = time.time()
    assert cli(["run", str(path), "--dry-run"]) == 2
    one_line_error(capsys, "expands to more than 100,000 values through aliases")
    assert time.time() - start < 5


# ---------------------------------------------------------------- output paths checked before work
def test_output_paths_are_checked_before_any_work(done, tmp_path, capsys):
    suite, out = done
    a_file = tmp_path / "file"
    a_file.write_text("x")
    ckpt = run_dir(out) / "train" / "checkpoints" / "last.pt"
    assert cli(["sample", str(ckpt), "--out", str(a_file), "--num", "2"]) == 2
    one_line_error(capsys, f"--out {str(a_file)!r} is a file")
    assert cli(["sample", str(ckpt), "--out", str(a_file / "sub"), "--num", "2"]) == 2
    one_line_error(capsys, f"{str(a_file)!r} is a file, not a folder")
    for command in (["table", suite, "--out", str(out)], ["leaderboard", "digits-16px", "--out", str(out)]):
        assert cli([*command, "--dest", str(a_file)]) == 2
        one_line_error(capsys, f"--dest {str(a_file)!r} is a file")
    reference = next((out / "_shared" / "reference").glob("*.npz"))
    assert cli(["metrics", "--real", str(reference), "--metrics", "digits_fd", "--save-real-stats",
                str(a_file / "stats.npz")]) == 2
    one_line_error(capsys, "--save-real-stats", "is a file, not a folder")


# ---------------------------------------------------------------- nonsense numbers
def test_flops_refuses_a_negative_batch(capsys):
    assert cli(["flops", "DiT-S/2", "--batch", "-5"]) == 2
    one_line_error(capsys, "batch -5 must be an integer >= 1")


def test_a_budget_share_that_rounds_to_another_share_is_refused(tmp_path, capsys):
    # catches: "1%" of J = 4 silently sampled at 25%
    runs = "  - {label: E, train: {model: ELIT-DiT-S/2, model_kwargs: {group_size: 2, depth: 3}, multi_budget: true}}"
    suite = write_suite(tmp_path, runs, evals="  - {label: '1%', sample: {budget: '1%'}}")
    assert cli(["run", suite, "--dry-run"]) == 2
    one_line_error(capsys, "sample.budget '1%' of J = 4 would be 1 latent(s), 25% of J", "(25%, 50%, 75%, 100%)")
    suite = write_suite(tmp_path, runs, evals="  - {label: 'half', sample: {budget: '50%'}}")
    assert cli(["run", suite, "--dry-run", "--no-estimate"]) == 0


@pytest.mark.parametrize("setting", ["train.lr=.inf", "train.timestep_mean=.nan", "sample.scale=-.inf"])
def test_the_schema_refuses_non_finite_numbers(tmp_path, capsys, setting):
    assert cli(["run", write_suite(tmp_path), "--dry-run", "--set", setting]) == 2
    one_line_error(capsys, setting.split("=")[0], "finite number")


# ---------------------------------------------------------------- metrics
@pytest.fixture
def reference(done) -> str:
    return str(next((done[1] / "_shared" / "reference").glob("*.npz")))


def test_metrics_of_an_empty_sample_set_is_one_line(reference, tmp_path, capsys):
    np.savez(tmp_path / "zero.npz", arr_0=np.zeros((0, 8, 8, 3), np.uint8))
    assert cli(["metrics", "--fake", str(tmp_path / "zero.npz"), "--real", reference, "--metrics", "digits_fd"]) == 2
    one_line_error(capsys, "holds no samples")


def test_string_labels_are_refused_not_scored_0(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 255, (20, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", arr_0=images, arr_1=np.array(["3"] * 20))
    assert cli(["metrics", "--fake", str(tmp_path / "s.npz"), "--metrics", "digits_acc"]) == 2
    one_line_error(capsys, "arr_1 must hold one integer class label per sample (20), got <U1")


def test_nan_reference_statistics_are_refused(tmp_path, capsys):
    np.savez(tmp_path / "nan.npz", mu_digits=np.full(4, np.nan), sigma_digits=np.eye(4))
    images = np.random.default_rng(0).integers(0, 255, (20, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", arr_0=images)
    assert cli(["metrics", "--fake", str(tmp_path / "s.npz"), "--real", str(tmp_path / "nan.npz"),
                "--metrics", "digits_fd"]) == 2
    one_line_error(capsys, "nan.npz: mu_digits / sigma_digits: statistics hold NaN or infinite values")


def test_a_cached_feature_file_with_the_wrong_row_count_is_recomputed(reference, tmp_path):
    # catches: a cache entry of another length trusted (FD 0 against itself)
    from elit_bench.metrics import compute_metrics

    rng = np.random.default_rng(0)
    fake = rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8)
    options = dict(cache_dir=tmp_path / "cache", bootstrap_replicates=2)
    first = compute_metrics(fake, reference, ["digits_fd"], **options)["digits_fd"]
    real_features = next((tmp_path / "cache").glob("*/penultimate.npy"))
    for entry in (tmp_path / "cache").glob("*/penultimate.npy"):  # every entry now holds the reference's rows
        np.save(entry, np.load(real_features)[:7])
    assert compute_metrics(fake, reference, ["digits_fd"], **options)["digits_fd"] == pytest.approx(first)


def test_the_frechet_distance_of_equal_statistics_is_0_not_negative():
    from elit_bench.metrics.frechet import frechet_distance

    features = np.random.default_rng(0).normal(size=(200, 64)) * 30
    mu, sigma = features.mean(0), np.cov(features, rowvar=False)
    assert frechet_distance(mu, sigma, mu, sigma) == 0.0


# ---------------------------------------------------------------- reports and conversion
def test_plot_with_no_records_is_one_line(tmp_path, capsys):
    assert cli(["plot", write_suite(tmp_path), "--out", str(tmp_path / "none")]) == 2
    one_line_error(capsys, "no records for suite 'faults'")


def test_convert_says_the_sin_cos_values_differ_not_the_shapes(oracle, tmp_path, capsys):  # noqa: F811
    state = oracle.sit["SiT-S/2"](**OFFICIAL_KW).state_dict()
    state["pos_embed"] = state["pos_embed"] + 0.5
    torch.save(state, tmp_path / "src.pt")
    assert cli(["convert", str(tmp_path / "src.pt"), "--format", "elit-official", "--model", "SiT-S/2",
                "--out", str(tmp_path / "o.pt")]) == 2
    err = one_line_error(capsys, "has this model's shape (1, 64, 384) but other values (they differ by up to 0.5")
    assert "not the sin-cos table" in err and not (tmp_path / "o.pt").exists()


# ---------------------------------------------------------------- cases whose fix lives in training, sampling, runner
def test_a_guidance_scale_without_guidance_is_refused(tmp_path, capsys):
    # catches: --scale 5 with no guidance ignored but recorded as scale 5, guidance_w 6
    assert cli(["run", write_suite(tmp_path), "--dry-run", "--set", "sample.scale=5"]) == 2
    one_line_error(capsys, "scale")


def test_a_diverged_run_stops_without_done_or_records(tmp_path):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    proc = run_cli("run", suite, "--out", str(out), "--no-progress", "--set", "train.lr=1e12",
                   "--set", "train.grad_clip=null", "--set", "train.warmup=0",
                   # the tiny run has 4 steps: stop at 2 non-finite steps in a row instead of the default 5
                   "--set", "train.max_nonfinite_steps=2", tmp_path=tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "Traceback" not in err
    assert not list(out.glob("faults/smoke/*/DONE")) and not list(out.glob("faults/smoke/d-*/records/*.json"))


def test_done_without_its_records_reruns_the_missing_evaluations(done, tmp_path, capsys):
    suite, out = copy_of(done, tmp_path)
    for record in (run_dir(out) / "records").glob("*.json"):
        record.unlink()
    assert cli(["run", suite, "--out", str(out), "--no-progress"]) == 0
    assert list((run_dir(out) / "records").glob("*.json"))


def test_a_stale_merge_temporary_is_removed(done, tmp_path):
    suite, out = copy_of(done, tmp_path)
    evals = next(run_dir(out).glob("evals/*/step-*"))
    (evals / ".samples.npz.abc123.tmp").write_bytes(b"partial")
    for record in (run_dir(out) / "records").glob("*.json"):
        record.unlink()
    assert cli(["run", suite, "--out", str(out), "--no-progress"]) == 0
    assert not list(evals.glob(".samples.npz.*.tmp"))


def test_a_list_valued_config_yaml_is_one_line(done, tmp_path, caplog):
    suite, out = copy_of(done, tmp_path)
    (run_dir(out) / "DONE").unlink()
    shutil.rmtree(run_dir(out) / "train" / "checkpoints")  # a run stopped before its first checkpoint: config.yaml is read
    (run_dir(out) / "train" / "config.yaml").write_text("- a\n- b\n")
    code = cli(["run", suite, "--out", str(out), "--no-progress", "--set", "train.steps=6"])
    # a run that fails is reported on one line and the suite goes on with the others (exit 1: some runs failed)
    assert code == 1
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("FAILED")]
    assert len(failed) == 1 and "config.yaml is not a mapping of config keys" in failed[0], failed
    assert "Traceback" not in caplog.text


def test_a_non_utf8_train_config_names_its_file(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"model: DiT-S/2\nlr: \xff\n")
    assert cli(["train", str(config)]) == 2
    one_line_error(capsys, "bad.yaml", "not UTF-8")


def test_model_overrides_the_layers_cannot_build_are_one_line(capsys):
    # catches: a ValueError traceback from the attention layer for a width the heads do not divide
    assert cli(["flops", "DiT-S/2", "--resolution", "32", "--set", "hidden_size=64"]) == 2
    one_line_error(capsys, "width 64 is not divisible by 6 heads")
    # and YAML 1.2 numbers there as in every --set (YAML 1.1 read 1e-4 as a string)
    assert cli(["flops", "DiT-S/2", "--resolution", "32", "--set", "hidden_size=1e-4"]) == 2
    one_line_error(capsys, "float")  # read as the number 0.0001, not the string "1e-4"


def test_a_usage_error_is_one_line(capsys):
    # catches: argparse's usage block above its error line
    with pytest.raises(SystemExit) as exit_:
        cli(["flops", "DiT-S/2", "--batch", "x"])
    assert exit_.value.code == 2
    one_line_error(capsys, "invalid int value: 'x'", "--help")
