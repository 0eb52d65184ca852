"""A random-weight Inception and synthetic images, for speed measurements without the pretrained file.

`elit-bench bench inception` (without `--inception-weights`) and `scripts/gpu_check.py` time
torch-fidelity's Inception architecture: the speed does not depend on the weights, so random ones
serve. Random BatchNorm statistics would make deep features degenerate, so they are calibrated on a
batch of images; the classifier is rescaled so that logits spread and the Inception Score is not
trivially 1 (the offline tests, whose stand-ins are in tests/synthetic.py, use the same weights).
"""

from __future__ import annotations

import tempfile
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
