"""Token layouts: where each token of a sequence sits, for RoPE and for merges.

A sequence is either spatial tokens on a regular grid (`Grid`, raster order,
2D `(H, W)` or 3D `(T, H, W)`) or the latents of the ELIT interface
(`LatentSet`: `G` groups of `J` tokens, group-major). Layouts are plain
Python values: the forward pass and the analytic FLOPs count walk the same
layouts, so the token counts they use cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from elit_bench.errors import UserError


@dataclass(frozen=True)
class Grid:
    """Spatial tokens on a regular grid, raster order.

    shape: tokens per axis, e.g. (16, 16) or (8, 16, 16).
    spacing: distance between neighbouring tokens in units of the finest grid,
        so a merged grid keeps RoPE positions comparable to the unmerged one.
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...] | None = None

    @property
    def num_tokens(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _spacing(self) -> tuple[float, ...]:
        return self.spacing or (1.0,) * self.ndim

    def positions(self) -> torch.Tensor:
        """(L, ndim) float coordinates of token centres."""
        # centre of token i at spacing s: (i + 0.5) s - 0.5, so a merged 2x2 token sits
        # between the four fine tokens it replaced
        axes = [(torch.arange(n, dtype=torch.float32) + 0.5) * s - 0.5
                for n, s in zip(self.shape, self._spacing())]
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=-1)

    def merge_index(self) -> torch.Tensor:
        """(L/4, 4) indices of each 2x2 spatial neighbourhood (time axis untouched)."""
        *lead, h, w = self.shape
        if h % 2 or w % 2:
            raise UserError(f"a 2x2 token merge needs an even token grid, got {self.shape}")
        idx = torch.arange(self.num_tokens).view(*lead, h // 2, 2, w // 2, 2)
        nl = len(lead)
        perm = (*range(nl), nl, nl + 2, nl + 1, nl + 3)
        return idx.permute(perm).reshape(-1, 4)

    def merged(self) -> Grid:
        *lead, h, w = self.shape
        *slead, sh, sw = self._spacing()
        return Grid((*lead, h // 2, w // 2), (*slead, sh * 2, sw * 2))

    def group_shape(self, group_size: tuple[int, ...]) -> tuple[int, ...]:
        """Number of groups per axis; the group size must tile the grid."""
        if len(group_size) != self.ndim or any(n % g for n, g in zip(self.shape, group_size)):
            valid = [tuple(d for d in range(1, n + 1) if n % d == 0) for n in self.shape]
            raise UserError(
                f"group size {tuple(group_size)} does not tile the token grid {self.shape}; "
                f"valid sizes per axis: {valid}")
        return tuple(n // g for n, g in zip(self.shape, group_size))


@dataclass(frozen=True)
class LatentSet:
    """ELIT latents: `per_group` tokens for each group of a spatial grid, group-major.

    groups: the grid of groups; its token positions are the group centres in
        units of the spatial token grid, which is the RoPE phase every latent of
        the group gets.
    """

    groups: Grid
    per_group: int

    @property
    def num_groups(self) -> int:
        return self.groups.num_tokens

    @property
    def num_tokens(self) -> int:
        return self.num_groups * self.per_group

    def positions(self) -> torch.Tensor:
        return self.groups.positions().repeat_interleave(self.per_group, dim=0)

    def merge_index(self) -> torch.Tensor:
        """(G * ceil(J/4), 4) indices merging 4 consecutive latents of a group.

        A group whose count is not a multiple of 4 is padded: index `num_tokens`
        points at a zero row the caller appends.
        """
        merged = self.merged().per_group
        local = torch.arange(merged * 4).view(merged, 4)
        base = torch.arange(self.num_groups).view(-1, 1, 1) * self.per_group
        idx = base + local
        idx = torch.where(local < self.per_group, idx, torch.full_like(idx, self.num_tokens))
        return idx.reshape(-1, 4)

    def merged(self) -> LatentSet:
        return LatentSet(self.groups, -(-self.per_group // 4))


Layout = Grid | LatentSet


@dataclass(frozen=True)
class Unmerge:
    """What a split needs to undo a merge: the layout before it and the gather index."""

    layout: Layout

    @cached_property
    def index(self) -> torch.Tensor:
        return self.layout.merge_index()

    @cached_property
    def inverse(self) -> torch.Tensor:
        """Where each pre-merge token sits among the 4 * L' split outputs (padding slots sort last)."""
        return torch.argsort(self.index.flatten(), stable=True)[: self.layout.num_tokens]
