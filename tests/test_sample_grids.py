"""Reports with intervals, seeds, the real-data floor, rho from our records, and sample grids / contact sheets."""

import json

import numpy as np

from elit_bench.cli import main
from elit_bench.metrics.frontier import rho
from elit_bench.metrics.intervals import t_bounds
from elit_bench.sampling.generate import GRID, ensure_grid, write_npz
from elit_bench.suites.floor import REAL_DATA_LABEL, REAL_DATA_RUN

DIGITS = {"name": "digits", "resolution": 16}


def record(out, suite, run, evaluation, metrics, intervals=None, seed=0, gflops=1.0, tf=1.0, paper_row=None,
           guidance=None, scale="smoke", num=512, samples=False):
    """A record as the runner writes it (optionally with its sample set); returns its path."""
    run_id = f"{run.replace(' ', '_')}-s{seed}" if run != REAL_DATA_LABEL else REAL_DATA_RUN
    rdir = out / suite / scale / run_id
    body = {
        "suite": suite, "scale": scale, "run_id": run_id, "run_label": run, "paper_row": paper_row,
        "paper_setting": None, "eval_id": evaluation.replace(" ", "_"), "eval_label": evaluation,
        "paper_guidance": guidance, "series": None, "model": "DiT-S/2" if run != REAL_DATA_LABEL else run,
        "train_step": 10, "metrics": metrics, "intervals": intervals or {}, "num_samples": num,
        "sample": {"steps": 20, "guidance": "none", "scale": 0.0, "budget": None},
        "flops": {"sample_flops_per_sample": gflops * 1e9, "train_tflops_per_iter": tf},
        "provenance": {"code_version": "test", "train_config": {"data": DIGITS, "seed": seed}},
    }
    if run == REAL_DATA_LABEL:
        body.update(sample={}, flops={}, data=DIGITS, provenance={"code_version": "test"})
    path = rdir / "records" / f"{body['eval_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    if samples:
        images = np.random.default_rng(seed).integers(0, 256, (70, 16, 16, 3), dtype=np.uint8)
        write_npz(rdir / "evals" / body["eval_id"] / "samples.npz", arr_0=images, arr_1=np.zeros(70, dtype=np.int64))
    return path


def fd(value, low, high):
    return {"low": low, "high": high, "level": 0.95, "method": "bootstrap-basic"}


def table_rows(md):
    return [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines()
            if line.startswith("|") and "---" not in line]


def test_long_table_shows_floor_first_seeds_and_intervals_and_links_grids(tmp_path):
    out, dest = tmp_path / "runs", tmp_path / "report"
    for seed, value in ((0, 200.0), (1, 210.0), (2, 220.0)):
        record(out, "quickstart", "DiT", "J=all", {"digits_fd": value}, {"digits_fd": fd(value, value - 40, value - 5)},
               seed=seed, samples=True)
    record(out, "quickstart", "ELIT-MB", "CFG", {"digits_fd": 150.0, "digits_acc": 0.9},
           {"digits_fd": fd(150, 110, 140), "digits_acc": {"low": 0.87, "high": 0.93, "method": "wilson"}})
    record(out, "quickstart", REAL_DATA_LABEL, "512 digits, 16 px", {"digits_fd": 50.0}, {"digits_fd": fd(50, 0, 57)})
    assert main(["table", "quickstart", "--out", str(out), "--dest", str(dest)]) == 0
    md = (dest / "table.md").read_text()
    header, *rows = table_rows(md)
    assert rows[0][:2] == [REAL_DATA_LABEL, "512 digits, 16 px"] and "50 [0, 57]" in rows[0]
    dit = next(r for r in rows if r[0] == "DiT")
    low, high = t_bounds([200.0, 210.0, 220.0])
    # mean ± sd over seeds, then each seed with its own interval
    # a mean over seeds: "±" is the 95% half-width (t over 3 seeds: 4.303 x 10 / sqrt 3), the sd labelled sd
    assert ("210 ± 25 (95% t over seeds, omits sampling noise; sd 10 over 3 seeds; seed 0: 200 [160, 195]; "
            "seed 1: 210 [170, 205]; seed 2: 220 [180, 215])") in dit
    assert [dit[header.index("samples")].count(f"[seed {s}](") for s in range(3)] == [1, 1, 1]
    elit = next(r for r in rows if r[0] == "ELIT-MB")
    assert "150 [110, 140]" in elit and "0.9 ± 0.03" in elit  # a centred interval prints as ± half-width
    assert "[samples.png](samples.png)" in md and (dest / "samples.png").stat().st_size > 1000
    # grids were drawn for the existing sample sets
    assert len(list(out.rglob(GRID))) == 3
    assert low < 210 < high


