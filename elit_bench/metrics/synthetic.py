"""Stand-ins for offline tests and benchmarks: random-weight networks and synthetic images.

Pretrained weights cannot be downloaded here, so agreement tests and
throughput measurements run torch-fidelity's Inception architecture with random
weights. Random BatchNorm statistics would make deep features degenerate, so
they are calibrated on a batch of images; the classifier is rescaled so that
logits spread and the Inception Score is not trivially 1. DINOv2 and I3D get
tiny networks behind the real loading paths: a hub repo with a ``hubconf.py``
(``torch.hub.load(..., source='local')``) and a TorchScript file with the
StyleGAN-V detector's call signature.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from elit_bench.checkpoint import atomic_save

INCEPTION_CLASSES = 1008  # the TF graph's softmax width, which torch-fidelity's port keeps
CALIBRATION_IMAGES = 8  # batch whose statistics become the BatchNorm running statistics
LOGIT_STD = 3.0  # spread of the random logits: enough for Inception Scores clearly above 1


def random_images(num: int, size: int, seed: int, noise: float = 0.0) -> np.ndarray:
    """uint8 (num, size, size, 3): smooth random colour fields plus optional pixel noise (0..1 of full range)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num, 3, 4, 4, generator=gen)
    x = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    x = x + noise * torch.randn(x.shape, generator=gen)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_png_folder(images: np.ndarray, folder: str | Path) -> Path:
    """Write uint8 images (N, H, W, 3) as 000000.png, 000001.png, ... into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:06d}.png")
    return folder


@torch.no_grad()
def write_random_inception_weights(path: str | Path, seed: int = 0) -> Path:
    """Write a state dict for torch-fidelity's InceptionV3 with random, calibrated weights.

    The BatchNorm running statistics become those of a batch of
    `CALIBRATION_IMAGES` `random_images`, and the classifier is scaled so the
    unbiased logits on that batch have standard deviation `LOGIT_STD`.
    """
    import torchvision
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(seed)
    # torchvision's Inception3 has the same module names and shapes as torch-fidelity's port
    init = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True, num_classes=INCEPTION_CLASSES)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(init.state_dict(), Path(tmp) / "init.pth")
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(Path(tmp) / "init.pth"))
    batch = torch.from_numpy(random_images(CALIBRATION_IMAGES, 32, seed)).permute(0, 3, 1, 2)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the running statistics to its own
    net.train()
    (pool,) = net(batch)  # normalised with the batch's own statistics, close to what eval mode gives
    net.eval()
    net.fc.weight.mul_(LOGIT_STD / (pool @ net.fc.weight.T).std())
    path = Path(path)
    atomic_save(path, lambda f: torch.save(net.state_dict(), f))
    return path


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
