"""Results: tables in the paper's layout with the published numbers beside ours, figures, leaderboards."""

import json
import os

import pytest

from elit_bench.cli import main


def write_record(out, suite, run, paper_row, eval_label, guidance, metrics, tf=182.2, gflops=100.0, scale="paper",
                 model="DiT-XL/2", data=("imagenet", 256), steps=40, num=50000):
    path = out / suite / scale / f"{run}-abc" / "records" / f"{eval_label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "suite": suite, "scale": scale, "run_id": f"{run}-abc", "run_label": run, "paper_row": paper_row,
        "paper_setting": None, "eval_id": eval_label, "eval_label": eval_label, "paper_guidance": guidance,
        "series": None, "model": model, "train_step": 10, "metrics": metrics, "num_samples": num,
        "sample": {"steps": steps, "guidance": "none", "scale": 0.0, "budget": None},
        "flops": {"sample_flops_per_sample": gflops * 1e9, "train_tflops_per_iter": tf, "train_total_flops": 1.0},
        "provenance": {"code_version": "test", "train_config": {"data": {"name": data[0], "resolution": data[1]}}},
    }))


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
