"""FLOPs: the paper's compute rows are reproduced, and the analytic count equals a measured one."""

import csv
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from elit_bench.baselines import baseline_file
from elit_bench.cli import main
from elit_bench.flops import (
    MMDiTConfig,
    budget_range,
    forward_flops,
    mean_forward_flops,
    measure_forward_flops,
    mmdit_forward_macs,
    train_forward_flops,
    train_tflops,
)
from elit_bench.models import create_model, list_models
from elit_bench.results.paper_compute import mmdit_rows, paper_compute_rows
from helpers import tiny


def compute_csv_rows():
    """(key, resolution) of every published TF figure in baselines/compute.csv (read without computing)."""
    with open(baseline_file("compute.csv"), newline="") as f:
        return [(rec["key"], res) for rec in csv.DictReader(f) for res in (256, 512) if rec[f"tf_{res}"].strip()]


# Rows where our count falls outside the row's tolerance, with the arithmetic (strict: they must keep failing).
OUTSIDE_TOLERANCE = {
    ("elit_hdit_xl_mb", 256): (
        "ELIT-HDiT-XL/2 multi-budget at 256 px: ours 199.6 TF vs the paper's 191 (+4.5%, tolerance 3%). Our latent "
        "merge aggregates 4 consecutive latents of a group, so a group keeps ceil(J~/4) latents in the 2x-wide core "
        "(blocks 8..19) and J~ = 1..3 still keep one: mean over J~ = 1..16 is 2.5 latents per group, not J~/4 = 2.125. "
        "Counting J~/4 (as if merges crossed group boundaries) gives 188.7 TF (-1.2%) here and 800.1 TF (+1.2%) at "
        "512 px, but no forward that merges only within a group (paper Sec. 4.1: 'aggregating tokens within the "
        "same group') can run fractional latents; at 512 px (J~ >= 4) ceil gives 811.0 TF, +2.5%, inside 3%."),
}


@pytest.fixture(scope="module")
def paper_rows():
    return {(row["key"], row["resolution"]): row for row in paper_compute_rows(baseline_file("compute.csv"))}


def compute_row_params():
    for key, res in compute_csv_rows():
        reason = OUTSIDE_TOLERANCE.get((key, res))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(key, res, marks=marks, id=f"{key}-{res}")


@pytest.mark.parametrize("key, resolution", list(compute_row_params()))
def test_every_published_compute_row_within_its_tolerance(paper_rows, key, resolution):
    # catches: any change to a model's blocks, widths or budgets that moves TF or params off the paper's row
    row = paper_rows[(key, resolution)]
    assert abs(row["tf_diff_pct"]) <= row["tolerance_pct"], row
    if row["params_paper"].endswith("B"):  # "1.4B": the count must round to the printed figure
        assert row["params_rounds_to_paper"], row
    else:
        assert abs(row["params_diff_pct"]) <= row["tolerance_pct"], row


def test_every_compute_row_is_checked(paper_rows):
    # catches: a row of compute.csv that paper_compute_rows skips (then no parametrized case would see it)
    assert set(paper_rows) == set(compute_csv_rows())


def test_dit_xl_matches_dit_paper_gmacs():
    with torch.device("meta"):
        model = create_model("DiT-XL/2", resolution=256)
    # DiT paper: 118.6 GMACs at 256 px; TF = 118.6e9 x 2 x 3 x 256 = 182
    assert forward_flops(model) / 2 / 1e9 == pytest.approx(118.6, rel=0.005)
    assert train_tflops(forward_flops(model), 256) == pytest.approx(182, rel=0.01)


# ---------------------------------------------------------------- Table 4 (MM-DiT)
class JointBlock(torch.nn.Module):
    """An MM-DiT (Qwen-Image) double-stream block: own weights per stream, one joint attention, adaLN per stream."""

    def __init__(self, d, mlp_ratio):
        super().__init__()
        self.streams = torch.nn.ModuleList(torch.nn.ModuleDict({
            "mod": torch.nn.Linear(d, 6 * d), "qkv": torch.nn.Linear(d, 3 * d), "out": torch.nn.Linear(d, d),
            "mlp": torch.nn.Sequential(torch.nn.Linear(d, mlp_ratio * d), torch.nn.GELU(), torch.nn.Linear(mlp_ratio * d, d)),
        }) for _ in range(2))

    def forward(self, img, txt, c):
        split = img.shape[1]
        mods = [s["mod"](c) for s in self.streams]  # per sample
        q, k, v = torch.cat([s["qkv"](x) for s, x in zip(self.streams, (img, txt))], dim=1).chunk(3, dim=-1)
        h = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v  # joint attention over image + text tokens
        outs = [x + s["out"](a) for s, x, a in zip(self.streams, (img, txt), (h[:, :split], h[:, split:]))]
        return tuple(x + s["mlp"](x) + 0 * m.sum() for s, x, m in zip(self.streams, outs, mods))


class GroupedCrossAttention(torch.nn.Module):
    """Queries attend to the keys of their own group only (G groups, group-major tokens)."""

    def __init__(self, d, groups):
        super().__init__()
        self.q, self.kv, self.out, self.groups = torch.nn.Linear(d, d), torch.nn.Linear(d, 2 * d), torch.nn.Linear(d, d), groups

    def forward(self, target, source):
        G = self.groups
        q = self.q(target).unflatten(1, (G, -1))
        k, v = self.kv(source).unflatten(1, (G, -1)).chunk(2, dim=-1)
        return self.out((torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v).flatten(1, 2))


