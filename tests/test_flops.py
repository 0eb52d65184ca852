"""FLOPs: the paper's compute rows are reproduced, and the analytic count equals a measured one."""

import json

import pytest
import torch

from elit_bench.baselines import baseline_file
from elit_bench.cli import main
from elit_bench.flops import (
    budget_range,
    forward_flops,
    mean_forward_flops,
    measure_forward_flops,
    mmdit_rows,
    paper_compute_rows,
    train_tflops,
)
from elit_bench.models import create_model, list_models
from helpers import tiny

REFERENCE_ROWS = {"dit_xl", "elit_dit_xl", "elit_dit_xl_mb", "uvit_xl", "elit_uvit_xl", "hdit_xl", "elit_hdit_xl",
                  "dit_xl_2x4", "elit_dit_xl_25", "hdit_small", "sit_xl", "elit_sit_xl", "elit_sit_xl_mb"}


@pytest.fixture(scope="module")
def paper_rows():
    return paper_compute_rows(baseline_file("compute.csv"))


def test_reference_rows_reproduced_within_tolerance(paper_rows):
    checked = set()
    for row in paper_rows:
        if row["key"] not in REFERENCE_ROWS:
            continue
        checked.add(row["key"])
        assert abs(row["tf_diff_pct"]) <= row["tolerance_pct"], row
        if row["params_paper"].endswith("B"):  # "1.4B": the count must round to the printed figure
            assert row["params_rounds_to_paper"], row
        else:
            assert abs(row["params_diff_pct"]) <= row["tolerance_pct"], row
    assert checked == REFERENCE_ROWS


def test_dit_xl_matches_dit_paper_gmacs():
    with torch.device("meta"):
        model = create_model("DiT-XL/2", resolution=256)
    # DiT paper: 118.6 GMACs at 256 px; TF = 118.6e9 x 2 x 3 x 256 = 182
    assert forward_flops(model) / 2 / 1e9 == pytest.approx(118.6, rel=0.005)
    assert train_tflops(forward_flops(model), 256) == pytest.approx(182, rel=0.01)


def test_mmdit_table4_ratios_close(paper_rows):
    for row in mmdit_rows(baseline_file("table4_mmdit_flops.csv")):
        assert abs(row["diff_pct"]) < 1.0, row


def test_budget_range_is_a_uniform_mean():
    with torch.device("meta"):
        model = create_model("ELIT-DiT-B/2", resolution=256)
    budgets = budget_range(model, "1:16")
    manual = sum(forward_flops(model, b) for b in range(1, 17)) / 16
    assert mean_forward_flops(model, budgets) == pytest.approx(manual)
    assert forward_flops(model, 1) < forward_flops(model, 8) < forward_flops(model)


@pytest.mark.parametrize("name", list_models())
def test_analytic_equals_measured_for_every_model(name):
    with torch.device("meta"):
        model = create_model(name, resolution=256)
    budgets = [None, max(1, model.max_budget // 4)] if model.max_budget else [None]
    for budget in budgets:
        analytic = forward_flops(model, budget)
        measured = measure_forward_flops(model, budget, device="meta")
        assert measured == pytest.approx(analytic, rel=0.02), (name, budget)


@pytest.mark.parametrize("name", ["ELIT-DiT-S/2", "ELIT-HDiT-S/2", "UViT-S/2"])
def test_measured_on_cpu_counts_attention(name):
    """On CPU, SDPA runs a kernel the counter does not know; our mapping must count it."""
    model = tiny(name, **({"group_size": 4} if name.startswith("ELIT") else {}))
    for budget in ([None, 3] if model.max_budget else [None]):
        assert measure_forward_flops(model, budget, batch=2) == pytest.approx(forward_flops(model, budget), rel=1e-9)


def test_flops_cli_json(capsys):
    assert main(["flops", "ELIT-DiT-XL/2", "--resolution", "256", "--budget-range", "1:16", "--batch", "384",
                 "--measure", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"params", "forward_gflops", "train_tflops", "measured_forward_gflops"} <= set(out)
    assert out["train_tflops"] == pytest.approx(188.1, abs=0.2)
    assert out["measured_forward_gflops"] == pytest.approx(out["forward_gflops"], rel=1e-9)


def test_flops_cli_prints_ccfg_ratio(capsys):
    assert main(["flops", "ELIT-DiT-XL/2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    with torch.device("meta"):
        model = create_model("ELIT-DiT-XL/2", resolution=256)
    expected = (forward_flops(model, 16) + forward_flops(model, 4)) / (2 * forward_flops(model, 16))
    assert out["guide_budget"] == 4 and out["ccfg_vs_cfg"] == pytest.approx(expected)


def test_flops_cli_paper_prints_every_row(capsys):
    assert main(["flops", "--paper"]) == 0
    out = capsys.readouterr().out
    for label in ("DiT-XL/2", "ELIT-DiT-XL/2 multi-budget", "HDiT smaller backbone", "DiT-XL patch 2x4", "Table 4"):
        assert label in out


@pytest.mark.parametrize("argv, match", [
    (["flops", "ELIT-DiT-XL/2", "--budget", "17"], "outside 1..16"),
    (["flops", "ELIT-DiT-XL/2", "--budget-range", "9:3"], "JMIN <= JMAX"),
    (["flops", "DiT-XL/2", "--budget-range", "1:4"], "no latent interface"),
    (["flops", "Nope-XL/2"], "unknown model"),
    (["flops"], "name a MODEL"),
    (["models", "zzz*"], "no model matches"),
])
def test_cli_bad_input_exits_2(argv, match, capsys):
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_models_cli_lists_registry(capsys):
    assert main(["models", "ELIT-*", "--json"]) == 0
    names = json.loads(capsys.readouterr().out)
    assert "ELIT-HDiT-XL/2" in names and all(n.startswith("ELIT-") for n in names)
