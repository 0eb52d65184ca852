"""Model outputs -> uint8 images, following the checkpoint's data description (`config["data"]`).

Pixels live in [-1, 1] in model space: uint8 = round(clamp((x + 1) * 127.5, 0, 255)).
Latents were normalised as (z - shift_factor) * scaling_factor; they are
mapped back with z / scaling_factor + shift_factor and decoded by the
dataset's diffusers `AutoencoderKL`, loaded from the local directory named in
the description (nothing is downloaded). A `crop` [top, left, height, width]
keeps the region of the model's input grid that holds real content (the
zero-padding experiment) before decoding. Grayscale is repeated to 3 channels
(the ADM layout): images (B, H, W, 3), videos (B, T, H, W, 3).

The autoencoder decodes at most `decode_batch` samples at a time (a 512 px
image takes about 1 GiB of activations in fp32), under bf16 autocast on CUDA;
on the CPU it runs in fp32, so there the output does not depend on the chunking.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from elit_bench.errors import UserError, choices_error

KINDS = ("pixels", "latents")
DECODE_BATCH = 16


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """Pixels in [-1, 1], (B, C, H, W) or (B, C, T, H, W), C in {1, 3} -> uint8 channels-last, 3 channels."""
    if pixels.shape[1] not in (1, 3):
        raise UserError(f"decoded samples have {pixels.shape[1]} channels; images need 1 or 3")
    x = torch.round(((pixels.float() + 1) * 127.5).clamp(0, 255)).to(torch.uint8)
    x = x.movedim(1, -1)
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    return x.cpu().numpy()


def crop(x: torch.Tensor, region) -> torch.Tensor:
    """Keep [top, left, height, width] of the last two (spatial) axes."""
    if region is None:
        return x
    top, left, height, width = region
    return x[..., top:top + height, left:left + width]


class Decoder:
    """Callable: model-space samples (B, C, *S) -> uint8 (B, [T,] H, W, 3).

    Validates the data description and loads the autoencoder (latents) on
    construction, so that problems surface before any sampling.
    """

    def __init__(self, data: dict | None, device="cpu", decode_batch: int = DECODE_BATCH):
        if not data:
            raise UserError("the checkpoint's config has no 'data' description: cannot tell how to decode "
                            "samples (pixels or latents); it should be written by `elit-bench train`")
        self.kind = data.get("kind")
        if self.kind not in KINDS:
            raise choices_error("data kind in the checkpoint's data description", self.kind, KINDS)
        self.region = data.get("crop")
        if self.region is not None and len(self.region) != 4:
            raise UserError(f"data description crop {self.region!r} must be [top, left, height, width]")
        self.autoencoder, self.decode_batch = None, decode_batch
        if self.kind == "latents":
            if data.get("frames"):
                raise UserError("decoding video latents needs the video autoencoder, which this harness "
                                "does not load; sample a pixel-space video model or decode the latents yourself")
            self.autoencoder, self.scale, self.shift = load_autoencoder(data.get("autoencoder"), device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> np.ndarray:
        x = crop(x, self.region)
        if self.autoencoder is None:
            return to_uint8(x)
        device = next(self.autoencoder.parameters()).device
        bf16 = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
        out = []
        for chunk in x.split(self.decode_batch):
            z = chunk.to(device, self.autoencoder.dtype) / self.scale + self.shift
            with bf16:
                out.append(to_uint8(self.autoencoder.decode(z).sample))
        return np.concatenate(out)


def load_autoencoder(spec: dict | None, device):
    """(AutoencoderKL in eval mode on device, scaling_factor, shift_factor) from a local directory."""
    if not spec or not spec.get("path"):
        raise UserError("the data description is 'latents' but names no autoencoder path "
                        "(config['data']['autoencoder']['path'])")
    path = Path(spec["path"]).expanduser()
    if not path.is_dir():
        raise UserError(f"autoencoder directory {str(path)!r} does not exist: put the dataset's AutoencoderKL "
                        "there (a diffusers folder with config.json and weights), as named in the checkpoint's "
                        "config['data']['autoencoder']['path']")
    try:
        from diffusers import AutoencoderKL
    except ImportError as exc:
        raise UserError("decoding latents needs diffusers: pip install 'elit_bench[data]'") from exc
    try:
        vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # missing or unreadable weights
        raise UserError(f"cannot load AutoencoderKL from {str(path)!r}: {exc}") from exc
    return vae.to(device).eval(), float(spec.get("scaling_factor", 1.0)), float(spec.get("shift_factor", 0.0))
