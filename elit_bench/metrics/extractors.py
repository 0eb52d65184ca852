"""Feature extractors behind one registry.

Every extractor maps a batch of uint8 samples to named float32 feature matrices
and says what it is (name, weights file and its sha256, input protocol), which
is what feature caches are keyed on and what results record.

Built in:

- ``inception-v3-tf``: torch-fidelity's port of the TF "2015-12-05" Inception
  (its own ``FeatureExtractorInceptionV3``, uint8 input, its TF1-compatible
  bilinear resize to 299). Features ``pool`` (2048, FID / precision / recall /
  KID), ``logits_unbiased`` (1008, Inception Score), ``spatial`` (the first 7
  channels of ``mixed_6/conv``, 17x17x7 = 2023 in ADM's channels-last order, sFID).
- ``dinov2-vitl14``: DINOv2 ViT-L/14 via ``torch.hub.load(..., source='local')``
  with dgm-eval's preprocessing; feature ``cls`` (1024, FDD).
- ``i3d-stylegan-v``: the I3D TorchScript detector with StyleGAN-V's call
  (``rescale=True, resize=True, return_features=True``) on 16-frame clips;
  feature ``features`` (400, FVD).
- ``digits-cnn``: the small classifier shipped for the embedded digits set;
  features ``penultimate`` (64) and ``logits`` (10).

Networks load lazily, on the first batch, so results computed only from stored
statistics never need weights files.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from elit_bench.data import compositional
from elit_bench.errors import UserError, choices_error
from elit_bench.metrics import digits_classifier
from elit_bench.metrics.weights import file_sha256, hub_dir, load_state_dict, resolve_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureExtractor(abc.ABC):
    """Base class: uint8 samples in, named float32 features (B, D) out.

    Subclasses set the class attributes and implement `_load` and `_forward`.
    """

    name: str = ""
    modality: str = "image"  # "image": batches (B, C, H, W); "video": (B, C, T, H, W); C in {1, 3}
    preprocessing: str = ""  # identifies the input protocol; part of every cache key
    outputs: tuple[str, ...] = ()  # feature names `extract` can return

    def __init__(self, weights_path: Path, device: str | torch.device = "cpu"):
        self.weights_path = Path(weights_path)
        self.weights_sha256 = file_sha256(self.weights_path)
        self.device = torch.device(device)
        self._net: nn.Module | None = None

    @abc.abstractmethod
    def _load(self) -> nn.Module:
        """Build the network on `self.device`; `UserError` if the weights do not fit."""

    @abc.abstractmethod
    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """All outputs for a uint8 batch already on `self.device`."""

    @property
    def net(self) -> nn.Module:
        if self._net is None:
            self._net = self._load()
        return self._net

    def identity(self) -> dict[str, str]:
        """What produced a feature: recorded in results and hashed into cache keys."""
        return {
            "extractor": self.name,
            "preprocessing": self.preprocessing,
            "weights": str(self.weights_path),
            "weights_sha256": self.weights_sha256,
        }

    def extract(self, batch: torch.Tensor, outputs: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """Features of one batch.

        batch: uint8 (B, C, H, W) for image extractors, (B, C, T, H, W) for video ones, C in {1, 3}.
        Returns {feature name: float32 (B, D) on the CPU} for `outputs` (default: all).
        """
        outputs = self.outputs if outputs is None else tuple(outputs)
        unknown = [o for o in outputs if o not in self.outputs]
        if unknown:
            raise choices_error(f"{self.name} feature", unknown[0], self.outputs)
        ndim = 5 if self.modality == "video" else 4
        if batch.dtype != torch.uint8 or batch.ndim != ndim or batch.shape[1] not in (1, 3):
            layout = "(B, C, T, H, W)" if ndim == 5 else "(B, C, H, W)"
            raise UserError(
                f"{self.name} expects uint8 batches {layout} with C in (1, 3), got {batch.dtype} {tuple(batch.shape)}"
            )
        with torch.inference_mode():
            features = self._forward(batch.to(self.device))
        return {o: features[o].float().cpu() for o in outputs}


def to_rgb(batch: torch.Tensor) -> torch.Tensor:
    """Repeat a single channel (dimension 1) to three, as loaders that `convert('RGB')` do."""
    return batch.expand(-1, 3, *batch.shape[2:]) if batch.shape[1] == 1 else batch


class InceptionV3TF(FeatureExtractor):
    """torch-fidelity's TF-ported InceptionV3 (FID, IS, sFID, precision/recall, KID)."""

    name = "inception-v3-tf"
    preprocessing = "torch-fidelity:uint8,tf1-bilinear-299"
    outputs = ("pool", "logits_unbiased", "spatial")
    WEIGHT_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
    SPATIAL_CHANNELS = 7  # ADM's evaluator keeps mixed_6/conv[..., :7] for sFID

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu"):
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        path = resolve_weights(weights, self.WEIGHT_FILES, "Inception-v3 (TF 2015-12-05 port)", "--inception-weights", URL_INCEPTION_V3)
        super().__init__(path, device)
        self._spatial: torch.Tensor | None = None

    def _load(self) -> nn.Module:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        load_state_dict(self.weights_path, "Inception-v3")  # torch-fidelity unpickles freely: vet the file first
        try:
            net = FeatureExtractorInceptionV3(
                self.name, ["2048", "logits_unbiased"], feature_extractor_weights_path=str(self.weights_path)
            )
        except RuntimeError as exc:
            raise UserError(f"{self.weights_path} does not match torch-fidelity's InceptionV3 layout: {exc}") from exc
        # mixed_6/conv of the TF graph is Mixed_6d.branch1x1 (conv, batchnorm, relu) in the port
        net.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)
        return net.to(self.device)

    def _keep_spatial(self, module: nn.Module, args, output: torch.Tensor) -> None:
        self._spatial = output

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        pool, logits = self.net(to_rgb(batch))
        # (B, 192, 17, 17) -> first channels, channels-last like the TF graph -> (B, 17 * 17 * 7)
        spatial = self._spatial[:, : self.SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(len(batch), -1)
        self._spatial = None
        return {"pool": pool, "logits_unbiased": logits, "spatial": spatial}


def dgm_eval_preprocess(batch: torch.Tensor, size: int = 224) -> torch.Tensor:
    """dgm-eval's DINOv2 input: PIL bicubic resize to size x size, ToTensor, ImageNet mean/std.

    batch: uint8 (B, C, H, W), C in {1, 3}. Returns float32 (B, 3, size, size).
    """
    images = to_rgb(batch).permute(0, 2, 3, 1).cpu().numpy()
    resized = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in images])
    x = torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class DINOv2ViTL14(FeatureExtractor):
    """DINOv2 ViT-L/14 CLS features with dgm-eval's preprocessing (FDD)."""

    name = "dinov2-vitl14"
    preprocessing = "dgm-eval:pil-bicubic-224,to-tensor,imagenet-mean-std"
    outputs = ("cls",)
    HUB_MODEL = "dinov2_vitl14"
    HUB_REPO_DIR = "facebookresearch_dinov2_main"  # what torch.hub.load('facebookresearch/dinov2', ...) caches
    WEIGHT_FILES = ("dinov2_vitl14_pretrain.pth",)
    URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"

    def __init__(
        self, weights: str | Path | None = None, repo: str | Path | None = None, device: str | torch.device = "cpu"
    ):
        self.repo_dir = self._resolve_repo(repo)
        super().__init__(resolve_weights(weights, self.WEIGHT_FILES, "DINOv2 ViT-L/14", "--dinov2-weights", self.URL), device)

    @classmethod
    def _resolve_repo(cls, repo: str | Path | None) -> Path:
        path = Path(repo).expanduser() if repo is not None else hub_dir() / cls.HUB_REPO_DIR
        if not (path / "hubconf.py").is_file():
            where = "the directory given to --dinov2-repo" if repo is not None else "the torch hub cache"
            raise UserError(
                f"no DINOv2 code at {path} ({where} has no hubconf.py): clone "
                f"https://github.com/facebookresearch/dinov2 and pass --dinov2-repo DIR, or put the clone at "
                f"{hub_dir() / cls.HUB_REPO_DIR}"
            )
        return path

    def _load(self) -> nn.Module:
        try:
            net = torch.hub.load(str(self.repo_dir), self.HUB_MODEL, source="local", pretrained=False)
        except Exception as exc:  # the repo's own import errors, a missing entry point, ...
            raise UserError(f"cannot build {self.HUB_MODEL} from {self.repo_dir}: {type(exc).__name__}: {exc}") from exc
        try:
            net.load_state_dict(load_state_dict(self.weights_path, "DINOv2 ViT-L/14"))
        except RuntimeError as exc:
            raise UserError(f"{self.weights_path} does not match {self.HUB_MODEL} from {self.repo_dir}: {exc}") from exc
        return net.eval().requires_grad_(False).to(self.device)

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"cls": self.net(dgm_eval_preprocess(batch).to(self.device))}


