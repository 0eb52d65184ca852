"""Results: tables in the paper's layout with the published numbers beside ours, figures, leaderboards."""

import json
import os

import pytest

from elit_bench.cli import main


def write_record(out, suite, run, paper_row, eval_label, guidance, metrics, tf=182.2, gflops=100.0, scale="paper",
                 model="DiT-XL/2", data=("imagenet", 256), steps=40, num=50000, seed=None, noise=None, **extra):
    """A record file; `seed`: its training seed (a run folder of its own), `noise`: its noise-seed spec,
    `extra`: further keys (intervals, features)."""
    run_id = f"{run}-abc" if seed is None else f"{run}-s{seed}"
    path = out / suite / scale / run_id / "records" / f"{eval_label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "suite": suite, "scale": scale, "run_id": run_id, "run_label": run, "paper_row": paper_row,
        "paper_setting": None, "eval_id": eval_label, "eval_label": eval_label, "paper_guidance": guidance,
        "series": None, "model": model, "train_step": 10, "metrics": metrics, "num_samples": num,
        "sample": {"steps": steps, "guidance": "none", "scale": 0.0, "budget": None, "seeds": noise},
        "flops": {"sample_flops_per_sample": gflops * 1e9, "train_tflops_per_iter": tf, "train_total_flops": 1.0},
        "provenance": {"code_version": "test", "train_config": {"data": {"name": data[0], "resolution": data[1]},
                                                                "seed": seed}},
        **extra,
    }))
    return path


@pytest.fixture
def table1_records(tmp_path):
    out = tmp_path / "runs"
    write_record(out, "table1-256", "DiT-XL", "DiT-XL", "-G", "-G", {"fid": 14.3, "fdd": 350.0, "is_mean": 60.0})
    write_record(out, "table1-256", "DiT-XL", "DiT-XL", "+G", "+G", {"fid": 6.0, "fdd": 240.0, "is_mean": 110.0})
    write_record(out, "table1-256", "ELIT-DiT-XL", "ELIT-DiT-XL", "-G", "-G", {"fid": 8.2, "fdd": 210.0, "is_mean": 90.0},
                 tf=188.5)
    return out


