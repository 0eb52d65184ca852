"""Sample sets: N uint8 images or videos from an image folder, an ADM-layout .npz or an array.

A sample set is N uint8 samples, each (H, W, C) for images or (T, H, W, C) for
videos, C in {1, 3}, read in order in batches. Its content hash identifies it
(the feature cache of `elit_bench.metrics` keys on it): the bytes of ``arr_0``
(with dtype and shape) for an .npz, the bytes of the image files in sorted name
order for a folder. ``arr_0`` is streamed from the archive in batches, so
50k-sample reference batches are never held in memory at once.

The sampler writes its sets in the ADM layout and reads them back here (grids);
`elit_bench.metrics.sources` opens them, with stored statistics, for metrics.
"""

from __future__ import annotations

import abc
import hashlib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from elit_bench.checkpoint import HASH_CHUNK
from elit_bench.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class SampleSet(abc.ABC):
    """N uint8 samples of one shape, (H, W, C) or (T, H, W, C), C in {1, 3}."""

    num: int
    sample_shape: tuple[int, ...]
    labels: np.ndarray | None = None  # (N,) class labels when the source carries them

    @property
    def is_video(self) -> bool:
        return len(self.sample_shape) == 4

    def frames_per_sample(self, modality: str) -> int:
        """Feature rows per sample under an extractor of `modality`: T for an image extractor on videos (it sees
        every frame), else 1."""
        return self.sample_shape[0] if self.is_video and modality == "image" else 1

    @abc.abstractmethod
    def batches(self, start: int, stop: int, batch_size: int) -> Iterator[np.ndarray]:
        """Samples start..stop-1 in order, as uint8 arrays (B, *sample_shape)."""

    @abc.abstractmethod
    def content_sha256(self) -> str:
        """Hash of the sample content (order included)."""


def check_samples_shape(shape: tuple[int, ...], where: str) -> None:
    """`UserError` unless shape is (N, H, W, C) or (N, T, H, W, C) with C in {1, 3} and N >= 1."""
    if len(shape) not in (4, 5) or shape[-1] not in (1, 3):
        raise UserError(
            f"{where} must hold uint8 images (N, H, W, 3) or videos (N, T, H, W, 3) (or 1 channel), got shape {shape}"
        )
    if shape[0] == 0:
        raise UserError(f"{where} holds no samples (shape {shape}); metrics need at least 2")


