"""A metric declared once (MetricSpec) drives records, labels and directions; report kinds come from one registry."""

from types import SimpleNamespace

import pytest
import torch
from test_results import write_record

from elit_bench.cli import main
from elit_bench.data.digits import load_digits_split, render_uint8
from elit_bench.errors import UserError
from elit_bench.metrics import ArraySamples, compute_metrics
from elit_bench.metrics.compute import (
    HIGHER_IS_BETTER,
    KEY_SPECS,
    METRICS,
    higher_is_better,
    metric_key,
    record_key,
)
from elit_bench.results.records import load_records, records_frame
from elit_bench.results.report import METRIC_LABELS
from elit_bench.results.reports import KINDS, kind_of, plot, write_report
from elit_bench.suites.spec import Suite, load_suite


def test_the_results_views_follow_the_declarations():
    assert KEY_SPECS["digits_fd_debiased"].higher_is_better is False and HIGHER_IS_BETTER["is_mean"] is True
    assert "is_std" not in HIGHER_IS_BETTER  # a spread ranks nothing
    assert METRIC_LABELS["digits_fd"] == "FD(digits)" and METRIC_LABELS["precision"] == "Prec."
    assert (record_key("is"), record_key("pr"), record_key("fid"), record_key("tf")) == ("is_mean", "precision",
                                                                                        "fid", "tf")
    assert metric_key("recall").label == "Rec."
    with pytest.raises(UserError, match="unknown metric key 'fid_at_n'"):
        metric_key("fid_at_n")
    with pytest.raises(UserError, match="'is_std' has no direction"):
        higher_is_better("is_std")


def test_the_declared_interval_is_the_one_records_get():
    """Every digits key with a declared interval method gets an interval of that method, and no other key one."""
    split = load_digits_split()
    fake = render_uint8(torch.from_numpy(split["heldout_x"][:96]), 16).numpy()
    real = render_uint8(torch.from_numpy(split["train_x"][:96]), 16).numpy()
    names = [n for n, spec in METRICS.items() if spec.extractor == "digits-cnn"]
    res = compute_metrics(ArraySamples(fake, split["heldout_y"][:96]), real, names, use_cache=False,
                          bootstrap_replicates=20)
    keys = {k for n in names for k in METRICS[n].keys}
    assert keys <= set(res)
    declared = {k: KEY_SPECS[k].interval for k in keys if KEY_SPECS[k].interval}
    assert set(res["intervals"]) == set(declared)
    for key, method in declared.items():
        assert res["intervals"][key]["method"].startswith(method), key


def test_report_kinds_come_from_the_registry():
    assert set(KINDS) == {"table", "plot", "claims"}
    assert KINDS["plot"].report_draws and not KINDS["table"].report_draws
    with pytest.raises(UserError, match="unknown report kind of suite 'x' 'poster'"):
        kind_of(SimpleNamespace(name="x", report={"kind": "poster"}))


def quickstart_records(out):
    for budget, (fd, gf) in enumerate([(30.0, 1.0), (20.0, 2.0)], start=1):
        write_record(out, "quickstart", "ELIT-MB", None, f"J={budget}", None, {"digits_fd": fd, "digits_kid_std": 0.1},
                     gflops=gf, scale="smoke", data=("digits", 16), steps=20, num=512)


def count_expansions(monkeypatch) -> list:
    """Expansions made (`Suite.runs` keeps each; `_validated` is the expansion itself)."""
    calls = []
    expand = Suite._validated
    monkeypatch.setattr(Suite, "_validated", lambda self, *a, **k: calls.append(a) or expand(self, *a, **k))
    return calls


def test_a_report_expands_the_suite_once(tmp_path, monkeypatch):
    # the contact sheet, the table's order and the figure's metric all read the suite's runs: one expansion
    out = tmp_path / "runs"
    quickstart_records(out)
    calls = count_expansions(monkeypatch)
    assert main(["table", "quickstart", "--out", str(out), "--dest", str(tmp_path / "report")]) == 0
    assert len(calls) == 1
    for steps, fd in ((10, 30.0), (20, 25.0)):  # fig7 plots fid; its smoke scale measures digits_fd
        write_record(out, "fig7-steps-vs-tokens", "ELIT-MB", None, f"{steps} steps", None, {"digits_fd": fd},
                     gflops=steps / 10, scale="smoke", num=64)
    calls.clear()
    paths = write_report(load_suite("fig7-steps-vs-tokens"), out, "smoke", tmp_path / "fig7")
    assert {p.name for p in paths} >= {"table.md", "figure.svg"} and len(calls) == 1


def test_a_frontier_needs_a_declared_direction(tmp_path):
    """A frontier of a key without a direction is refused, not drawn as if lower were better."""
    out = tmp_path / "runs"
    quickstart_records(out)
    suite = load_suite("quickstart")
    suite.raw["report"] = {**suite.report, "y": "digits_kid_std", "ylabel": "spread"}
    with pytest.raises(UserError, match="'digits_kid_std' has no direction"):
        plot.draw(suite, records_frame(load_records(out)), tmp_path / "figure")


def test_logy_draws_a_symmetric_log_axis(tmp_path, monkeypatch):
    # catches: `logy` ignored (one method far off the others' range flattens every other curve)
    out = tmp_path / "runs"
    quickstart_records(out)
    suite = load_suite("quickstart")
    drawn = []
    monkeypatch.setattr(plot, "save_figure", lambda fig, stem: drawn.append(fig) or [])
    for logy, scale in ((False, "linear"), (True, "symlog")):
        suite.raw["report"] = {**suite.report, "kind": "plot", "logy": logy}
        plot.draw(suite, records_frame(load_records(out)), tmp_path / "figure")
        assert drawn[-1].axes[0].get_yscale() == scale


def test_a_paper_suite_without_published_cells_says_so(tmp_path):
    # catches: the cpu scale of a paper suite footnoted as if its cells stood beside published numbers
    out = tmp_path / "runs"
    for label in ("no guidance", "CFG"):
        write_record(out, "table4-t2i", "MM-DiT", None, label, None, {"t2i_adherence": 0.8}, scale="cpu",
                     model="MMDiT-S/4", data=("digits-t2i", 32), num=500)
    assert main(["table", "table4-t2i", "--out", str(out), "--scale", "cpu", "--dest", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "table.md").read_text()
    assert "No published counterpart" in text and "Published:" not in text
