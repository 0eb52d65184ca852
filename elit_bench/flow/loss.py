"""Rectified-flow training objective (paper Sec. 3.1, Eq. 1; docs/conventions.md#training).

    X_t = (1 - t) X_0 + t X_1,   X_0 ~ N(0, I) noise,  X_1 data,  target v = X_1 - X_0

The model predicts v from (X_t, t, y); the loss is the mean squared error,
optionally restricted by a mask (zero-padded inputs: no loss on the padding).
Baselines and ELIT must draw t from the same distribution: logit-normal
(mean 0, std 1) by default, uniform as the alternative, optionally time-shifted
toward the noise as at sampling (the paper's Qwen-Image setup: 2.22).

Fine-tuning from a teacher (paper Sec. 4.4) adds a distillation term: the mean
squared error between the student's velocity and the teacher's on the same
input (X_t, t, y), the teacher at its full compute and without gradient.
"""

from __future__ import annotations

import torch

from elit_bench.errors import choices_error
from elit_bench.flow.sampling import shift_time

TIMESTEP_KINDS = ("logit_normal", "uniform")


def sample_timesteps(n: int, kind: str = "logit_normal", mean: float = 0.0, std: float = 1.0,
                     generator: torch.Generator | None = None, device=None, shift: float = 1.0) -> torch.Tensor:
    """t (n,) in (0, 1): sigmoid(N(mean, std)) for "logit_normal", U(0, 1) for "uniform", then time-shifted as
    the sampling grid is (`flow.sampling.shift_time`; shift 1 leaves t as drawn, bit for bit)."""
    device = generator.device if generator is not None else device
    if kind == "logit_normal":
        t = torch.sigmoid(mean + std * torch.randn(n, generator=generator, device=device))
    elif kind == "uniform":
        t = torch.rand(n, generator=generator, device=device)
    else:
        raise choices_error("timestep distribution", kind, TIMESTEP_KINDS)
    return t if shift == 1 else shift_time(t, shift)


def interpolate(x1: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """X_t for data x1 (B, ...), noise like x1 and t (B,)."""
    t = t.view(-1, *(1,) * (x1.ndim - 1))
    return (1 - t) * noise + t * x1


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the elements where mask is 1 (mask broadcasts to pred, e.g. (1, 1, H, W))."""
    sq = (pred.float() - target.float()).square()
    if mask is None:
        return sq.mean()
    mask = mask.to(sq.dtype).expand_as(sq)
    return (sq * mask).sum() / mask.sum()


def rectified_flow_loss(model, x1: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                        mask: torch.Tensor | None = None, **forward_kwargs) -> torch.Tensor:
    """Scalar loss of `model(x_t, t, y, **forward_kwargs)` against the velocity x1 - noise.

    x1, noise: (B, C, H, W) or (B, C, T, H, W); t (B,); y (B,) labels;
    forward_kwargs: e.g. budget, patch_size, generator.
    """
    return distilled_flow_loss(model, x1, y, t, noise, mask, **forward_kwargs)[0]


def distillation_loss(pred: torch.Tensor, teacher, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between the student's velocity `pred` and the teacher's at (x_t, t, y).

    The teacher runs its plain forward (full compute: no budget, its own patchifier) without gradient; the
    labels are the student's, dropped ones included, so the teacher's unconditional velocity is distilled too.
    """
    with torch.no_grad():
        target = teacher(x_t, t, y)
    return masked_mse(pred, target, mask)


def distilled_flow_loss(model, x1: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                        mask: torch.Tensor | None = None, teacher=None,
                        **forward_kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rectified-flow loss, distillation loss) of one student forward; the second is None without a teacher.

    Shapes and forward_kwargs as `rectified_flow_loss`; the student's forward_kwargs (budget, patch size)
    do not reach the teacher (`distillation_loss`).
    """
    x_t = interpolate(x1, noise, t)
    pred = model(x_t, t, y, **forward_kwargs)
    distill = distillation_loss(pred, teacher, x_t, t, y, mask) if teacher is not None else None
    return masked_mse(pred, x1 - noise, mask), distill