def test_leaderboard_marks_ties_and_heads_with_the_floor(tmp_path):
    out = tmp_path / "runs"
    entries = {"A": (10.0, 8.0, 12.0, 5.0), "B": (11.0, 9.0, 13.0, 1.0), "C": (20.0, 19.0, 21.0, 0.5),
               "D": (30.0, 29.0, 31.0, 3.0)}
    for run, (value, low, high, gflops) in entries.items():
        record(out, "quickstart", run, "e", {"digits_fd": value}, {"digits_fd": fd(value, low, high)}, gflops=gflops)
    record(out, "quickstart", REAL_DATA_LABEL, "512 digits, 16 px", {"digits_fd": 4.0}, {"digits_fd": fd(4, 0, 6)})
    assert main(["leaderboard", "digits-16px", "--out", str(out), "--dest", str(tmp_path / "lb")]) == 0
    header, *rows = table_rows((tmp_path / "lb" / "digits-16px.md").read_text())
    rows = [r for r in rows if r != header]  # the floor and the single-seed entries: one table each
    ranks = {r[header.index("run")]: r[header.index("rank")] for r in rows}
    assert rows[0][header.index("run")] == REAL_DATA_LABEL and ranks[REAL_DATA_LABEL] == "-"
    # no per-sample values: the difference's interval from the two intervals (independent); B - A = 1 +- 2.8
    # holds 0, so B ties with A, the head of its group ("=1"); C and D are separated from their heads
    assert ranks == {REAL_DATA_LABEL: "-", "A": "1", "B": "=1", "C": "3", "D": "4"}
    pareto = {r[header.index("run")]: r[header.index("Pareto")] for r in rows}
    # B is cheaper than A and tied with it; C cheaper still; D costs more than C and is worse beyond the intervals
    assert pareto == {REAL_DATA_LABEL: "", "A": "*", "B": "*", "C": "*", "D": ""}


def test_table6_rho_from_our_records_beside_the_paper(tmp_path):
    out, dest = tmp_path / "runs", tmp_path / "report"
    runs = {"DiT": (100.0, 2.0), "DiT patch 2x4": (130.0, 1.0)}  # (digits FD, training TF per iteration)
    for run, (value, tf) in runs.items():
        for ev in ("-G", "+G"):
            record(out, "table6-rho", run, ev, {"digits_fd": value}, {"digits_fd": fd(value, value - 10, value + 10)},
                   tf=tf, paper_row=run, guidance=ev, num=64)
    record(out, "table6-rho", REAL_DATA_LABEL, "64 digits, 16 px", {"digits_fd": 60.0}, {"digits_fd": fd(60, 0, 70)}, num=64)
    assert main(["table", "table6-rho", "--out", str(out), "--dest", str(dest)]) == 0
    header, *rows = table_rows((dest / "table.md").read_text())
    patch = next(r for r in rows if r[0] == "DiT patch 2x4")
    expected = rho(100.0, 130.0, 2.0, 1.0)
    low, high = (120 / 110) / 2, (140 / 90) / 2
    assert patch[header.index("rho(FD digits) -G")] == f"{expected:.4g} [{low:.4g}, {high:.4g}]"
    assert next(r for r in rows if r[0] == "DiT")[header.index("rho(FD digits) +G")] == "1"
    # the floor is the first row, under every evaluation scored at its sample count
    assert rows[0][0] == REAL_DATA_LABEL
    assert rows[0][header.index("FD(digits) -G")] == rows[0][header.index("FD(digits) +G")] == "60 [0, 70]"


def test_plot_draws_intervals_seeds_and_the_floor(tmp_path):
    out = tmp_path / "runs"
    for seed in (0, 1):
        for budget, value in ((1, 30.0), (2, 20.0)):
            record(out, "quickstart", "ELIT-MB", f"J={budget}", {"digits_fd": value + seed},
                   {"digits_fd": fd(value, value - 3, value + 1)}, seed=seed, gflops=budget)
    record(out, "quickstart", REAL_DATA_LABEL, "512 digits, 16 px", {"digits_fd": 5.0}, {"digits_fd": fd(5, 0, 8)})
    assert main(["plot", "quickstart", "--out", str(out), "--dest", str(tmp_path / "fig")]) == 0
    svg = (tmp_path / "fig" / "figure.svg").read_text()
    assert "real data (n=512)" in svg and "Pareto frontier" in svg


def test_ensure_grid_draws_a_missing_grid_from_the_samples(tmp_path):
    assert ensure_grid(tmp_path) is None  # no samples, no grid
    write_npz(tmp_path / "samples.npz", arr_0=np.full((3, 8, 8, 3), 200, dtype=np.uint8), arr_1=np.zeros(3, dtype=np.int64))
    from PIL import Image

    with Image.open(ensure_grid(tmp_path)) as image:
        assert image.size == (24, 8)  # three 8 px samples in one row
    (tmp_path / GRID).write_bytes(b"kept")  # an existing grid is the one the set was written with
    assert ensure_grid(tmp_path).read_bytes() == b"kept"
