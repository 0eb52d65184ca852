"""The paper's compute tables, ours beside the published figures (`elit-bench flops --paper`).

Each row reads a published file of `baselines/` (training TFLOPs and parameters, Table 4's MM-DiT
ratios, the released code's FLOPs file) and recounts it with `elit_bench.flops` on meta-device
models, so no weights or memory are needed. Tolerances are the rows' own (`tolerance_pct`).
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from elit_bench.flops import (
    MMDIT_GUIDE_KEEP,
    MMDiTConfig,
    budget_range,
    forward_flops,
    mean_forward_flops,
    mmdit_sampling_ratio,
    train_tflops,
)
from elit_bench.flow.guidance import guidance_flops_ratio
from elit_bench.models import create_model, param_count


def relative_diff(ours: float, theirs: float) -> float:
    return 100.0 * (ours - theirs) / theirs if theirs else math.nan


# Our configuration for each row of baselines/compute.csv: (model, overrides, budget range per resolution).
MB = {256: "1:16", 512: "4:64"}  # multi-budget ranges (App. B)
PAPER_CONFIGS = {
    "dit_xl": ("DiT-XL/2", {}, None),
    "elit_dit_xl": ("ELIT-DiT-XL/2", {}, None),
    "elit_dit_xl_mb": ("ELIT-DiT-XL/2", {}, MB),
    "uvit_xl": ("UViT-XL/2", {}, None),
    "elit_uvit_xl": ("ELIT-UViT-XL/2", {}, None),
    "elit_uvit_xl_mb": ("ELIT-UViT-XL/2", {}, MB),
    "hdit_xl": ("HDiT-XL/2", {}, None),
    "elit_hdit_xl": ("ELIT-HDiT-XL/2", {}, None),
    "elit_hdit_xl_mb": ("ELIT-HDiT-XL/2", {}, MB),
    "dit_xl_2x4": ("DiT-XL/2x4", {}, None),
    "elit_dit_xl_25": ("ELIT-DiT-XL/2", {"latents_per_group": 16}, None),
    "hdit_small": ("HDiT-XL/2", {"depth": 14}, None),
    "sit_xl": ("SiT-XL/2", {}, None),
    "elit_sit_xl": ("ELIT-SiT-XL/2", {}, None),
    # the README's 127 / 536 TF is the paper's compute path (Read and Write on kept latents, 4-20-4),
    # not its own code's (Read on all latents, 8-16-4: 139.2 / 605.2 TF)
    "elit_sit_xl_mb": ("ELIT-DiT-XL/2", {}, MB),
}


def parse_count(text: str) -> tuple[float, int]:
    """'675M' -> (675e6, 0 decimals), '1.4B' -> (1.4e9, 1 decimal)."""
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}[text[-1]]
    digits = text[:-1]
    return float(digits) * scale, len(digits.partition(".")[2])


def count_rounds_to(ours: float, published: str) -> bool:
    """True when `ours` printed like the published figure ('1.4B') reads the same."""
    value, decimals = parse_count(published)
    scale = value / float(published[:-1])
    return round(ours / scale, decimals) == float(published[:-1])


def paper_compute_rows(baselines_csv) -> list[dict]:
    """Every row of the paper's compute tables, ours beside theirs (TF at batch 256 or 384)."""
    rows = []
    for rec in pd.read_csv(baselines_csv).to_dict("records"):
        name, overrides, ranges = PAPER_CONFIGS[rec["key"]]
        for res in (256, 512):
            published = rec[f"tf_{res}"]
            if pd.isna(published):
                continue
            with torch.device("meta"):
                model = create_model(name, resolution=res, **overrides)
            budgets = budget_range(model, ranges[res]) if ranges else [None]
            tf = train_tflops(mean_forward_flops(model, budgets), int(rec["batch"]))
            params = param_count(model)
            paper_params, _ = parse_count(rec["params"])
            rows.append({
                "key": rec["key"], "row": rec["model"], "resolution": res, "batch": int(rec["batch"]),
                "budgets": ranges[res] if ranges else "full", "params": params, "params_paper": rec["params"],
                "params_diff_pct": relative_diff(params, paper_params), "tf": tf, "tf_paper": float(published),
                "tf_diff_pct": relative_diff(tf, float(published)), "tolerance_pct": float(rec["tolerance_pct"]),
                "params_rounds_to_paper": count_rounds_to(params, rec["params"]), "source": rec["source"],
            })
    return rows


def official_code_rows(csv_path) -> list[dict]:
    """The released code's own FLOPs file (one CFG pair of ELIT-SiT-XL/2), ours beside it.

    Budgets there are fractions of J; its CCFG row guides at `guide_budget` of J.
    """
    rows, models = [], {}
    for rec in pd.read_csv(csv_path).to_dict("records"):
        key = (rec["model"], int(rec["resolution"]))
        if key not in models:
            with torch.device("meta"):
                models[key] = create_model(rec["model"], resolution=key[1])
        model = models[key]
        J = model.max_budget
        budget = round(rec["budget"] * J)
        pair = 2 * forward_flops(model, budget)
        guide = None
        if rec["mode"] == "CCFG":
            guide = round(rec["guide_budget"] * J)
            pair *= guidance_flops_ratio(model, "ccfg", budget, guide)
        rows.append({"model": rec["model"], "resolution": key[1], "mode": rec["mode"], "budget": budget,
                     "guide_budget": guide, "gflops": pair / 1e9, "gflops_official": rec["gflops_per_cfg_pair"],
                     "diff_pct": relative_diff(pair / 1e9, rec["gflops_per_cfg_pair"])})
    return rows


# The paper's Fig. 5 / Sec. 1: CCFG costs "about 33%" less than CFG; J_w is not printed
CCFG_SAVING_PAPER = 0.33


def ccfg_rows() -> list[dict]:
    """CCFG vs CFG sampling FLOPs at J_w = J/16, J/8, J/4 (full main budget): which J_w the paper's saving implies."""
    rows = []
    for name, res in (("ELIT-DiT-XL/2", 256), ("ELIT-DiT-XL/2", 512), ("ELIT-SiT-XL/2", 256)):
        with torch.device("meta"):
            model = create_model(name, resolution=res)
        J = model.max_budget
        for div in (16, 8, 4):
            ratio = guidance_flops_ratio(model, "ccfg", J, J // div)
            rows.append({"model": name, "resolution": res, "J": J, "guide_budget": f"J/{div} = {J // div}",
                         "ccfg_vs_cfg": ratio, "saving_pct": 100 * (1 - ratio),
                         "paper_saving_pct": 100 * CCFG_SAVING_PAPER})
    return rows


def mmdit_rows(table4_csv) -> list[dict]:
    """Table 4: ELIT-Qwen-Image sampling FLOPs (CCFG) over Qwen-Image's (CFG), analytic MM-DiT model."""
    rows = []
    for rec in pd.read_csv(table4_csv).to_dict("records"):
        ratio = mmdit_sampling_ratio(MMDiTConfig(), rec["tokens_pct"] / 100, MMDIT_GUIDE_KEEP)
        rows.append({"tokens_pct": rec["tokens_pct"], "ratio": ratio, "ratio_paper": rec["flops_ratio"],
                     "diff_pct": relative_diff(ratio, rec["flops_ratio"])})
    return rows
