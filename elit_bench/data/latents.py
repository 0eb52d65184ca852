"""Latent data sets on disk: sharded arrays plus one metadata file.

Layout of a latent data set directory::

    DIR/meta.json                 metadata (below); its presence marks a complete data set
    DIR/latents-00000.npy         float16 (n, C, H, W) images or (n, C, T, H, W) videos
    DIR/labels-00000.npy          int64 (n,) class ids
    DIR/flipped-00000.npy         (optional) the same images flipped horizontally, encoded
    DIR/std-00000.npy             (optional) the posterior's std (then latents-* hold its mean)
    DIR/std_flipped-00000.npy     (optional) the flipped images' posterior std
    DIR/latents-00001.npy ...

meta.json::

    {"format": "elit-latents", "version": 1,
     "num_samples": N, "num_classes": K, "class_names": [...] or null,
     "channels": C, "latent_shape": [H, W] or [T, H, W], "frames": null or T (latent frames),
     "resolution": image size in px the latents decode to,
     "dtype": "float16",
     "autoencoder": {"path": "<local dir for diffusers from_pretrained>",
                     "scaling_factor": s, "shift_factor": m},
     "flips": true if flipped-* are stored, "posterior": true if std-* are stored,
     "text": (optional) an `elit-bench encode-text` directory: the labels are its prompt ids,
     "shards": [{"latents": "latents-00000.npy", "labels": "labels-00000.npy", "count": n,
                 ["flipped": ..., "std": ..., "std_flipped": ...]}, ...]}

With flips the data set has two views of each sample (`Dataset.views`; the
trainer's seeded order draws one per sample and epoch, as DiT's random flip
does); with the posterior, `load` returns mean and std (concatenated on the
channel axis) and the trainer draws a latent from them each step, as REPA does.

Latents are stored normalised, (z - shift_factor) * scaling_factor (a std:
std * scaling_factor), i.e. in model space; decode with z = x / scaling_factor + shift_factor. Shards are
memory-mapped when training, so data sets larger than memory work. A writer
builds the directory under a temporary name and renames it when complete:
an interrupted encode never leaves something that looks like a data set.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from elit_bench.data.base import Dataset
from elit_bench.data.text import prompts_for_latents
from elit_bench.errors import UserError

FORMAT, VERSION = "elit-latents", 1
META_FILE = "meta.json"
EXTRA_ARRAYS = ("flipped", "std", "std_flipped")  # optional per-shard arrays shaped like the latents
REQUIRED_KEYS = ("num_samples", "num_classes", "channels", "latent_shape", "resolution", "autoencoder", "shards")


def read_meta(path) -> dict:
    """Validated meta.json of the latent data set at `path`."""
    path = Path(path).expanduser()
    meta_path = path / META_FILE
    if not path.exists():
        raise UserError(f"data path {str(path)!r} does not exist; give `digits`, `padded-digits`, or a latent "
                        "data set directory written by `elit-bench data encode`")
    if not meta_path.is_file():
        raise UserError(f"{str(path)!r} is not a latent data set: {META_FILE} is missing "
                        "(create one with `elit-bench data encode`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {meta_path}: {exc}") from exc
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise UserError(f"{meta_path} is not an {FORMAT} v{VERSION} metadata file")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise UserError(f"{meta_path} lacks {', '.join(missing)}")
    for shard in meta["shards"]:
        for key in ("latents", "labels", *_extra_arrays(meta)):
            if key not in shard or not (path / shard[key]).is_file():
                raise UserError(f"latent data set {str(path)!r} is incomplete: {shard.get(key, key)} is missing")
    return meta


def _extra_arrays(meta: dict) -> list[str]:
    """The optional arrays a data set stores, from its flags."""
    flips, posterior = meta.get("flips", False), meta.get("posterior", False)
    return [k for k, on in zip(EXTRA_ARRAYS, (flips, posterior, flips and posterior)) if on]


def latents_description(path) -> dict:
    """The data description (`config["data"]`) of a latent data set; with "text", its prompts' directory."""
    path = Path(path).expanduser().resolve()
    meta = read_meta(path)
    description = {"name": str(path), "kind": "latents", "resolution": meta["resolution"],
                   "channels": meta["channels"], "num_classes": meta["num_classes"], "frames": meta.get("frames"),
                   "crop": None, "autoencoder": meta["autoencoder"]}
    if "text" in meta:  # text-to-image: the labels are prompt ids (data/text.py)
        description["text"] = prompts_for_latents(path, meta)
    return description


