"""FLOPs: analytic counts per operation and measured counts through `torch.utils.flop_counter`.

Conventions (docs/conventions.md#flops): 1 MAC = 2 FLOPs; "TF" is TFLOPs of one
training iteration = forward FLOPs x 3 (forward + backward) x batch.
The analytic count is each model's `macs()` (the twin of its forward); the
measured count runs the forward under `FlopCounterMode`, with the SDPA CPU
kernel (which the counter does not know in torch 2.14) given its formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from elit_bench.errors import UserError

FLOPS_PER_MAC = 2
TRAIN_MULTIPLIER = 3  # forward + backward (2x forward)


def forward_flops(model, budget=None, input_shape=None, **kw) -> int:
    """Analytic forward FLOPs per sample."""
    return FLOPS_PER_MAC * sum(model.macs(input_shape=input_shape, budget=budget, **kw).values())


def budget_range(model, spec) -> list[int | None]:
    """Budgets drawn uniformly in multi-budget training, from "a:b" or (a, b); None = full only."""
    if spec is None:
        return [None]
    if isinstance(spec, str):
        try:
            lo, hi = (int(v) for v in spec.split(":"))
        except ValueError as exc:
            raise UserError(f"budget range {spec!r} must look like JMIN:JMAX, e.g. 1:16") from exc
    else:
        lo, hi = spec
    J = getattr(model, "max_budget", None)
    if J is None:
        raise UserError(f"{getattr(model, 'name', type(model).__name__)} has no latent interface: "
                        "budget ranges apply to ELIT models only")
    if not 1 <= lo <= hi <= J:
        raise UserError(f"budget range {lo}:{hi} must satisfy 1 <= JMIN <= JMAX <= J={J}")
    return list(range(lo, hi + 1))


def mean_forward_flops(model, budgets, input_shape=None, **kw) -> float:
    """Forward FLOPs per sample averaged over a uniform draw of `budgets`."""
    return sum(forward_flops(model, b, input_shape, **kw) for b in budgets) / len(budgets)


def train_tflops(forward_flops_per_sample: float, batch: int) -> float:
    """TFLOPs of one training iteration (the paper's TF column)."""
    return forward_flops_per_sample * TRAIN_MULTIPLIER * batch / 1e12


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def measure_forward_flops(model, budget=None, batch: int = 1, device=None, **kw) -> float:
    """Forward FLOPs per sample counted by `FlopCounterMode` on a real forward pass.

    Use device="meta" to count big models without memory or compute.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    shape = (batch, model.in_channels, *model.input_shape)
    x = torch.randn(shape, device=device)
    t = torch.rand(batch, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    # no torch.no_grad(): the counter's module tracker needs autograd to see parameter views
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(x, t, y, budget=budget, **kw)
    return counter.get_total_flops() / batch


# ---------------------------------------------------------------- MM-DiT (Qwen-Image) analytic model
@dataclass(frozen=True)
class MMDiTConfig:
    """Qwen-Image's MM-DiT: 60 double-stream blocks, width 3072, MLP x4, joint attention.

    ELIT on it (paper Sec. 4.4): Read after block `read_after`, Write at block
    `write_at`, image stream only; 16 groups over the image token grid.
    """

    depth: int = 60
    width: int = 3072
    mlp_ratio: int = 4
    image_tokens: int = 4096  # 1024 px: 128x128 latent, patch 2
    text_tokens: int = 300  # "about 300 on average" (Sec. 4.4)
    read_after: int = 8
    write_at: int = 52
    groups: int = 16


def mmdit_block_macs(cfg: MMDiTConfig, image_tokens: int) -> int:
    d, tokens = cfg.width, image_tokens + cfg.text_tokens
    per_token = (4 + 2 * cfg.mlp_ratio) * d * d  # qkv, out, MLP; each stream has its own weights
    modulation = 2 * 6 * d * d  # adaLN of both streams
    return tokens * per_token + 2 * tokens * tokens * d + modulation


def mmdit_forward_macs(cfg: MMDiTConfig, keep: float | None = None) -> int:
    """One forward; keep=None is the original model, else ELIT keeping that fraction of latents."""
    full = mmdit_block_macs(cfg, cfg.image_tokens)
    if keep is None:
        return cfg.depth * full
    d, N, G = cfg.width, cfg.image_tokens, cfg.groups
    K = max(G, round(N * keep / G) * G)
    J = K // G
    spatial = cfg.read_after + (cfg.depth - cfg.write_at)
    core = (cfg.write_at - cfg.read_after) * mmdit_block_macs(cfg, K)
    read = (2 * K + 2 * N) * d * d + 2 * J * N * d + 2 * K * d * d + 6 * d * d
    write = (2 * K + 2 * N) * d * d + 2 * J * N * d + 2 * N * d * d
    return spatial * full + core + read + write


def mmdit_sampling_ratio(cfg: MMDiTConfig, keep: float, guide_keep: float) -> float:
    """ELIT sampling FLOPs with CCFG (main pass at `keep`, guidance at `guide_keep`) over the original with CFG."""
    elit = mmdit_forward_macs(cfg, keep) + mmdit_forward_macs(cfg, guide_keep)
    return elit / (2 * mmdit_forward_macs(cfg))


def human(n: float) -> str:
    """675_123_456 -> '675.1M'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def relative_diff(ours: float, theirs: float) -> float:
    return 100.0 * (ours - theirs) / theirs if theirs else math.nan


# ---------------------------------------------------------------- the paper's compute tables
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
# Table 4: the guidance pass of CCFG keeps 1/16 of the latents; the paper does not print J_w,
# this is the value its four ratios imply (0.5% or closer at 50/25/12.5% tokens).
MMDIT_GUIDE_KEEP = 1 / 16


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
    import pandas as pd

    from elit_bench.models import create_model, param_count

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
    import pandas as pd

    from elit_bench.flow.guidance import guidance_flops_ratio
    from elit_bench.models import create_model

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
    from elit_bench.flow.guidance import guidance_flops_ratio
    from elit_bench.models import create_model

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
    import pandas as pd

    cfg = MMDiTConfig()
    return [{"tokens_pct": rec["tokens_pct"], "ratio": mmdit_sampling_ratio(cfg, rec["tokens_pct"] / 100, MMDIT_GUIDE_KEEP),
             "ratio_paper": rec["flops_ratio"],
             "diff_pct": relative_diff(mmdit_sampling_ratio(cfg, rec["tokens_pct"] / 100, MMDIT_GUIDE_KEEP),
                                       rec["flops_ratio"])}
            for rec in pd.read_csv(table4_csv).to_dict("records")]
