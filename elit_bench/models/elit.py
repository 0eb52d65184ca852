"""ELIT: the elastic latent interface, one module that wraps any backbone.

    spatial head (B_in blocks) -> Read -> latent core (B_core blocks) -> Write -> spatial tail (B_out)

Spatial tokens are split into G non-overlapping windows (`group_size` tokens
per axis, 2D or 3D). Each group owns J latents, initialised from J learnable
embeddings shared by all groups; in the latent core every latent carries its
group's RoPE phase (the group centre), so latents know where their group is
and, through the embedding, which slot of the group they are. Read and Write
are cross-attention within a group only.

Budget J~ (`budget`, 1..J latents per group) is a forward argument. Tail
dropping keeps the first J~ latents of every group; random dropping keeps J~
random ones. Only kept latents exist past the Read: the core and the Write
see nothing else, so compute scales with J~.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from elit_bench.errors import UserError, choices_error
from elit_bench.models.backbones import Backbone, initialize_weights, linear_macs
from elit_bench.models.layers import Attention, Mlp, adaln
from elit_bench.models.layout import Grid, LatentSet

READ_KINDS = ("cross", "qformer", "self")
WRITE_KINDS = ("cross", "self")
DROP_KINDS = ("tail", "random")


def to_groups(x: torch.Tensor, grid: Grid, group_size: tuple[int, ...]) -> torch.Tensor:
    """Raster tokens x (B, L, d) -> (B * G, tokens per group, d), groups in raster order."""
    b, _, d = x.shape
    groups = grid.group_shape(group_size)
    n = grid.ndim
    x = x.reshape(b, *(v for g, s in zip(groups, group_size) for v in (g, s)), d)
    perm = [0, *(1 + 2 * i for i in range(n)), *(2 + 2 * i for i in range(n)), 2 * n + 1]
    return x.permute(perm).reshape(b * math.prod(groups), math.prod(group_size), d)


def from_groups(x: torch.Tensor, grid: Grid, group_size: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `to_groups`: (B * G, tokens per group, d) -> raster (B, L, d)."""
    groups = grid.group_shape(group_size)
    n, d = grid.ndim, x.shape[-1]
    x = x.reshape(-1, *groups, *group_size, d)
    perm = [0, *(v for i in range(n) for v in (1 + i, 1 + n + i)), 2 * n + 1]
    return x.permute(perm).reshape(x.shape[0], grid.num_tokens, d)


class InterfaceLayer(nn.Module):
    """Grouped attention from a target stream (queries) to a source stream, then an MLP.

    Read and Write are both this layer; they differ in which stream is the
    target and in whether adaLN-Zero modulation is used (Read: yes, Write: no).
    attention: "cross" (kv = source), "self" (kv = target and source jointly:
    self-attention over the group), "qformer" (self-attention among targets,
    then cross-attention). depth stacks the unit; mlp_ratio 1 = no expansion.
    Shapes: target (B*G, Jt, d), source (B*G, Js, d), c (B, cond_dim).
    """

    def __init__(self, dim: int, num_heads: int, attention: str = "cross", depth: int = 1,
                 mlp_ratio: float = 1.0, cond_dim: int | None = None):
        super().__init__()
        self.kind = attention
        per_unit = (["self"] if attention == "qformer" else []) + ["cross", "mlp"]
        self.sublayers = [k for _ in range(depth) for k in per_unit]
        self.layers = nn.ModuleList(
            Mlp(dim, mlp_ratio) if k == "mlp" else Attention(dim, num_heads, cross=(k == "cross"))
            for k in self.sublayers)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.source_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = adaln(cond_dim, 3 * len(self.sublayers), dim) if cond_dim else None

    def forward(self, target, source, c=None):
        """c (B, cond_dim): modulation is computed once per sample, then shared by its G groups."""
        source = self.source_norm(source)
        mods = None
        if self.adaLN_modulation is not None:
            groups = target.shape[0] // c.shape[0]
            mod = self.adaLN_modulation(c).repeat_interleave(groups, dim=0)
            mods = mod.unsqueeze(1).chunk(3 * len(self.layers), dim=-1)
        for i, (kind, layer) in enumerate(zip(self.sublayers, self.layers)):
            h = self.norm(target)
            if mods is not None:
                h = h * (1 + mods[3 * i + 1]) + mods[3 * i]
            if kind == "cross":
                out = layer(h, torch.cat([h, source], dim=1) if self.kind == "self" else source)
            else:  # MLP, or the Q-Former's self-attention among the targets
                out = layer(h)
            target = target + (mods[3 * i + 2] * out if mods is not None else out)
        return target

    def macs(self, groups: int, target: int, source: int) -> int:
        """MACs per sample for `groups` groups of `target` queries and `source` tokens."""
        total = linear_macs(1, self.adaLN_modulation[1]) if self.adaLN_modulation is not None else 0
        for kind, layer in zip(self.sublayers, self.layers):
            if kind == "mlp":
                total += layer.macs(groups * target)
            elif kind == "self":
                total += layer.macs(target, batches=groups)
            else:
                keys = target + source if self.kind == "self" else source
                total += layer.macs(target, keys, batches=groups)
        return total