class I3DTorchScript(FeatureExtractor):
    """StyleGAN-V's I3D TorchScript detector on 16-frame clips (FVD)."""

    name = "i3d-stylegan-v"
    modality = "video"
    preprocessing = "stylegan-v:uint8,rescale,resize,first-16-frames"
    outputs = ("features",)
    NUM_FRAMES = 16
    DETECTOR_KWARGS = {"rescale": True, "resize": True, "return_features": True}
    WEIGHT_FILES = ("i3d_torchscript.pt",)
    URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu"):
        super().__init__(resolve_weights(weights, self.WEIGHT_FILES, "I3D TorchScript", "--i3d", self.URL), device)

    def _load(self) -> nn.Module:
        try:
            with warnings.catch_warnings():  # torch 2.x deprecates TorchScript, but the detector ships as one
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(self.weights_path), map_location=self.device)
        except Exception as exc:  # TorchScript raises RuntimeError or ValueError depending on the damage
            raise UserError(f"{self.weights_path} is not a TorchScript I3D detector ({exc})") from exc
        return net.eval()

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if batch.shape[2] < self.NUM_FRAMES:
            raise UserError(f"FVD needs clips of at least {self.NUM_FRAMES} frames, got {batch.shape[2]}")
        clips = to_rgb(batch[:, :, : self.NUM_FRAMES]).contiguous()
        return {"features": self.net(clips, **self.DETECTOR_KWARGS)}


