"""The embedded data set: scikit-learn's handwritten digits, class-conditional, in pixel space.

`sklearn.datasets.load_digits` ships 1797 real 8x8 scans (values 0..16, ten
classes) inside the installed package, so nothing is downloaded. Training
uses a fixed train split (`load_digits_split`; its held-out quarter stays
unseen by both the generator and the feature network of
`elit_bench.metrics.digits_classifier`), rendered as that network reads real
digits (`render_uint8`): bilinear upsampling to the chosen resolution,
quantised to uint8. Model space is 1 channel in [-1, 1]: x = uint8 / 127.5 - 1.

`moving-digits` turns each digit into a clip of FRAMES frames in which it
sways sideways by up to 2 px: a real-content video set for smoke tests of
the video models (time axis, 3D patches and groups, per-frame metrics).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from elit_bench.data.base import InMemoryDataset
from elit_bench.errors import UserError

MIN_RESOLUTION, MAX_RESOLUTION = 4, 256
DEFAULT_RESOLUTION = 16
SWAY = (0, 1, 2, 1, 0, -1, -2, -1)  # moving-digits: horizontal shift in px of each frame
FRAMES = len(SWAY)  # 8, the latent frames of the paper's Kinetics-700 setting
NUM_CLASSES = 10
DIGITS_MAX = 16.0  # load_digits pixel values run 0..16
SPLIT_SEED = 0  # fixed train / held-out split (the digits classifier never sees the held-out quarter)
HELDOUT_FRACTION = 0.25


def load_digits_split() -> dict[str, np.ndarray]:
    """The fixed split of the embedded digits.

    Returns images float32 (N, 8, 8) in [0, 1] and int64 labels (N,) under
    keys ``train_x``, ``train_y``, ``heldout_x``, ``heldout_y``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / DIGITS_MAX).astype(np.float32)
    y = digits.target.astype(np.int64)
    train_x, heldout_x, train_y, heldout_y = train_test_split(
        x, y, test_size=HELDOUT_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return {"train_x": train_x, "train_y": train_y, "heldout_x": heldout_x, "heldout_y": heldout_y}


def render_uint8(images: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Upsample [0, 1] digits (N, 8, 8) to uint8 (N, size, size), as a data pipeline would."""
    x = images[:, None].float()
    if size != x.shape[-1]:
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        x = F.interpolate(x, size=(size, size), mode=mode, **kwargs)
    return (x[:, 0] * 255).round().clamp(0, 255).to(torch.uint8)


def check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise UserError(f"digits resolution must be an integer number of pixels in {MIN_RESOLUTION}..{MAX_RESOLUTION} "
                        f"(e.g. --resolution 16), got {resolution!r}")
    return resolution


def digits_description(resolution: int, video: bool = False) -> dict:
    return {"name": "moving-digits" if video else "digits", "kind": "pixels",
            "resolution": check_resolution(resolution), "channels": 1, "num_classes": NUM_CLASSES,
            "frames": FRAMES if video else None, "crop": None, "autoencoder": None}


def digits_uint8(resolution: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Real digits as uint8 (N, R, R) and labels (N,); split "train" or "heldout"."""
    data = load_digits_split()
    images = render_uint8(torch.from_numpy(data[f"{split}_x"]), check_resolution(resolution))
    return images, torch.from_numpy(data[f"{split}_y"])


def moving_digits_uint8(resolution: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Clips uint8 (N, FRAMES, R, R) of the split's digits swaying sideways; labels (N,).

    Frame f is the digit shifted by SWAY[f] pixels (wrapping around), to the right first when the clip's
    index is even and to the left first when it is odd, so both occur in every class. The sway stays
    within 2 px so that every frame remains a digit the classifier knows.
    """
    images, labels = digits_uint8(resolution, split)
    direction = 1 - 2 * (torch.arange(len(images)) % 2)  # +1, -1, +1, ...
    clips = [torch.stack([img.roll(int(d) * s, dims=-1) for s in SWAY]) for img, d in zip(images, direction)]
    return torch.stack(clips), labels


def digits_dataset(resolution: int, video: bool = False) -> InMemoryDataset:
    """The train split at `resolution` px in [-1, 1]: x (N, 1, R, R), or clips (N, 1, FRAMES, R, R); y (N,)."""
    images, labels = (moving_digits_uint8 if video else digits_uint8)(resolution)
    x = images.float().unsqueeze(1) / 127.5 - 1
    return InMemoryDataset(x, labels, digits_description(resolution, video))
