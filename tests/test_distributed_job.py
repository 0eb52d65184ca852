"""One process group per job: a 2-process torchrun suite with a rank arriving late at every phase completes and
scores like one process, on world size 2; a run is done only when every record it promises is there."""

import json
import shutil
import textwrap

import pytest

from elit_bench.distributed import SKEW_ENV
from elit_bench.suites.launchers import LocalLauncher, TorchrunLauncher
from elit_bench.suites.runner import DONE, RECORDS, execute_run, is_done, run_dir
from elit_bench.suites.spec import load_suite

# a tiny digits suite: a few steps of a small DiT, two evaluations of 16 samples (each: sampling, then metrics)
SUITE = textwrap.dedent("""\
    name: tiny-job
    title: tiny suite for process-group tests
    base:
      train: {data: digits, resolution: 8, model_kwargs: {hidden_size: 32, depth: 2, num_heads: 2}, steps: 3,
              batch: 8, lr: 1.0e-3, warmup: 1, ema_decay: 0.9, log_every: 1}
      sample: {steps: 2, batch: 8}
      metrics: {names: [digits_fd, digits_acc], num_samples: 16, real: digits}
    runs:
      - {label: DiT, train: {model: DiT-S/2}}
    evals:
      - {label: plain}
      - {label: CFG, sample: {guidance: cfg, scale: 0.5}}
    scales:
      smoke: {}
    """)
SKEW_S = 1.5


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "tiny-job.yaml"
    path.write_text(SUITE)
    return load_suite(str(path)).runs("smoke")


@pytest.fixture(scope="module")
def one_process(suite, tmp_path_factory):
    """The suite run in this process (no process group) -> its output root."""
    out = tmp_path_factory.mktemp("one")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ELIT_BENCH_CACHE", str(out / "cache"))
        assert LocalLauncher().run(suite, out, progress=False) == []
    return out


def records(out, run):
    return {p.stem: json.loads(p.read_text()) for p in sorted((run_dir(out, run) / RECORDS).glob("*.json"))}


def test_torchrun_suite_with_a_late_rank_equals_one_process(suite, one_process, tmp_path, monkeypatch, capfd):
    """Rank 1 arrives SKEW_S late at the job's start and at every phase (training, each sampling, each metrics
    pass, the real-data floor); re-creating the group per phase failed here. The records equal one process's and
    say their features were extracted over 2 processes."""
    monkeypatch.setenv(SKEW_ENV, f"1:{SKEW_S}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ELIT_BENCH_DIST_TIMEOUT_S", "120")  # a rank stuck in a collective fails the test, not CI
    monkeypatch.setenv("ELIT_BENCH_CACHE", str(tmp_path / "cache"))  # features extracted here, not read from cache
    capfd.readouterr()
    assert TorchrunLauncher(nproc=2).run(suite, tmp_path, progress=False) == []
    err = capfd.readouterr().err
    # the job's start, training, and per evaluation its sampling, metrics and real-data floor
    assert err.count(f"{SKEW_ENV}: rank 1 arrives {SKEW_S} s late") >= 2 + 2 * 3, err[-3000:]
    run = suite[0]
    assert is_done(tmp_path, run)
    two, one = records(tmp_path, run), records(one_process, run)
    assert sorted(two) == sorted(one) == sorted(e.id for e in run.evals)
    for eval_id, record in two.items():
        assert record["provenance"]["metrics"]["world_size"] == 2
        assert record["provenance"]["metrics"]["device"].startswith("cpu")
        assert one[eval_id]["provenance"]["metrics"]["world_size"] == 1
        assert record["train_step"] == one[eval_id]["train_step"] == 3
        for name in ("digits_fd", "digits_acc"):
            assert record["metrics"][name] == pytest.approx(one[eval_id]["metrics"][name], rel=1e-3, abs=1e-6)
    floor = next((tmp_path / "tiny-job" / "smoke" / "real-data" / RECORDS).glob("*.json"))
    assert json.loads(floor.read_text())["provenance"]["metrics"]["world_size"] == 2


@pytest.mark.parametrize("damage", ["missing", "not JSON", "not a record"])
def test_done_needs_every_promised_record_and_a_missing_one_is_evaluated_again(suite, one_process, tmp_path, damage,
                                                                               monkeypatch):
    monkeypatch.setenv("ELIT_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    shutil.copytree(one_process, out)
    run = suite[0]
    assert is_done(out, run)
    rdir = run_dir(out, run)
    target = rdir / RECORDS / f"{run.evals[1].id}.json"
    before = json.loads(target.read_text())
    {"missing": lambda: target.unlink(), "not JSON": lambda: target.write_text('{"metrics": {'),
     "not a record": lambda: target.write_text("null")}[damage]()
    assert (rdir / DONE).is_file() and not is_done(out, run)

    samples = rdir / "evals" / run.evals[1].id / "step-3" / "samples.npz"
    stamp = samples.stat().st_mtime_ns
    execute_run(run, out, progress=False)
    assert is_done(out, run)
    after = json.loads(target.read_text())
    assert after["metrics"] == pytest.approx(before["metrics"])
    assert samples.stat().st_mtime_ns == stamp  # the verified sample set was reused, not drawn again


@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf"])
def test_a_bad_collective_timeout_is_one_line(value, monkeypatch):
    from elit_bench.distributed import TIMEOUT_ENV, timeout
    from elit_bench.errors import UserError

    monkeypatch.setenv(TIMEOUT_ENV, value)
    with pytest.raises(UserError, match=TIMEOUT_ENV):
        timeout()
    monkeypatch.setenv(TIMEOUT_ENV, "90")
    assert timeout().total_seconds() == 90