class ReadLayer(InterfaceLayer):
    """Read: latents (queries) pull from their group's spatial tokens; adaLN-Zero keeps it timestep-aware."""


class WriteLayer(InterfaceLayer):
    """Write: spatial tokens (queries) pull from their group's kept latents; no modulation."""


class LatentInterface(nn.Module):
    """Latent embeddings, grouping, budgets, Read and Write: everything ELIT adds to a backbone."""

    def __init__(self, dim: int, num_heads: int, cond_dim: int, group_size: tuple[int, ...],
                 latents_per_group: int, read: str = "cross", write: str = "cross", read_depth: int = 1,
                 write_depth: int = 1, mlp_ratio: float = 1.0, drop: str = "tail"):
        super().__init__()
        for what, value, kinds in (("read", read, READ_KINDS), ("write", write, WRITE_KINDS), ("drop", drop, DROP_KINDS)):
            if value not in kinds:
                raise choices_error(f"{what} kind", value, kinds)
        self.group_size, self.latents_per_group, self.drop = tuple(group_size), latents_per_group, drop
        self.latent_embed = nn.Parameter(torch.zeros(latents_per_group, dim))
        self.read = ReadLayer(dim, num_heads, read, read_depth, mlp_ratio, cond_dim=cond_dim)
        self.write = WriteLayer(dim, num_heads, write, write_depth, mlp_ratio)

    def check_budget(self, budget) -> int:
        J = self.latents_per_group
        if budget is None:
            return J
        if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= J:
            raise UserError(f"budget {budget!r} is outside 1..{J}: it counts latents kept per group "
                            f"(this model has J={J}; None means all {J})")
        return budget

    def kept_latents(self, groups: int, budget: int, device, generator=None) -> torch.Tensor:
        """Initial latents of the kept slots: (1, G, J~, d), or (B, G, J~, d) with one generator per sample.

        generator: None (global RNG), a torch.Generator, or a sequence of them,
        one per sample, so a sample's random subset does not depend on its batch.
        """
        J = self.latents_per_group
        if self.drop == "tail" or budget == J:
            return self.latent_embed[:budget].expand(1, groups, -1, -1)
        gens = generator if isinstance(generator, (list, tuple)) else [generator]
        scores = torch.stack([torch.rand(groups, J, generator=g, device=g.device if g else device) for g in gens])
        keep = scores.argsort(dim=-1)[..., :budget].sort(dim=-1).values.to(device)
        return self.latent_embed[keep]

    def read_latents(self, s, c, grid: Grid, budget, group_pos=None, generator=None):
        """Spatial tokens s (B, N, d) -> latents (B, G*J~, d) and their LatentSet."""
        budget = self.check_budget(budget)
        groups = Grid(grid.group_shape(self.group_size), self.group_size)
        G = groups.num_tokens
        latents = self.kept_latents(G, budget, s.device, generator)
        if group_pos is not None:  # learned absolute positions: latents get their group's mean
            latents = latents + group_pos.unsqueeze(1)
        b = s.shape[0]
        target = latents.expand(b, -1, -1, -1).reshape(b * G, budget, -1)
        out = self.read(target, to_groups(s, grid, self.group_size), c)
        return out.reshape(b, G * budget, -1), LatentSet(groups, budget)

    def write_latents(self, s, latents, grid: Grid, layout: LatentSet):
        """Spatial tokens s (B, N, d) updated from latents (B, G*J~, d)."""
        G = layout.num_groups
        target = to_groups(s, grid, self.group_size)
        out = self.write(target, latents.reshape(latents.shape[0] * G, layout.per_group, -1))
        return from_groups(out, grid, self.group_size)

    def macs(self, grid: Grid, budget) -> tuple[int, int]:
        budget = self.check_budget(budget)
        G, n = math.prod(grid.group_shape(self.group_size)), math.prod(self.group_size)
        return self.read.macs(G, budget, n), self.write.macs(G, n, budget)