def check_labels(labels, num: int, where: str) -> np.ndarray | None:
    """Class labels as an integer array (N,), or None; `UserError` for other types or counts (an accuracy against
    string labels would silently be 0)."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.shape != (num,):
        raise UserError(f"{where} must hold one integer class label per sample ({num}), got {labels.dtype} "
                        f"labels of shape {labels.shape}")
    return labels


class ArraySamples(SampleSet):
    """Samples held in memory: uint8 (N, H, W, C) or (N, T, H, W, C); (N, H, W) is taken as grayscale."""

    def __init__(self, array: np.ndarray, labels: np.ndarray | None = None):
        array = np.asarray(array)
        if array.ndim == 3:
            array = array[..., None]
        if array.dtype != np.uint8:
            raise UserError(f"samples must be uint8 in 0..255, got {array.dtype}")
        check_samples_shape(array.shape, "sample array")
        self.array, self.num, self.sample_shape = array, len(array), tuple(array.shape[1:])
        self.labels = check_labels(labels, self.num, "sample labels")

    def batches(self, start: int, stop: int, batch_size: int) -> Iterator[np.ndarray]:
        for i in range(start, stop, batch_size):
            yield self.array[i : min(i + batch_size, stop)]

    def content_sha256(self) -> str:
        digest = hashlib.sha256(f"{self.array.dtype.str}{self.array.shape}".encode())
        digest.update(np.ascontiguousarray(self.array).data)
        return digest.hexdigest()


class NpzSamples(SampleSet):
    """``arr_0`` of an ADM-layout .npz, streamed from the archive (labels from ``arr_1`` if present)."""

    MEMBER = "arr_0.npy"

    def __init__(self, path: Path):
        self.path = path
        try:
            with zipfile.ZipFile(path) as zf, zf.open(self.MEMBER) as f:
                shape, dtype = self._read_header(f)
            with np.load(path, allow_pickle=False) as npz:
                self.labels = np.asarray(npz["arr_1"]) if "arr_1" in npz.files else None
        except UserError:
            raise
        except Exception as exc:  # zip, zlib, CRC and header errors of a damaged archive
            raise UserError(f"{path} is corrupted: {type(exc).__name__}: {exc}") from exc
        if dtype != np.uint8:
            raise UserError(
                f"{path}: arr_0 must be uint8 images in 0..255 (ADM layout), got {dtype}; "
                "convert with (x * 255).round().clip(0, 255).astype(np.uint8)"
            )
        check_samples_shape(shape, f"{path}: arr_0")
        self.num, self.sample_shape = shape[0], tuple(shape[1:])
        self.labels = check_labels(self.labels, self.num, f"{path}: arr_1")
        self.row_bytes = int(np.prod(self.sample_shape))

    def _read_header(self, f) -> tuple[tuple[int, ...], np.dtype]:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        if fortran_order:
            raise UserError(f"{self.path}: arr_0 is stored in Fortran order; save it with np.ascontiguousarray")
        return tuple(shape), dtype

    def _stream(self, start: int, stop: int, rows: int) -> Iterator[bytes]:
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(self.MEMBER) as f:
                self._read_header(f)
                f.seek(f.tell() + start * self.row_bytes)
                for i in range(start, stop, rows):
                    n = min(rows, stop - i)
                    data = f.read(n * self.row_bytes)
                    if len(data) != n * self.row_bytes:
                        raise UserError(f"{self.path}: arr_0 is truncated (expected {self.num} samples)")
                    yield data
        except UserError:
            raise
        except Exception as exc:  # zlib / CRC errors surface while streaming
            raise UserError(f"{self.path} is corrupted: {type(exc).__name__}: {exc}") from exc

    def batches(self, start: int, stop: int, batch_size: int) -> Iterator[np.ndarray]:
        for data in self._stream(start, stop, batch_size):
            yield np.frombuffer(data, dtype=np.uint8).reshape(-1, *self.sample_shape)

    def content_sha256(self) -> str:
        digest = hashlib.sha256(f"|u1{(self.num, *self.sample_shape)}".encode())
        for data in self._stream(0, self.num, max(1, HASH_CHUNK // self.row_bytes)):
            digest.update(data)
        return digest.hexdigest()


class FolderSamples(SampleSet):
    """Images in a folder, sorted by name, converted to RGB; all must share one size."""

    def __init__(self, path: Path):
        self.path = path
        self.files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise UserError(f"{path} holds no {'/'.join(IMAGE_EXTENSIONS)} images")
        self.num = len(self.files)
        self.sample_shape = self._read(self.files[0]).shape

    def _read(self, file: Path) -> np.ndarray:
        try:
            with Image.open(file) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise UserError(f"cannot read image {file}: {exc}") from exc

    def batches(self, start: int, stop: int, batch_size: int) -> Iterator[np.ndarray]:
        for i in range(start, stop, batch_size):
            images = [self._read(f) for f in self.files[i : min(i + batch_size, stop)]]
            for f, im in zip(self.files[i:], images):
                if im.shape != self.sample_shape:
                    raise UserError(f"{f} is {im.shape[1]}x{im.shape[0]}, the folder's first image is "
                                    f"{self.sample_shape[1]}x{self.sample_shape[0]}; resize all images to one size")
            yield np.stack(images)

    def content_sha256(self) -> str:
        digest = hashlib.sha256()
        for file in self.files:
            data = file.read_bytes()
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        return digest.hexdigest()
