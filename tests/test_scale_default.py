"""Without --scale, `run`, `status`, `table` and `plot` take the suite's cheapest scale and say so in one line."""

import json
import logging

from test_results import write_record

from elit_bench.cli import main
from elit_bench.suites.options import CHEAPEST_FIRST
from elit_bench.suites.spec import SCALES, load_suite

# paper listed first, as in most suite files: the default used to be the first listed
SUITE = """\
name: two-scales
base:
  train: {data: digits, resolution: 8, batch: 16, steps: 2, model_kwargs: {hidden_size: 32, depth: 2, num_heads: 2}}
  sample: {steps: 2, batch: 8}
  metrics: {names: [digits_fd], num_samples: 16, real: digits}
runs:
  - {label: DiT, train: {model: DiT-S/2}}
scales:
  paper: {}
  smoke: {train: {batch: 8}}
"""
LINE = "no --scale given: {} the cheapest scale of two-scales{}, 'smoke'; --scale paper for the paper's settings"


def test_every_scale_has_a_cost_rank():
    assert sorted(CHEAPEST_FIRST) == sorted(SCALES)


def test_run_and_status_default_to_the_cheapest_scale(tmp_path, capsys, caplog):
    path = tmp_path / "two-scales.yaml"
    path.write_text(SUITE)
    suite = load_suite(str(path))
    smoke, paper = suite.runs("smoke")[0].id, suite.runs("paper")[0].id
    assert smoke != paper  # the batch is part of the run's identity: the id tells which scale was expanded
    with caplog.at_level(logging.INFO, logger="elit_bench"):
        assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--dry-run", "--json", "--no-estimate"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["scale"] == "smoke" and [r["run"] for r in plan["runs"]] == [smoke]
    assert LINE.format("running", "") in caplog.messages
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="elit_bench"):
        assert main(["status", str(path), "--out", str(tmp_path / "runs")]) == 0
    assert smoke in capsys.readouterr().out
    assert LINE.format("showing", "") in caplog.messages
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="elit_bench"):
        assert main(["run", str(path), "--scale", "paper", "--dry-run", "--json", "--no-estimate"]) == 0
    assert json.loads(capsys.readouterr().out)["scale"] == "paper"
    assert not any("--scale" in m for m in caplog.messages)  # said only when it chose


def test_quickstart_still_runs_its_smoke_scale(capsys):
    # the README's main command, `elit-bench run quickstart`, writes under runs/quickstart/smoke
    assert main(["run", "quickstart", "--dry-run", "--no-estimate"]) == 0
    assert "quickstart at scale smoke" in capsys.readouterr().out


def test_table_and_plot_take_the_cheapest_scale_with_records(tmp_path, capsys, caplog):
    out = tmp_path / "runs"
    write_record(out, "quickstart", "DiT", None, "J=all", None, {"digits_fd": 111.0}, scale="paper")
    # only paper has records: the table is paper's, in its own report folder
    with caplog.at_level(logging.INFO, logger="elit_bench"):
        assert main(["table", "quickstart", "--out", str(out)]) == 0
    assert "111" in (out / "quickstart" / "paper" / "report" / "table.md").read_text()
    assert any("cheapest scale of quickstart with records, 'paper'" in m for m in caplog.messages)
    # smoke records too: smoke's table alone, never rows of both scales
    write_record(out, "quickstart", "DiT", None, "J=all", None, {"digits_fd": 222.0}, scale="smoke")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="elit_bench"):
        assert main(["table", "quickstart", "--out", str(out)]) == 0
        assert main(["plot", "quickstart", "--out", str(out)]) == 0
    table = (out / "quickstart" / "smoke" / "report" / "table.md").read_text()
    assert "222" in table and "111" not in table
    assert (out / "quickstart" / "smoke" / "report" / "figure.png").is_file()
    assert LINE.replace("two-scales", "quickstart").format("showing", " with records") in caplog.messages
    assert not (out / "quickstart" / "all").exists()