class ElitMMDiT(torch.nn.Module):
    """Qwen-Image-shaped MM-DiT with ELIT on the image stream (paper Sec. 4.4: Read after block 8, Write at 52).

    Read: CA(latents <- spatial) + MLP without expansion (d -> d -> d) + adaLN (6d per sample); Write: CA(spatial
    <- latents) + MLP on spatial tokens; the latent core runs the same joint blocks on the kept latents.
    """

    def __init__(self, cfg):
        super().__init__()
        d = cfg.width
        self.cfg = cfg
        self.blocks = torch.nn.ModuleList(JointBlock(d, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.read, self.write = GroupedCrossAttention(d, cfg.groups), GroupedCrossAttention(d, cfg.groups)
        self.read_mlp = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.GELU(), torch.nn.Linear(d, d))
        self.read_mod = torch.nn.Linear(d, 6 * d)
        self.write_mlp = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.GELU(), torch.nn.Linear(d, d))

    def forward(self, img, txt, c, kept=None):
        cfg = self.cfg
        for i, block in enumerate(self.blocks):
            if kept is not None and i == cfg.read_after:
                spatial = img
                lat = torch.zeros(img.shape[0], kept, img.shape[-1]) + 0 * self.read_mod(c).sum()
                lat = lat + self.read(lat, spatial)
                img = lat + self.read_mlp(lat)
            if kept is not None and i == cfg.write_at:
                s = spatial + self.write(spatial, img)
                img = s + self.write_mlp(s)
            img, txt = block(img, txt, c)
        return img


def measured_macs(model, cfg, kept=None):
    img, txt, c = torch.randn(1, cfg.image_tokens, cfg.width), torch.randn(1, cfg.text_tokens, cfg.width), torch.randn(1, cfg.width)
    with FlopCounterMode(display=False) as counter:
        model(img, txt, c, kept)
    return counter.get_total_flops() // 2


def test_mmdit_analytic_model_equals_a_measured_mm_dit():
    # catches: a wrong per-block count (shared stream weights, one adaLN, N d^2 attention), a wrong block split
    # (spatial vs core blocks), or Read/Write terms that differ from what the layers compute
    cfg = MMDiTConfig(width=32, image_tokens=256, text_tokens=12, groups=16)  # Table 4's 60-block layout, small width
    model = ElitMMDiT(cfg)
    assert measured_macs(model, cfg) == mmdit_forward_macs(cfg)
    for keep in (1.0, 0.5, 0.25, 0.125):  # Table 4's token fractions
        kept = int(cfg.image_tokens * keep)
        assert measured_macs(model, cfg, kept) == mmdit_forward_macs(cfg, keep), keep


def test_mmdit_table4_ratios():
    """Table 4 (sampling FLOPs with CCFG over the original with CFG) at 100/50/25/12.5% tokens.

    The paper does not print CCFG's guide budget: MMDIT_GUIDE_KEEP = 1/16 was fitted to these same four ratios, so
    the absolute ratios only show that one guide keep fits all four. What the fit cannot absorb: the differences
    between consecutive rows, (F(a) - F(b)) / 2 F_orig, do not depend on the guide pass at all.
    """
    # catches: a token count (image, text, K) or a core/spatial split that changes how FLOPs scale with the kept tokens
    rows = mmdit_rows(baseline_file("table4_mmdit_flops.csv"))
    assert [r["tokens_pct"] for r in rows] == [100, 50, 25, 12.5]
    for row in rows:  # fitted: consistency of one guide keep with all four rows, within 1%
        assert abs(row["diff_pct"]) < 1.0, row
    for a, b in zip(rows, rows[1:]):  # not fitted: within 3% (docs/conventions.md#flops: the tolerance for reduced-token rows)
        ours, paper = a["ratio"] - b["ratio"], a["ratio_paper"] - b["ratio_paper"]
        assert ours == pytest.approx(paper, rel=0.03), (a["tokens_pct"], b["tokens_pct"], ours, paper)


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
    for budget in budgets:  # a new model is in training mode: its training pass (TREAD's is routed)
        analytic = train_forward_flops(model, budget)
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
    # catches: the CLI printing another guide budget than the paper's saving implies, or a ratio of other passes
    assert main(["flops", "ELIT-DiT-XL/2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    with torch.device("meta"):
        model = create_model("ELIT-DiT-XL/2", resolution=256)
    # J_w = J/16 = 1: the guide budget whose saving is the paper's "about 33%" (tests/test_guidance_modes.py)
    expected = (forward_flops(model, 16) + forward_flops(model, 1)) / (2 * forward_flops(model, 16))
    assert out["guide_budget"] == 1 and out["ccfg_vs_cfg"] == pytest.approx(expected)


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


@pytest.mark.parametrize("name", ["TREAD-DiT-S/2", "DyDiT-S/2"])
def test_flops_command_measures_the_pass_it_prints(name):
    # catches: `elit-bench flops --measure` counting TREAD's routed training pass beside its inference forward
    from elit_bench.models.cli import model_flops

    out = model_flops(name, 64, measure=True)
    assert out["measured_forward_gflops"] == pytest.approx(out["forward_gflops"], rel=1e-12)
