"""FLOPs: analytic counts per operation and measured counts through `torch.utils.flop_counter`.

Conventions (docs/conventions.md#flops): 1 MAC = 2 FLOPs; "TF" is TFLOPs of one
training iteration = forward FLOPs x 3 (forward + backward) x batch.
The analytic count is each model's `macs()` (the twin of its forward); the
measured count runs the forward under `FlopCounterMode`, with the SDPA CPU
kernel (which the counter does not know in torch 2.14) given its formula.

A leaf module: it counts what it is given and imports nothing of the harness but its
errors. The paper's compute tables, ours beside the published figures, are built from
these counts in `elit_bench.results.paper_compute`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from elit_bench.errors import UserError

FLOPS_PER_MAC = 2
TRAIN_MULTIPLIER = 3  # forward + backward (2x forward)


def forward_flops(model, budget=None, input_shape=None, **kw) -> int:
    """Analytic forward FLOPs per sample."""
    return FLOPS_PER_MAC * sum(model.macs(input_shape=input_shape, budget=budget, **kw).values())


def train_forward_flops(model, budget=None, input_shape=None, **kw) -> int:
    """Analytic FLOPs per sample of a training forward pass: the model's `train_macs` where it declares one
    (its training pass differs from inference, e.g. TREAD's routed tokens), else its `macs`."""
    macs = getattr(model, "train_macs", model.macs)
    return FLOPS_PER_MAC * sum(macs(input_shape=input_shape, budget=budget, **kw).values())


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

    The pass is the one of the model's mode: its analytic twin is `forward_flops` in eval mode and
    `train_forward_flops` in training mode (they differ where a model trains on a cheaper pass, e.g. TREAD).
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


# Table 4: the guidance pass of CCFG keeps 1/16 of the latents; the paper does not print J_w,
# this is the value its four ratios imply (0.5% or closer at 50/25/12.5% tokens).
MMDIT_GUIDE_KEEP = 1 / 16


def human(n: float) -> str:
    """675_123_456 -> '675.1M'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"