class ELIT(nn.Module):
    """A backbone with a latent interface: forward(x, t, y, budget=None) like any model.

    blocks: (B_in, B_core, B_out), summing to the backbone's depth; Read runs
    after block B_in - 1 and Write after block B_in + B_core - 1. group_size:
    spatial tokens per group and axis (default: the token grid split in 4 per
    spatial axis, i.e. 16 groups for images, and 2 frames for video).
    latents_per_group: J (default: tokens per group, so K = N at full budget).
    """

    def __init__(self, backbone: Backbone, blocks=None, group_size=None, latents_per_group=None,
                 read: str = "cross", write: str = "cross", read_depth: int = 1, write_depth: int = 1,
                 interface_mlp_ratio: float = 1.0, drop: str = "tail"):
        super().__init__()
        self.backbone = backbone
        depth = backbone.depth
        blocks = tuple(blocks) if blocks is not None else default_blocks(depth)
        if len(blocks) != 3 or sum(blocks) != depth or min(blocks) < 0 or blocks[1] < 1:
            raise UserError(f"blocks (B_in, B_core, B_out) must be 3 counts with B_core >= 1 summing to the "
                            f"depth {depth}, got {blocks}")
        self.blocks = blocks
        grid = backbone._grid(backbone.input_shape, backbone.patch_embedders[0].patch)
        if group_size is None:
            *lead, h, w = grid.shape
            group_size = (*(min(2, t) for t in lead), max(h // 4, 1), max(w // 4, 1))
        group_size = tuple(group_size) if isinstance(group_size, (tuple, list)) else (group_size,) * grid.ndim
        grid.group_shape(group_size)  # raises if it does not tile the grid
        J = latents_per_group or math.prod(group_size)
        self.interface = LatentInterface(backbone.hidden_size, backbone.num_heads, backbone.hidden_size, group_size,
                                         J, read, write, read_depth, write_depth, interface_mlp_ratio, drop)
        initialize_weights(self.interface)
        self.macs()  # walks the configuration: a Read or Write at an incompatible block raises here

    # the attributes every model exposes
    in_channels = property(lambda self: self.backbone.in_channels)
    num_classes = property(lambda self: self.backbone.num_classes)
    input_shape = property(lambda self: self.backbone.input_shape)
    hidden_size = property(lambda self: self.backbone.hidden_size)
    depth = property(lambda self: self.backbone.depth)
    max_budget = property(lambda self: self.interface.latents_per_group)
    t_embedder = property(lambda self: self.backbone.t_embedder)

    def _group_pos(self, grid: Grid):
        pos = self.backbone.pos_embed
        if pos is None:
            return None
        return to_groups(pos, grid, self.interface.group_size).mean(dim=1)

    def embed(self, x, t, y, patch_size=None):
        return self.backbone.embed(x, t, y, patch_size)

    def unembed(self, tokens, c, grid, state):
        return self.backbone.unembed(tokens, c, grid, state)

    def trunk(self, s, c, grid: Grid, state: dict, budget=None, generator=None):
        """Spatial head -> Read -> latent core -> Write -> spatial tail: tokens (B, N, d) in and out.

        generator: the random source for random dropping: None (global RNG), one
        torch.Generator, or one per sample.
        """
        bb, (b_in, b_core, _) = self.backbone, self.blocks
        s, grid = bb.run_blocks(s, c, grid, 0, b_in, state)
        latents, layout = self.interface.read_latents(s, c, grid, budget, self._group_pos(grid), generator)
        latents, layout = bb.run_blocks(latents, c, layout, b_in, b_in + b_core, state)
        s = self.interface.write_latents(s, latents, grid, layout)
        return bb.run_blocks(s, c, grid, b_in + b_core, bb.depth, state)[0]

    def forward(self, x, t, y, budget=None, patch_size=None, generator=None):
        tokens, c, grid, state = self.embed(x, t, y, patch_size)
        return self.unembed(self.trunk(tokens, c, grid, state, budget, generator), c, grid, state)

    def macs(self, input_shape=None, budget=None, patch_size=None) -> dict[str, int]:
        """Forward MACs per sample by component; the analytic twin of forward()."""
        bb, (b_in, b_core, _) = self.backbone, self.blocks
        budget = self.interface.check_budget(budget)
        costs, grid = bb.macs_embed(input_shape or bb.input_shape, patch_size)
        state = {}
        head, ops1, after_head = bb.macs_blocks(grid, 0, b_in, state)
        if after_head != grid:
            raise UserError(f"the Read after block {b_in} would see tokens of layout {after_head}, not the "
                            f"input grid {grid}: place token merges inside the latent core")
        latents = LatentSet(Grid(grid.group_shape(self.interface.group_size), self.interface.group_size), budget)
        core, ops2, after_core = bb.macs_blocks(latents, b_in, b_in + b_core, state)
        if after_core != latents:
            raise UserError(f"the Write after block {b_in + b_core} would see latents of layout {after_core}: "
                            "every token merge of the latent core must be split inside it")
        tail, ops3, _ = bb.macs_blocks(grid, b_in + b_core, bb.depth, state)
        read, write = self.interface.macs(grid, budget)
        return {**costs, "blocks": head + core + tail, "token_ops": ops1 + ops2 + ops3, "read": read, "write": write}


def default_blocks(depth: int) -> tuple[int, int, int]:
    """The paper's allocation: XL (28) 4-20-4, B (12) 2-8-2; other depths keep ~1/7 per spatial side."""
    side = {28: 4, 12: 2}.get(depth, max(1, round(depth / 7)))
    return side, depth - 2 * side, side
