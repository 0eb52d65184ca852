"""ImageFolder -> latent data set, through a diffusers `AutoencoderKL` loaded from a local directory.

Images are read as RGB, center-cropped the ADM way (box-downsample by 2
while the short side is >= 2x the target, bicubic resize, centre crop),
scaled to [-1, 1] and encoded; the posterior mean is stored, normalised with
the autoencoder's own `scaling_factor` and `shift_factor` (FLUX: 16
channels, 0.3611 / 0.1159; SD: 4 channels, 0.18215 / 0). By default each
image is also encoded flipped horizontally (as DiT, fast-DiT and LightningDiT
train on flips; training draws one of the two per sample and epoch); with
`posterior` the posterior's std is stored too, and training draws a latent
from it each step (as REPA does). Labels are the
indices of the sorted class folder names, as torchvision's ImageFolder does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from elit_bench.data.latents import LatentWriter, latent_shape_for
from elit_bench.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """ADM's center crop (guided-diffusion `image_datasets.py`): uint8 (size, size, 3)."""
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.array(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


def list_image_folder(root) -> tuple[list[Path], list[int], list[str]]:
    """ImageFolder layout root/<class>/**/<image>: paths, labels, class names (sorted)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder {str(root)!r} does not exist or is not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"{str(root)!r} has no class subfolders; expected ROOT/<class>/<image> (ImageFolder layout)")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += files
        labels += [label] * len(files)
    return paths, labels, classes


class _Images(torch.utils.data.Dataset):
    def __init__(self, paths, labels, size):
        self.paths, self.labels, self.size = paths, labels, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            with Image.open(self.paths[i]) as image:
                arr = center_crop_arr(image.convert("RGB"), self.size)
        except OSError as exc:  # PIL's UnidentifiedImageError and truncated files are OSErrors
            raise UserError(f"cannot read image {self.paths[i]}: {exc}") from exc
        x = torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1
        return x, self.labels[i]


def load_autoencoder(path, device="cpu"):
    """diffusers AutoencoderKL from a local directory (no download)."""
    from diffusers import AutoencoderKL

    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"autoencoder directory {str(path)!r} does not exist; give a local folder saved with "
                        "diffusers `save_pretrained` (e.g. FLUX.1-dev/vae)")
    try:
        vae = AutoencoderKL.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # diffusers raises OSError, ValueError, EnvironmentError ...
        raise UserError(f"cannot load a diffusers AutoencoderKL from {str(path)!r}: {exc}") from exc
    return vae.to(device).eval().requires_grad_(False)


def autoencoder_info(vae, path) -> dict:
    """The `autoencoder` entry of the metadata, plus its channels and downsampling."""
    cfg = vae.config
    return {"path": str(Path(path).expanduser().resolve()), "scaling_factor": float(cfg.scaling_factor),
            "shift_factor": float(getattr(cfg, "shift_factor", None) or 0.0),
            "channels": int(cfg.latent_channels), "downsample": 2 ** (len(cfg.block_out_channels) - 1)}


@torch.no_grad()
def encode_image_folder(root, autoencoder, out, resolution: int, batch_size: int = 32, shard_size: int = 10000,
                        device=None, workers: int = 4, limit: int | None = None, progress: bool = True,
                        flips: bool = True, posterior: bool = False) -> Path:
    """Encode every image under `root` into a latent data set at `out`; returns `out`."""
    if resolution < 8:
        raise UserError(f"resolution must be at least 8 px, got {resolution}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    paths, labels, classes = list_image_folder(root)
    if limit is not None:
        paths, labels = paths[:limit], labels[:limit]
    vae = load_autoencoder(autoencoder, device)
    info = autoencoder_info(vae, autoencoder)
    meta = {"num_classes": len(classes), "class_names": classes, "channels": info["channels"],
            "latent_shape": latent_shape_for(resolution, info["downsample"]), "frames": None,
            "resolution": resolution, "flips": flips, "posterior": posterior,
            "autoencoder": {k: info[k] for k in ("path", "scaling_factor", "shift_factor")}}
    writer = LatentWriter(out, meta, shard_size)
    loader = torch.utils.data.DataLoader(_Images(paths, labels, resolution), batch_size=batch_size,
                                         num_workers=workers, shuffle=False)
    try:
        def encode(images) -> tuple[np.ndarray, np.ndarray]:
            """Model-space posterior mean and std."""
            dist = vae.encode(images.to(device)).latent_dist
            mean = (dist.mean - info["shift_factor"]) * info["scaling_factor"]
            return mean.float().cpu().numpy(), (dist.std * info["scaling_factor"]).float().cpu().numpy()

        for x, y in tqdm(loader, desc="encode", unit="batch", disable=not progress):
            mean, std = encode(x)
            extra = {"std": std} if posterior else {}
            if flips:
                extra["flipped"], std_flipped = encode(x.flip(-1))
                if posterior:
                    extra["std_flipped"] = std_flipped
            writer.add(mean, y.numpy(), **extra)
        return writer.close()
    except BaseException:
        writer.abort()
        raise
