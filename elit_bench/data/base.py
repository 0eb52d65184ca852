"""What the trainer needs from a dataset, and the zero-padding wrapper.

A dataset is N samples held in memory or memory-mapped; the trainer asks for
arbitrary index sets (its own seeded order, sharded over ranks), so there is
no iterator state to checkpoint: the data position is just (epoch, index).
`Prefetcher` loads the next batch on a background thread meanwhile.
"""

from __future__ import annotations

import abc
import concurrent.futures

import numpy as np
import torch


class Dataset(abc.ABC):
    """N class-labelled samples in model space.

    description: the data description stored in `config["data"]` (see `elit_bench.data`).
    loss_mask: None, or a 0/1 float tensor (1, 1, *spatial) marking where the loss counts.
    views: stored versions of each sample (2: also horizontally flipped); index i + k * len(self) is
        view k of sample i, and the trainer draws one view per sample.
    posterior: `load` returns the encoder's posterior, mean and std concatenated on the channel axis
        (n, 2C, ...), and the trainer draws a latent mean + std * noise each step.
    """

    description: dict
    loss_mask: torch.Tensor | None = None
    views: int = 1
    posterior: bool = False

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def load(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples at `indices` (n,): x float32 (n, C, H, W) or (n, C, T, H, W), y int64 (n,)."""


class Prefetcher:
    """A dataset's batches, the next one loaded on a background thread while the current one computes.

        loader.get(indices)     # this step's batch: the prefetched one if `ahead` was given these indices
        loader.ahead(indices)   # start loading the next step's batch

    With `pin` (CUDA) batches come in pinned memory, so their copy to the GPU does not block. Which
    samples a step gets never depends on timing: a prefetched batch is used only for the indices it holds.
    """

    def __init__(self, dataset: Dataset, pin: bool = False):
        self.dataset, self.pin = dataset, pin
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="elit-prefetch")
        self.pending: tuple[np.ndarray, concurrent.futures.Future] | None = None

    def _load(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.dataset.load(indices)
        return (x.pin_memory(), y.pin_memory()) if self.pin else (x, y)

    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        pending, self.pending = self.pending, None
        if pending is not None and np.array_equal(pending[0], indices):
            return pending[1].result()
        return self._load(indices)

    def ahead(self, indices) -> None:
        indices = np.asarray(indices)
        self.pending = (indices, self.pool.submit(self._load, indices))

    def close(self) -> None:
        self.pending = None
        self.pool.shutdown(wait=True, cancel_futures=True)


class InMemoryDataset(Dataset):
    """Samples already in a tensor x (N, C, ...) with labels y (N,)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, description: dict):
        self.x, self.y, self.description = x, y, description

    def __len__(self) -> int:
        return len(self.x)

    def load(self, indices):
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.x[index], self.y[index]


def pad_factor_crop(spatial: tuple[int, int], factor: int = 2) -> tuple[tuple[int, int], list[int]]:
    """Canvas (factor*H, factor*W) for content (H, W) and the centred crop [top, left, H, W]."""
    h, w = spatial
    canvas = (factor * h, factor * w)
    return canvas, [(canvas[0] - h) // 2, (canvas[1] - w) // 2, h, w]


class PaddedDataset(Dataset):
    """Zero padding to 2x per side (4x the tokens), as in the paper's Figure 2 experiment.

    The content sits at `crop` = [top, left, height, width] of the padded grid,
    zeros (model space) elsewhere; the loss mask is 1 on the content only, and
    samplers crop before decoding.
    """

    def __init__(self, base: Dataset, name: str):
        self.base = base
        x, _ = base.load(np.arange(1))
        canvas, self.crop = pad_factor_crop(tuple(x.shape[-2:]))
        self.shape = (*x.shape[1:-2], *canvas)
        top, left, h, w = self.crop
        self.loss_mask = torch.zeros(1, 1, *self.shape[1:])
        self.loss_mask[..., top:top + h, left:left + w] = 1
        self.description = {**base.description, "name": name, "crop": list(self.crop)}

    def __len__(self) -> int:
        return len(self.base)

    def load(self, indices):
        x, y = self.base.load(indices)
        top, left, h, w = self.crop
        out = x.new_zeros(len(x), *self.shape)
        out[..., top:top + h, left:left + w] = x
        return out, y
