"""Test stand-ins: a shared random-weight Inception file, tiny DINOv2 and I3D networks behind the real loading paths.

Pretrained weights cannot be downloaded in tests. DINOv2 gets a hub repo with a ``hubconf.py``
(``torch.hub.load(..., source='local')``), I3D a TorchScript file with the StyleGAN-V detector's
call signature; Inception the package's calibrated random weights (`elit_bench.metrics.synthetic`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from elit_bench.metrics.synthetic import write_random_inception_weights


def random_inception_weights(directory: str | Path, seed: int = 0) -> Path:
    """`write_random_inception_weights` into `directory` once; later calls reuse the file.

    Lets several tests share one file through a common directory (e.g. pytest's
    session base temp); the file is written atomically, so concurrent callers
    never read a partial one.
    """
    path = Path(directory) / f"random-inception-seed{seed}.pth"
    return path if path.is_file() else write_random_inception_weights(path, seed=seed)


TINY_DINOV2_HUBCONF = '''"""Stand-in for facebookresearch/dinov2's hubconf: same entry point, a tiny network."""
dependencies = ["torch"]

import torch
from torch import nn


class TinyViT(nn.Module):
    """(B, 3, 224, 224) -> (B, 8): a 14x14 patch embedding, averaged, then a linear head."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, kernel_size=14, stride=14)
        self.head = nn.Linear(8, 8)

    def forward(self, x):
        return self.head(self.patch(x).mean(dim=(2, 3)))


def dinov2_vitl14(*, pretrained=True, **kwargs):
    if pretrained:
        raise RuntimeError("the stand-in has no pretrained weights")
    return TinyViT()
'''


def write_tiny_dinov2(repo_dir: str | Path, weights_path: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """A hub repo whose ``dinov2_vitl14`` is a tiny network, and a random weights file for it."""
    repo_dir, weights_path = Path(repo_dir), Path(weights_path)
    repo_dir.mkdir(parents=True, exist_ok=True)
    (repo_dir / "hubconf.py").write_text(TINY_DINOV2_HUBCONF)
    torch.manual_seed(seed)
    net = torch.hub.load(str(repo_dir), "dinov2_vitl14", source="local", pretrained=False)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), weights_path)
    return repo_dir, weights_path


class TinyI3D(nn.Module):
    """TorchScript-able stand-in with the StyleGAN-V I3D detector's call signature.

    forward(uint8 (B, 3, T, H, W), rescale, resize, return_features) -> (B, 16)
    features, or class probabilities when return_features is False.
    """

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 2 * 2, 16)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 32, 32), mode="trilinear", align_corners=False)
        features = self.proj(F.adaptive_avg_pool3d(x, (4, 2, 2)).flatten(1))
        return features if return_features else features.softmax(dim=-1)


def write_tiny_i3d(path: str | Path, seed: int = 0) -> Path:
    """Save a scripted `TinyI3D` with random weights (what ``torch.jit.load`` reads)."""
    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format the real detector uses
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(TinyI3D()).save(str(path))
    return path