def test_table1_renders_paper_layout_with_published_numbers(table1_records, tmp_path, capsys):
    dest = tmp_path / "report"
    assert main(["table", "table1-256", "--out", str(table1_records), "--dest", str(dest)]) == 0
    md = (dest / "table.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("|")]
    header, dit, elit = lines[0], next(x for x in lines if "| DiT-XL" in x), next(x for x in lines if "| ELIT-DiT-XL" in x)
    # the paper's columns: TF, then each metric without and with guidance
    cols = ["TF/iter", "FID -G", "FID +G", "FDD -G", "FDD +G", "IS -G", "IS +G"]
    assert [header.index(c) for c in cols] == sorted(header.index(c) for c in cols)
    assert "14.3 (13, +10%)" in dit  # ours, published (Table 1: 13.0), relative change
    assert "6 (5.7, +5%)" in dit
    assert "182.2 (182, +0%)" in dit
    assert "8.2 (8.2, +0%)" in elit and "188.5 (188, +0%)" in elit
    assert "\\begin{tabular}" in (dest / "table.tex").read_text()


def test_table_without_records_exits_2(tmp_path, capsys):
    assert main(["table", "table1-256", "--out", str(tmp_path)]) == 2
    assert "no records" in capsys.readouterr().err


def test_corrupt_record_is_named(table1_records, capsys):
    bad = next(table1_records.rglob("*.json"))
    bad.write_text("{not json")
    assert main(["table", "table1-256", "--out", str(table1_records)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_long_table_keeps_each_runs_evaluation_order(tmp_path):
    # the quickstart's DiT has "J=all, CFG", ELIT "J=1..4, CFG, CCFG": CFG must not jump ahead of J=1
    out = tmp_path / "runs"
    evals = {"DiT": ["J=all", "CFG"], "ELIT-MB": ["J=1", "J=2", "J=3", "J=4", "CFG", "CCFG J_w=1"]}
    for run, labels in evals.items():
        for label in reversed(labels):
            write_record(out, "quickstart", run, None, label, None, {"digits_fd": 1.0}, scale="smoke")
    dest = tmp_path / "report"
    assert main(["table", "quickstart", "--out", str(out), "--dest", str(dest)]) == 0
    rows = [[c.strip() for c in line.split("|")[1:3]] for line in (dest / "table.md").read_text().splitlines()[6:]
            if line.startswith("|")]
    assert rows == [[run, label] for run, labels in evals.items() for label in labels]
    # results are shared files: the mode a plain open() gives, not a private temporary file's 0600
    umask = os.umask(0)
    os.umask(umask)
    assert (dest / "table.md").stat().st_mode & 0o777 == 0o666 & ~umask


def capture_figures(monkeypatch):
    """Figures the plot command draws, kept open for inspection (pyplot.close is what it calls when done)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    return figures


def plotted(ax) -> dict:
    """{legend label: sorted (x, y) points} of the data lines, matched to the legend entries by colour."""
    from matplotlib.colors import to_hex

    handles = {to_hex(h.get_color()): h.get_label() for h in ax.lines if len(h.get_xydata()) == 0}
    return {handles[to_hex(line.get_color())]: sorted(map(tuple, line.get_xydata().tolist()))
            for line in ax.lines if line.get_label().startswith("_child")}


def test_plot_draws_each_runs_points_the_frontier_and_the_axis_labels(tmp_path, monkeypatch):
    # catches: another metric or x quantity plotted, runs merged into one line, a dominated point on the frontier,
    # or axis labels other than the suite's; a file size says none of this
    from elit_bench.suites.spec import load_suite

    out = tmp_path / "runs"
    for budget, (fd, gf) in enumerate([(30.0, 1.0), (20.0, 2.0), (25.0, 3.0)], start=1):
        write_record(out, "quickstart", "ELIT-MB", None, f"J={budget}", None, {"digits_fd": fd}, gflops=gf,
                     scale="smoke", data=("digits", 16), steps=20, num=512)
    write_record(out, "quickstart", "DiT", None, "J=all", None, {"digits_fd": 22.0, "digits_acc": 0.9}, gflops=4.0,
                 scale="smoke", data=("digits", 16), steps=20, num=512)
    figures = capture_figures(monkeypatch)
    assert main(["plot", "quickstart", "--out", str(out), "--dest", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "figure.png").is_file() and (tmp_path / "fig" / "figure.svg").is_file()
    ax, = figures[0].axes
    assert plotted(ax) == {"ELIT-MB": [(1.0, 30.0), (2.0, 20.0), (3.0, 25.0)], "DiT": [(4.0, 22.0)]}
    # FD is lower-is-better: (3, 25) and (4, 22) are dominated by (2, 20), so the frontier is (1, 30), (2, 20)
    front, = [line for line in ax.lines if line.get_label() == "Pareto frontier"]
    assert front.get_linestyle() == "--" and front.get_xydata().tolist() == [[1.0, 30.0], [2.0, 20.0]]
    report = load_suite("quickstart").report
    assert (ax.get_xlabel(), ax.get_ylabel()) == (report["xlabel"], report["ylabel"])


def test_plot_at_smoke_scale_draws_the_metric_that_scale_measures(tmp_path, capsys):
    """fig7 plots FID at paper scale; its smoke scale measures digits_fd, which the figure then shows."""
    out = tmp_path / "runs"
    for steps, fd in ((10, 30.0), (20, 25.0)):
        write_record(out, "fig7-steps-vs-tokens", "ELIT-MB", None, f"{steps} steps", None,
                     {"digits_fd": fd, "digits_acc": 0.5}, gflops=steps / 10, scale="smoke", num=64)
    assert main(["plot", "fig7-steps-vs-tokens", "--out", str(out), "--dest", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "figure.svg").read_text().count("FD(digits)") >= 1
    write_record(out, "fig7-steps-vs-tokens", "ELIT-MB", None, "30 steps", None, {"other": 1.0}, scale="paper")
    assert main(["plot", "fig7-steps-vs-tokens", "--out", str(out), "--scale", "paper"]) == 2
    assert "no 'fid' values" in capsys.readouterr().err


def test_leaderboard_ranks_marks_frontier_and_filters_protocol(tmp_path):
    out = tmp_path / "runs"
    write_record(out, "quickstart", "A", None, "e1", None, {"digits_fd": 10.0}, gflops=5.0, scale="smoke",
                 data=("digits", 16), steps=20, num=512)
    write_record(out, "quickstart", "B", None, "e1", None, {"digits_fd": 20.0}, gflops=1.0, scale="smoke",
                 data=("digits", 16), steps=20, num=512)
    write_record(out, "quickstart", "C", None, "e1", None, {"digits_fd": 30.0}, gflops=3.0, scale="smoke",
                 data=("digits", 16), steps=20, num=512)
    write_record(out, "quickstart", "D", None, "e1", None, {"digits_fd": 1.0}, gflops=1.0, scale="smoke",
                 data=("digits", 16), steps=10, num=512)  # other protocol: 10 sampling steps
    assert main(["leaderboard", "digits-16px", "--out", str(out), "--dest", str(tmp_path / "lb")]) == 0
    md = (tmp_path / "lb" / "digits-16px.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("|") and "rank" not in line and "---" not in line]
    assert [r.split("|")[3].strip() for r in rows] == ["A", "B", "C"]  # ranked by FD, D excluded
    assert rows[0].rstrip("| ").endswith("*") and rows[1].rstrip("| ").endswith("*")  # A and B on the frontier
    assert not rows[2].rstrip("| ").endswith("*")
    assert "<table" in (tmp_path / "lb" / "digits-16px.html").read_text()


def test_unknown_leaderboard_exits_2(tmp_path, capsys):
    assert main(["leaderboard", "nope", "--out", str(tmp_path)]) == 2
    assert "digits-16px" in capsys.readouterr().err


# ---------------------------------------------------------------- comparisons from per-sample values
# Tiny digits-like sets (60 samples, 3 feature dims): the mean offset from the reference makes each FD's own
# interval wide, while two sets drawn from the same noise move together, so only their paired difference
# tells a 10% shift apart (checked below: their own intervals overlap)
LEADERBOARD = {"data": ("digits", 16), "steps": 20, "num": 512, "scale": "smoke"}


def shifted(shift: float, draw: int = 0):
    import numpy as np

    return np.random.default_rng(draw).normal(size=(60, 3)) + np.array([shift, 0.0, 0.0])


def features_record(out, suite, run, eval_label, features, seed=0, gflops=1.0):
    """A digits_fd record of training seed `seed` (noise block seed * 1000) whose debiased value and interval come
    from `features`, kept beside it with the shared reference, as an evaluation writes them."""
    import hashlib
    import io

    import numpy as np

    from elit_bench.metrics.paired import Arm, cell_interval

    def npy(array):
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array, dtype=np.float32))
        return buffer.getvalue()

    def entry(data, file):
        return {"file": file, "sha256": hashlib.sha256(data).hexdigest()}

    reference = np.random.default_rng(99).normal(size=(60, 3)).astype(np.float32)
    ref_path = out / "_shared" / "features" / "reference.npy"
    ref_path.parent.mkdir(parents=True, exist_ok=True)
    ref_path.write_bytes(npy(reference))
    noise = f"{seed * 1000}-{seed * 1000 + len(features) - 1}"
    data = npy(features)
    cell = cell_interval(Arm({seed: np.load(io.BytesIO(data))}, {seed: noise}), "frechet", reference)
    file = f"{eval_label}.digits_fd.features.npy"
    rel = os.path.relpath(ref_path, out / suite / "smoke" / run / "records")  # the record folder's depth
    path = write_record(out, suite, run, None, eval_label, None, {"digits_fd": cell["value_at_n"],
                                                                  "digits_fd_debiased": cell["estimate"]},
                        gflops=gflops, seed=seed, noise=noise, **LEADERBOARD,
                        intervals={"digits_fd_debiased": {"low": cell["low"], "high": cell["high"], "level": 0.95,
                                                          "method": cell["method"]}},
                        features={"digits_fd": {**entry(data, file), "reference": entry(npy(reference), rel)}})
    (path.parent / file).write_bytes(data)
    return path


def board_rows(out, kind=None):
    from elit_bench.results.leaderboard import leaderboard_frame

    df = leaderboard_frame("digits-16px", out)[1]
    return df if kind is None else df[df["kind"] == kind].reset_index(drop=True)


def test_leaderboard_ties_and_frontier_come_from_paired_differences(tmp_path, capsys):
    # catches: ties or dominance read off two overlapping marginal intervals (both boards would then tie), or
    # pairing ignored (both boards would tie)
    from elit_bench.results.leaderboard import SINGLE_SEED

    boards = {}
    for b_seed in (0, 1):  # B of training seed 0 draws A's noise: paired; of seed 1 its own: unpaired
        out = tmp_path / f"b-seed-{b_seed}"
        features_record(out, "quickstart", "A", "e1", shifted(2.0), gflops=1.0)
        features_record(out, "quickstart", "B", "e1", shifted(2.2), seed=b_seed, gflops=2.0)
        boards[b_seed] = board_rows(out, SINGLE_SEED)
    paired, unpaired = boards[0], boards[1]
    a, b = paired.iloc[0], paired.iloc[1]
    assert (a["run"], b["run"]) == ("A", "B") and a["high"] > b["low"]  # their own 95% intervals overlap
    assert paired["rank"].tolist() == ["1", "2"] and paired["Pareto"].tolist() == ["*", ""]
    assert unpaired["rank"].tolist() == ["1", "=1"]
    assert unpaired["Pareto"].tolist() == ["*", "* (not separated)"]
    assert main(["leaderboard", "digits-16px", "--out", str(tmp_path / "b-seed-0"), "--dest", str(tmp_path / "lb")]) == 0
    md = (tmp_path / "lb" / "digits-16px.md").read_text()
    assert "## Single training seed" in md and "## Mean over training seeds" not in md


def test_leaderboard_never_ranks_a_seed_mean_against_a_single_seed(tmp_path):
    # the 3-seed DiT of one suite and its own seed-0 record in another: before, one list ranked them together
    # and the seed-0 record "dominated" the mean
    from elit_bench.results.leaderboard import SEED_MEAN, SINGLE_SEED

    out = tmp_path / "runs"
    for seed in (0, 1, 2):
        features_record(out, "claims", "DiT", "e1", shifted(2.0 + 0.3 * seed, draw=seed), seed=seed)
    features_record(out, "quickstart", "DiT", "e1", shifted(2.0))
    features_record(out, "quickstart", "ELIT", "e1", shifted(2.6), gflops=0.5)
    df = board_rows(out)
    assert df["kind"].tolist() == [SEED_MEAN, SINGLE_SEED, SINGLE_SEED]
    mean = df.iloc[0]
    assert (mean["suite"], mean["seeds"], mean["rank"], mean["Pareto"]) == ("claims", "0, 1, 2", "1", "*")
    assert mean["method"] == "hierarchical-bootstrap" and mean["low"] <= mean["digits_fd_debiased"] <= mean["high"]
    assert "95% over seeds and samples; sd" in mean["95% interval"] and "seed 2:" in mean["95% interval"]
    single = df.iloc[1:]
    assert single["run"].tolist() == ["DiT", "ELIT"] and single["rank"].tolist() == ["1", "2"]
    assert single["Pareto"].tolist() == ["*", "*"]  # ELIT is cheaper


def test_rank_ties_are_counted_from_the_head_of_a_group_not_chained():
    # values 10, 11.2, 12.4 with +-1 intervals and no per-sample values (independent differences, half-width
    # sqrt(2)): 11.2 is not separated from 10, 12.4 is (though not from 11.2), so it starts a new group
    import pandas as pd

    from elit_bench.results.leaderboard import rank_ties

    entries = pd.DataFrame({"metric": "digits_fd", "value": [10.0, 11.2, 12.4], "low": [9.0, 10.2, 11.4],
                            "high": [11.0, 12.2, 13.4], "arm": None, "cell": None})
    assert rank_ties(entries, higher=False) == ["1", "=1", "3"]
    assert rank_ties(entries.iloc[::-1], higher=True) == ["1", "=1", "3"]


def test_compare_tests_two_records_sharing_noise_on_their_paired_difference(tmp_path, capsys):
    # B's FD moved 10% with A's samples (same noise): inside A's own interval, yet the paired difference excludes 0
    from elit_bench.results.compare import compare_records

    a, b, same = tmp_path / "a", tmp_path / "b", tmp_path / "same"
    features_record(a, "quickstart", "DiT", "e1", shifted(2.0))
    features_record(b, "quickstart", "DiT", "e1", shifted(2.2))
    features_record(same, "quickstart", "DiT", "e1", shifted(2.0))
    row = compare_records(a, b).set_index("metric").loc["digits_fd_debiased"]
    assert row["within"] and row["pairing"] == "paired" and row["diff_low"] > 0 and row["differ"] and not row["agrees"]
    assert main(["compare", str(a), str(b)]) == 1
    assert "differ (the 95% interval of B - A excludes 0)" in capsys.readouterr().out
    row = compare_records(a, same).set_index("metric").loc["digits_fd_debiased"]
    assert row["identical"] and row["pairing"] is None and row["agrees"]  # equal: nothing to resample
    assert main(["compare", str(a), str(same)]) == 0


def test_a_damaged_per_sample_file_is_named(tmp_path, capsys):
    out = tmp_path / "runs"
    path = features_record(out, "quickstart", "DiT", "e1", shifted(2.0))
    sidecar = path.with_name("e1.digits_fd.features.npy")
    sidecar.write_bytes(sidecar.read_bytes()[:-4])
    assert main(["leaderboard", "digits-16px", "--out", str(out), "--dest", str(tmp_path / "lb")]) == 2
    err = capsys.readouterr().err
    assert str(sidecar) in err and "rerun the evaluation" in err


def test_a_seed_mean_without_per_sample_values_says_its_interval_omits_sampling_noise(tmp_path):
    from elit_bench.results.records import aggregate_seeds, format_estimate, load_records, records_frame

    out = tmp_path / "runs"
    for seed, fd in enumerate([10.0, 12.0, 14.0]):
        write_record(out, "quickstart", "DiT", None, "e1", None, {"digits_acc": fd / 100}, seed=seed, **LEADERBOARD)
    row = aggregate_seeds(records_frame(load_records(out))).iloc[0]
    assert row["method"] == "t-over-seeds" and row["arm"] is None
    half = (row["high"] - row["low"]) / 2  # a 95% half-width: t(2) 4.303 * sd / sqrt(3)
    assert half == pytest.approx(4.303 * 0.02 / 3**0.5, rel=1e-3)
    assert format_estimate(row) == (f"0.12 ± {half:.2g} (95% t over seeds, omits sampling noise; sd 0.02 over 3 "
                                    "seeds; seed 0: 0.1; seed 1: 0.12; seed 2: 0.14)")


def test_figure_frontier_comes_from_paired_differences(tmp_path, monkeypatch):
    # the figure's dashed frontier: the dearer, worse set is off it when it shares the cheap one's noise
    # (paired difference excludes 0), on it when drawn from other noise (not separated)
    figures = capture_figures(monkeypatch)
    for b_seed in (0, 1):
        out = tmp_path / f"b-seed-{b_seed}"
        features_record(out, "quickstart", "A", "e1", shifted(2.0), gflops=1.0)
        features_record(out, "quickstart", "B", "e1", shifted(2.2), seed=b_seed, gflops=2.0)
        assert main(["plot", "quickstart", "--out", str(out), "--dest", str(tmp_path / "fig")]) == 0
    fronts = [[x for x, _ in line.get_xydata().tolist()] for fig in figures for line in fig.axes[0].lines
              if line.get_label() == "Pareto frontier"]
    assert fronts == [[1.0], [1.0, 2.0]]


def test_a_board_metric_without_a_direction_is_an_error(tmp_path, monkeypatch, capsys):
    from elit_bench.results import leaderboard

    write_record(tmp_path, "quickstart", "A", None, "e1", None, {"is_std": 1.0}, **LEADERBOARD)
    monkeypatch.setattr(leaderboard, "board_definition", lambda name: {"name": name, "metric": "is_std"})
    assert main(["leaderboard", "spread", "--out", str(tmp_path)]) == 2
    assert "has no direction" in capsys.readouterr().err
