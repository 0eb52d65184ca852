"""Runs that measure without training: analytic FLOPs sweeps, the MM-DiT FLOPs model, forward latency.

A suite run `compute: {kind: ..., ...}` produces one record whose metrics are
the measured quantities; tables and figures treat it like any other record.
Each kind is a settings class (its keys, types and defaults) with the
measurement as its `measure()`; `compute_settings` validates a run's
`compute:` when the suite expands.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from elit_bench.errors import choices_error
from elit_bench.flops import MMDIT_GUIDE_KEEP
from elit_bench.models.precision import DEFAULT_SAMPLE_PRECISION
from elit_bench.schema import PositiveInt, check


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=(), allow_inf_nan=False)


class ForwardFlops(_Settings):
    """Analytic forward FLOPs of a model at one resolution and budget (Fig. 10)."""

    kind: Literal["forward_flops"]
    model: str
    resolution: PositiveInt = 256
    budget: PositiveInt | None = None  # latents per group; None: the full budget
    model_kwargs: dict[str, Any] = {}

    def measure(self) -> dict:
        from elit_bench.flops import forward_flops
        from elit_bench.models import create_model

        with torch.device("meta"):
            model = create_model(self.model, resolution=self.resolution, **self.model_kwargs)
        flops = forward_flops(model, self.budget)
        out = {"forward_gflops": flops / 1e9, "tokens_per_group": self.budget or model.max_budget}
        if model.max_budget:
            out["relative_to_full_budget"] = flops / forward_flops(model)
        return out


class MMDiTRatio(_Settings):
    """Table 4: ELIT-Qwen-Image sampling FLOPs with CCFG over the original with CFG."""

    kind: Literal["mmdit_ratio"]
    tokens_pct: float  # share of the image latents ELIT keeps, in percent
    guide_keep: float = MMDIT_GUIDE_KEEP  # share the CCFG guidance pass keeps

    def measure(self) -> dict:
        from elit_bench.flops import MMDiTConfig, mmdit_sampling_ratio

        return {"flops_ratio": mmdit_sampling_ratio(MMDiTConfig(), self.tokens_pct / 100, self.guide_keep)}


class Latency(_Settings):
    """Fig. 9: forward wall time of a randomly initialised model on this machine, beside its FLOPs."""

    kind: Literal["latency"]
    model: str
    resolution: PositiveInt = 256
    budget: PositiveInt | None = None
    batch: PositiveInt = 8
    warmup: PositiveInt = 2
    repeats: PositiveInt = 5
    model_kwargs: dict[str, Any] = {}
    precision: str = DEFAULT_SAMPLE_PRECISION  # timed at the sampler's precision, recorded beside the time

    def measure(self) -> dict:
        from elit_bench.bench import latency_sweep

        row, = latency_sweep(self.model, self.resolution, [self.budget], batch=self.batch, warmup=self.warmup,
                             repeats=self.repeats, model_kwargs=self.model_kwargs, progress=False,
                             precision=self.precision)
        return {k: row[k] for k in ("forward_ms", "forward_gflops", "device", "batch", "precision")}


KINDS = {cls.model_fields["kind"].annotation.__args__[0]: cls for cls in (ForwardFlops, MMDiTRatio, Latency)}
ComputeSettings = ForwardFlops | MMDiTRatio | Latency


def compute_settings(spec, where: str = "") -> ComputeSettings:
    """A run's `compute:` mapping -> the settings of its kind; UserError naming the key otherwise."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in KINDS:
        raise choices_error(f"{where}compute kind", kind, KINDS)
    return check("compute", KINDS[kind], spec, where)
