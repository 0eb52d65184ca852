"""Numerical precision of sampling (and of `bench latency`, which times the sampler's forward).

    fp32  fp32 weights and activations, full-precision fp32 matmuls
    tf32  the same with TF32 matmuls on CUDA (Ampere and later); on CPU the same as fp32
    bf16  bf16 autocast: matmuls and attention in bf16, the residual stream in fp32

The default, tf32, is what the released ELIT generation script runs: an fp32
model with TF32 matmuls allowed and no autocast (docs/precision-and-compile.md).
"""

from __future__ import annotations

import contextlib

import torch

from elit_bench.errors import choices_error

SAMPLE_PRECISIONS = ("fp32", "tf32", "bf16")
DEFAULT_SAMPLE_PRECISION = "tf32"


@contextlib.contextmanager
def sample_precision(precision: str, device):
    """Run the enclosed model calls at `precision` on `device`; the global matmul setting is restored after."""
    if precision not in SAMPLE_PRECISIONS:
        raise choices_error("sampling precision", precision, SAMPLE_PRECISIONS)
    device = torch.device(device)
    before = torch.get_float32_matmul_precision()
    if device.type == "cuda":  # on CPU, "high" could let oneDNN round fp32 matmuls: tf32 stays fp32 there
        torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        torch.set_float32_matmul_precision(before)