class LatentDataset(Dataset):
    """Memory-mapped shards; `load(indices)` gathers any index set (index i + len(self) is sample i flipped)."""

    def __init__(self, path):
        self.path = Path(path).expanduser().resolve()
        self.meta = read_meta(self.path)
        self.description = latents_description(self.path)
        self.views = 2 if self.meta.get("flips") else 1
        self.posterior = bool(self.meta.get("posterior"))
        kinds = ["latents", *_extra_arrays(self.meta)]
        self.arrays = {k: [np.load(self.path / s[k], mmap_mode="r") for s in self.meta["shards"]] for k in kinds}
        self.labels = [np.load(self.path / s["labels"]) for s in self.meta["shards"]]
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays["latents"]])
        shape = (self.meta["channels"], *self.meta["latent_shape"])
        for kind, shards in self.arrays.items():
            for i, arr in enumerate(shards):
                if tuple(arr.shape[1:]) != shape or len(arr) != len(self.labels[i]):
                    raise UserError(f"shard {i} of {self.path} holds {arr.shape} {kind} and {len(self.labels[i])} "
                                    f"labels; meta.json says (n, {', '.join(map(str, shape))})")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def load(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        view, indices = np.divmod(indices, len(self))
        shard = np.searchsorted(self.offsets, indices, side="right") - 1
        channels, *spatial = self.arrays["latents"][0].shape[1:]
        x = np.empty((len(indices), channels * (1 + self.posterior), *spatial), dtype=np.float32)
        y = np.empty(len(indices), dtype=np.int64)
        for s, v in {(int(a), int(b)) for a, b in zip(shard, view)}:
            where = np.nonzero((shard == s) & (view == v))[0]
            local = indices[where] - self.offsets[s]
            order = np.argsort(local)  # ascending reads are kinder to a memory map
            rows, where = local[order], where[order]
            x[where, :channels] = self.arrays["flipped" if v else "latents"][s][rows]
            if self.posterior:
                x[where, channels:] = self.arrays["std_flipped" if v else "std"][s][rows]
            y[where] = self.labels[s][rows]
        return torch.from_numpy(x), torch.from_numpy(y)


class LatentWriter:
    """Write a latent data set shard by shard; `close()` writes meta.json and publishes the directory.

        writer = LatentWriter(out, meta)   # meta: every meta.json key but format, shards, num_samples
        writer.add(latents, labels)        # float (n, C, ...) model-space latents, int labels
        writer.close()

    With meta["flips"] / meta["posterior"], `add` also takes the arrays they store (`EXTRA_ARRAYS`):
    flipped=, std=, std_flipped=, each like the latents.
    """

    def __init__(self, out, meta: dict, shard_size: int = 10000, dtype: str = "float16"):
        self.out = Path(out).expanduser().resolve()
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise UserError(f"output {str(self.out)!r} already exists and is not empty; choose a new --out")
        if shard_size < 1:
            raise UserError(f"shard size must be >= 1, got {shard_size}")
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{os.getpid()}"
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {self.tmp}: {exc}") from exc
        self.meta, self.shard_size, self.dtype = dict(meta), shard_size, dtype
        self.kinds = ["latents", *_extra_arrays(self.meta), "labels"]
        self.shards: list[dict] = []
        self.pending: list[dict[str, np.ndarray]] = []
        self.count = 0

    def add(self, latents, labels, **extra) -> None:
        arrays = {"latents": latents, **extra, "labels": labels}
        if sorted(arrays) != sorted(self.kinds):
            raise ValueError(f"this data set stores {', '.join(self.kinds)}; got {', '.join(arrays)}")
        arrays = {k: np.asarray(v, dtype=np.int64 if k == "labels" else self.dtype) for k, v in arrays.items()}
        shape = (self.meta["channels"], *self.meta["latent_shape"])
        for kind, arr in arrays.items():
            if kind != "labels" and (tuple(arr.shape[1:]) != shape or len(arr) != len(arrays["labels"])):
                raise ValueError(f"expected {kind} (n, {shape}) with n labels, got {arr.shape}, "
                                 f"{arrays['labels'].shape}")
        self.pending.append(arrays)
        self.count += len(arrays["labels"])
        while self._pending_count() >= self.shard_size:
            self._flush(self.shard_size)

    def _pending_count(self) -> int:
        return sum(len(p["labels"]) for p in self.pending)

    def _flush(self, n: int) -> None:
        joined = {k: np.concatenate([p[k] for p in self.pending]) for k in self.kinds}
        total = len(joined["labels"])
        self.pending = [{k: v[n:] for k, v in joined.items()}] if total > n else []
        i = len(self.shards)
        names = {k: f"{k}-{i:05d}.npy" for k in self.kinds}
        for kind, arr in joined.items():
            np.save(self.tmp / names[kind], arr[:n])
        self.shards.append({**names, "count": int(min(n, total))})

    def close(self) -> Path:
        if self.pending:
            self._flush(self._pending_count())
        if not self.count:
            self.abort()
            raise UserError("no samples were written: the input holds no images")
        meta = {"format": FORMAT, "version": VERSION, "num_samples": self.count, "dtype": self.dtype,
                **self.meta, "shards": self.shards}
        meta.setdefault("frames", None)
        meta.setdefault("class_names", None)
        (self.tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if self.out.exists():
            self.out.rmdir()  # empty, checked in __init__
        os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def latent_shape_for(resolution: int, downsample: int, frames: int | None = None) -> list[int]:
    """Latent spatial shape of `resolution` px images through an autoencoder that downsamples by `downsample`."""
    if resolution % downsample:
        raise UserError(f"resolution {resolution} is not divisible by the autoencoder's downsampling {downsample}")
    side = resolution // downsample
    return [side, side] if frames is None else [frames, side, side]


def spatial_size(latent_shape) -> int | tuple[int, int]:
    """`input_size` for create_model: an int for square latents, else (H, W)."""
    h, w = latent_shape[-2:]
    return h if h == w else (h, w)