class DigitsCNN(FeatureExtractor):
    """The shipped digits classifier (quickstart feature space and class accuracy)."""

    name = "digits-cnn"
    preprocessing = f"digits:gray-mean,bilinear-antialias-{digits_classifier.INPUT_SIZE}"
    outputs = ("penultimate", "logits")

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu"):
        path = Path(weights).expanduser() if weights is not None else digits_classifier.DEFAULT_WEIGHTS
        if not path.is_file():
            raise UserError(f"digits classifier weights {path} do not exist; check --digits-weights")
        super().__init__(path, device)

    def _load(self) -> nn.Module:
        return digits_classifier.load_digits_classifier(self.weights_path).to(self.device)

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        features, logits = self.net(digits_classifier.to_model_input(batch))
        return {"penultimate": features, "logits": logits}


class DigitsCells(DigitsCNN):
    """The digits classifier read cell by cell on compositional-digits canvases (`data.compositional.CELLS`):
    per cell, its 10 logits and its ink (mean grey level in [0, 1]); "cells" is (B, 11 x 9) in CELLS order."""

    name = "digits-cells"
    preprocessing = f"digits-cells:{','.join(compositional.CELLS)};" + DigitsCNN.preprocessing
    outputs = ("cells",)

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        canvas = batch.shape[-1]
        if batch.shape[-2] != canvas or canvas % 4:
            raise UserError(f"{self.name} reads square canvases with a side divisible by 4 (digits-t2i), got "
                            f"{tuple(batch.shape[-2:])}")
        readings = []
        for cell in compositional.CELLS:
            top, left, side = compositional.cell_box(cell, canvas)
            crop = batch[..., top:top + side, left:left + side]
            _, logits = self.net(digits_classifier.to_model_input(crop))
            ink = crop.float().mean(dim=(1, 2, 3)) / 255
            readings.append(torch.cat([logits, ink[:, None]], dim=1))
        return {"cells": torch.cat(readings, dim=1)}


_REGISTRY: dict[str, Callable[..., FeatureExtractor]] = {}


def register_extractor(name: str, factory: Callable[..., FeatureExtractor], overwrite: bool = False) -> None:
    """Make `factory(**options)` available as `get_extractor(name, **options)`."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"feature extractor {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = factory


def get_extractor(name: str, **options) -> FeatureExtractor:
    """A new extractor; options are its constructor's (weights=..., device=..., ...)."""
    if name not in _REGISTRY:
        raise choices_error("feature extractor", name, list_extractors())
    return _REGISTRY[name](**options)


def list_extractors() -> list[str]:
    return sorted(_REGISTRY)


for _cls in (InceptionV3TF, DINOv2ViTL14, I3DTorchScript, DigitsCNN, DigitsCells):
    register_extractor(_cls.name, _cls)
