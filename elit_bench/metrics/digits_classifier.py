"""A small CNN on scikit-learn's 8x8 digits: the quickstart's feature space.

The embedded digits set (``sklearn.datasets.load_digits``: 1797 images of 8x8
pixels, values 0..16, ten classes; its fixed split and rendering are in
`elit_bench.data.digits`) is what the quickstart trains on, so FID-style
numbers need a network that has seen digits. This module defines that network,
its input protocol and its training; the trained weights ship in
``elit_bench/assets/digits_classifier.pt``. Retrain them with::

    python -m elit_bench.metrics.digits_classifier --out elit_bench/assets/digits_classifier.pt

Input protocol (any resolution, so it reads generated samples at 8, 16 or
32 px alike): uint8 images, grayscale as the mean over colour channels, scaled
to [0, 1], resized to ``INPUT_SIZE`` with antialiased bilinear interpolation.
Training draws each batch at a random resolution and upsampling mode, with
small random shifts, scales, rotations and pixel noise, then quantises to uint8
before the protocol above, so the network sees what it will see on samples.

Feature space: the penultimate layer's pre-activations (the ReLU sits in the
head). Read after a ReLU, units that never fire on real digits are constant
zero, which left the covariance of real digits rank-deficient (39 of 64) and
made every Frechet distance warn; before the ReLU every unit varies on real
digits and their covariance has full rank (a test checks it). The weights
are fixed: retraining changes every digits number, so it is done only with
this module's `main` (seeded) and the new weights' sha256 then keys caches.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elit_bench.data.digits import NUM_CLASSES, SPLIT_SEED, load_digits_split, render_uint8
from elit_bench.errors import UserError

INPUT_SIZE = 16  # side the protocol resizes every input to
FEATURE_DIM = 64  # penultimate width: its pre-activations are the feature space for Frechet distances
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "digits_classifier.pt"


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """Apply the input protocol.

    images: uint8, (N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3}
    (channels-last is recognised by a trailing dimension of 1 or 3 on a 4-d
    tensor whose dimension 1 is not). Returns float32 (N, 1, INPUT_SIZE, INPUT_SIZE) in [0, 1].
    """
    if images.dtype != torch.uint8:
        raise UserError(f"digits classifier expects uint8 images (0..255), got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UserError(f"digits classifier expects images (N,H,W), (N,C,H,W) or (N,H,W,C), got shape {tuple(images.shape)}")
    x = images.float().mean(dim=1, keepdim=True) / 255.0
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    return x


class DigitsClassifier(nn.Module):
    """Three conv layers and two linear layers, about 90k parameters.

    forward: (N, 1, INPUT_SIZE, INPUT_SIZE) float -> (features (N, FEATURE_DIM), logits (N, NUM_CLASSES));
    features are the penultimate pre-activations.
    """

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (INPUT_SIZE // 4) ** 2, FEATURE_DIM),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIM, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


def _augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random resolution, upsampling, affine jitter and noise; returns uint8 (N, S, S)."""
    size = int(torch.tensor([8, 16, 24, 32])[torch.randint(4, (1,), generator=gen)])
    mode = ("nearest", "bilinear", "bicubic")[int(torch.randint(3, (1,), generator=gen))]
    x = render_uint8(images, size, mode).float()[:, None] / 255.0
    n = len(x)
    scale = 1 + (torch.rand(n, generator=gen) - 0.5) * 0.2  # +-10 %
    angle = (torch.rand(n, generator=gen) - 0.5) * (20 * np.pi / 180)  # +-10 degrees
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * 0.25  # +-1/8 of the image
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    x = x + torch.randn(x.shape, generator=gen) * 0.05 * torch.rand(n, 1, 1, 1, generator=gen)
    return (x[:, 0] * 255).round().clamp(0, 255).to(torch.uint8)


def train(epochs: int = 60, batch_size: int = 64, seed: int = 0) -> tuple[DigitsClassifier, dict]:
    """Train on the fixed train split; returns the model and a metadata dict."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    split = load_digits_split()
    train_x, train_y = torch.from_numpy(split["train_x"]), torch.from_numpy(split["train_y"])
    model = DigitsClassifier()
    steps = epochs * (len(train_x) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_x), generator=gen)
        for i in range(len(train_x) // batch_size):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = to_model_input(_augment(train_x[idx], gen))
            loss = F.cross_entropy(model(x)[1], train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    meta = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "split_seed": SPLIT_SEED}
    meta.update({f"heldout_accuracy_{s}px": heldout_accuracy(model, s) for s in (8, 16, 32)})
    return model, meta


@torch.no_grad()
def predict(model: DigitsClassifier, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Class predictions (N,) for uint8 images in any layout `to_model_input` takes."""
    return torch.cat([model(to_model_input(b))[1].argmax(1) for b in images.split(batch_size)])


def heldout_accuracy(model: DigitsClassifier, size: int, mode: str = "bilinear") -> float:
    """Accuracy on the held-out digits rendered as uint8 images of side `size`."""
    split = load_digits_split()
    images = render_uint8(torch.from_numpy(split["heldout_x"]), size, mode)
    return float((predict(model, images).numpy() == split["heldout_y"]).mean())


def load_digits_classifier(path: str | Path | None = None) -> DigitsClassifier:
    """Load weights written by `main` (default: the shipped asset)."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise UserError(
            f"digits classifier weights {path} not found; retrain them with "
            f"`python -m elit_bench.metrics.digits_classifier --out {path}`"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = DigitsClassifier()
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:  # unpickling and key/shape errors come in many types
        raise UserError(f"{path} is not a digits classifier checkpoint ({type(exc).__name__}: {exc})") from exc
    return model.eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the digits feature network and write its weights.")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="output .pt file")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model, meta = train(epochs=args.epochs, seed=args.seed)
    meta["train_seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": meta}, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB): {meta}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
