"""What the trainer needs from a dataset, and the zero-padding wrapper.

A dataset is N samples held in memory or memory-mapped; the trainer asks for
arbitrary index sets (its own seeded order, sharded over ranks), so there is
no iterator state to checkpoint: the data position is just (epoch, index).
"""

from __future__ import annotations

import abc

import numpy as np
import torch


class Dataset(abc.ABC):
    """N class-labelled samples in model space.

    description: the data description stored in `config["data"]` (see `elit_bench.data`).
    loss_mask: None, or a 0/1 float tensor (1, 1, *spatial) marking where the loss counts.
    """

    description: dict
    loss_mask: torch.Tensor | None = None

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def load(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples at `indices` (n,): x float32 (n, C, H, W) or (n, C, T, H, W), y int64 (n,)."""


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
