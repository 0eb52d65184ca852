"""The embedded data set: scikit-learn's handwritten digits, class-conditional, in pixel space.

`sklearn.datasets.load_digits` ships 1797 real 8x8 scans (values 0..16, ten
classes) inside the installed package, so nothing is downloaded. Training
uses the fixed train split of `elit_bench.metrics.digits_classifier` (its
held-out quarter stays unseen by both the generator and the feature
network), rendered exactly as that module renders real digits: bilinear
upsampling to the chosen resolution, quantised to uint8. Model space is
1 channel in [-1, 1]: x = uint8 / 127.5 - 1.
"""

from __future__ import annotations

import torch

from elit_bench.data.base import InMemoryDataset
from elit_bench.errors import UserError
from elit_bench.metrics.digits_classifier import NUM_CLASSES, load_digits_split, render_uint8

MIN_RESOLUTION, MAX_RESOLUTION = 4, 256
DEFAULT_RESOLUTION = 16


def check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise UserError(f"digits resolution must be an integer number of pixels in {MIN_RESOLUTION}..{MAX_RESOLUTION} "
                        f"(e.g. --resolution 16), got {resolution!r}")
    return resolution


def digits_description(resolution: int) -> dict:
    return {"name": "digits", "kind": "pixels", "resolution": check_resolution(resolution), "channels": 1,
            "num_classes": NUM_CLASSES, "frames": None, "crop": None, "autoencoder": None}


def digits_uint8(resolution: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Real digits as uint8 (N, R, R) and labels (N,); split "train" or "heldout"."""
    data = load_digits_split()
    images = render_uint8(torch.from_numpy(data[f"{split}_x"]), check_resolution(resolution))
    return images, torch.from_numpy(data[f"{split}_y"])


def digits_dataset(resolution: int) -> InMemoryDataset:
    """The train split at `resolution` px: x (N, 1, R, R) in [-1, 1], y (N,)."""
    images, labels = digits_uint8(resolution)
    x = images.float().unsqueeze(1) / 127.5 - 1
    return InMemoryDataset(x, labels, digits_description(resolution))
