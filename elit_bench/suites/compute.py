"""Runs that measure without training: analytic FLOPs sweeps, the MM-DiT FLOPs model, forward latency.

A suite run `compute: {kind: ..., ...}` produces one record whose metrics are
the measured quantities; tables and figures treat it like any other record.
"""

from __future__ import annotations

import torch

from elit_bench.errors import UserError, choices_error


def forward_flops_point(spec: dict) -> dict:
    """Analytic forward FLOPs of a model at one resolution and budget (Fig. 10)."""
    from elit_bench.flops import forward_flops
    from elit_bench.models import create_model

    with torch.device("meta"):
        model = create_model(spec["model"], resolution=spec.get("resolution", 256), **spec.get("model_kwargs", {}))
    budget = spec.get("budget")
    flops = forward_flops(model, budget)
    out = {"forward_gflops": flops / 1e9, "tokens_per_group": budget or model.max_budget}
    if model.max_budget:
        out["relative_to_full_budget"] = flops / forward_flops(model)
    return out


def mmdit_point(spec: dict) -> dict:
    """Table 4: ELIT-Qwen-Image sampling FLOPs with CCFG over the original with CFG."""
    from elit_bench.flops import MMDIT_GUIDE_KEEP, MMDiTConfig, mmdit_sampling_ratio

    keep = float(spec["tokens_pct"]) / 100
    return {"flops_ratio": mmdit_sampling_ratio(MMDiTConfig(), keep, spec.get("guide_keep", MMDIT_GUIDE_KEEP))}


def latency_point(spec: dict) -> dict:
    """Fig. 9: forward wall time of a randomly initialised model on this machine, beside its FLOPs."""
    from elit_bench.bench import latency_sweep
    from elit_bench.models.precision import DEFAULT_SAMPLE_PRECISION

    # timed at the sampler's precision (`precision:` in the spec to choose another), recorded beside the time
    row, = latency_sweep(spec["model"], spec.get("resolution", 256), [spec.get("budget")], int(spec.get("batch", 8)),
                         int(spec.get("warmup", 2)), int(spec.get("repeats", 5)), spec.get("model_kwargs", {}),
                         progress=False, precision=spec.get("precision", DEFAULT_SAMPLE_PRECISION))
    return {k: row[k] for k in ("forward_ms", "forward_gflops", "device", "batch", "precision")}


KINDS = {"forward_flops": forward_flops_point, "mmdit_ratio": mmdit_point, "latency": latency_point}


def run_compute(spec: dict) -> dict:
    kind = spec.get("kind")
    if kind not in KINDS:
        raise choices_error("compute kind", kind, KINDS)
    try:
        return KINDS[kind]({k: v for k, v in spec.items() if k != "kind"})
    except KeyError as exc:
        raise UserError(f"compute run of kind {kind!r} is missing setting {exc}") from exc
