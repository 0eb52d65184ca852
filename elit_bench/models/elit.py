"""ELIT: the elastic latent interface, one module that wraps any backbone.

    spatial head (B_in blocks) -> Read -> latent core (B_core blocks) -> Write -> spatial tail (B_out)

Spatial tokens are split into G non-overlapping windows (`group_size` tokens
per axis, 2D or 3D). Each group owns J latents, initialised from J learnable
embeddings shared by all groups; in the latent core every latent carries its
group's RoPE phase (the group centre), so latents know where their group is
and, through the embedding, which slot of the group they are. Read and Write
are cross-attention within a group only; the spatial tokens get a learned
position within their group in both (the backbone's RoPE gives them none).

Budget J~ (`budget`, 1..J latents per group) is a forward argument. Tail
dropping keeps the first J~ latents of every group; random dropping keeps J~
random ones. In the paper's variant only kept latents exist past the Read, so
compute scales with J~ (Appendix D). The released code's variant
(`variant="official"`) reads all J latents, runs the core on the kept ones and
restores the dropped ones (their Read output) before the Write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from elit_bench.errors import UserError, choices_error
from elit_bench.models.backbones import Backbone, PlannedModel, initialize_weights, linear_macs
from elit_bench.models.layers import Attention, Mlp, adaln
from elit_bench.models.layout import Grid, LatentSet

READ_KINDS = ("cross", "qformer", "self")
WRITE_KINDS = ("cross", "self")
DROP_KINDS = ("tail", "random")

# The choices where the paper and the released code differ (docs/fidelity.md). Norm flags say
# which inputs of an interface layer are layer-normed: the queries before cross-attention, the
# keys/values (source), and the queries before the MLP (and the Q-Former's self-attention).
VARIANTS = {
    "paper": dict(read_norms=(False, True, True), write_norms=(True, True, True), qk_norm="rms",
                  mlp_bias=True, read_all_latents=False, learned_latent_pos=False, xavier=True),
    "official": dict(read_norms=(False, True, True), write_norms=(False, False, False), qk_norm="width-rms",
                     mlp_bias=False, read_all_latents=True, learned_latent_pos=True, xavier=False),
}


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


def take(x: torch.Tensor, keep: torch.Tensor | int | None) -> torch.Tensor:
    """Latent slots x (1|B, G, J, d) at indices keep (1|B, G, J~) -> (B', G, J~, d).

    keep None: all slots; an int J~: the first J~ (tail dropping, a view instead of a gather)."""
    if keep is None:
        return x
    if isinstance(keep, int):
        return x[:, :, :keep]
    b = max(x.shape[0], keep.shape[0])
    index = keep.expand(b, -1, -1).unsqueeze(-1).expand(-1, -1, -1, x.shape[-1])
    return x.expand(b, -1, -1, -1).gather(2, index)


class InterfaceLayer(nn.Module):
    """Grouped attention from a target stream (queries) to a source stream, then an MLP.

    Read and Write are both this layer; they differ in which stream is the
    target and in whether adaLN-Zero modulation is used (Read: yes, Write: no).
    With modulation, the cross-attention's shift/scale apply to the normed
    source (the spatial tokens, which carry the timestep's information), the
    MLP's to the normed target, and each sublayer's output is gated.
    attention: "cross" (kv = source), "self" (kv = target and source jointly:
    self-attention over the group), "qformer" (self-attention among targets,
    then cross-attention). depth stacks the unit; mlp_ratio 1 = no expansion.
    norms: (queries, source, pre-MLP) layer-norm flags (see `VARIANTS`).
    zero_init_outputs: output projections start at zero, so the layer starts as the identity.
    Shapes: target (B*G, Jt, d), source (B*G, Js, d), c (B, cond_dim).
    """

    def __init__(self, dim: int, num_heads: int, attention: str = "cross", depth: int = 1,
                 mlp_ratio: float = 1.0, cond_dim: int | None = None, norms=(True, True, True),
                 qk_norm="rms", mlp_bias: bool = True, zero_init_outputs: bool = False):
        super().__init__()
        self.kind, self.norms, self.zero_init_outputs = attention, tuple(norms), zero_init_outputs
        per_unit = (["self"] if attention == "qformer" else []) + ["cross", "mlp"]
        self.sublayers = [k for _ in range(depth) for k in per_unit]
        self.layers = nn.ModuleList(
            Mlp(dim, mlp_ratio, bias=mlp_bias) if k == "mlp"
            else Attention(dim, num_heads, cross=(k == "cross"), qk_norm=qk_norm)
            for k in self.sublayers)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)  # no weights: shared by all inputs
        self.adaLN_modulation = adaln(cond_dim, 3 * len(self.sublayers), dim) if cond_dim else None

    def forward(self, target, source, c=None):
        """c (B, cond_dim): modulation is computed once per sample, then shared by its G groups."""
        norm_queries, norm_source, norm_pre = self.norms
        source = self.norm(source) if norm_source else source
        mods = None
        if self.adaLN_modulation is not None:
            groups = target.shape[0] // c.shape[0]
            mod = self.adaLN_modulation(c).repeat_interleave(groups, dim=0)
            mods = mod.unsqueeze(1).chunk(3 * len(self.layers), dim=-1)
        for i, (kind, layer) in enumerate(zip(self.sublayers, self.layers)):
            shift, scale, gate = mods[3 * i: 3 * i + 3] if mods is not None else (None, None, None)
            if kind == "cross":
                h = self.norm(target) if norm_queries else target
                kv = source if mods is None else source * (1 + scale) + shift
                out = layer(h, torch.cat([h, kv], dim=1) if self.kind == "self" else kv)
            else:  # MLP, or the Q-Former's self-attention among the targets
                h = self.norm(target) if norm_pre else target
                out = layer(h if mods is None else h * (1 + scale) + shift)
            target = target + (gate * out if mods is not None else out)
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
    """Write: spatial tokens (queries) pull from their group's latents; no modulation; starts as the identity."""


@dataclass
class ReadState:
    """What the Write needs from the Read: the spatial stream (grouped, with its Read positions) and,
    when every latent was read, all of them and which ones the core kept."""

    spatial: torch.Tensor
    all_latents: torch.Tensor | None = None
    keep: torch.Tensor | int | None = None


class LatentInterface(nn.Module):
    """Latent embeddings, grouping, budgets, Read and Write: everything ELIT adds to a backbone.

    variant: a key of `VARIANTS`. num_groups is needed only for the released
    variant's learned latent positions (one per latent slot of the input grid).
    """

    def __init__(self, dim: int, num_heads: int, cond_dim: int, group_size: tuple[int, ...],
                 latents_per_group: int, read: str = "cross", write: str = "cross", read_depth: int = 1,
                 write_depth: int = 1, mlp_ratio: float = 1.0, drop: str = "tail", variant: str = "paper",
                 num_groups: int | None = None):
        super().__init__()
        for what, value, kinds in (("read", read, READ_KINDS), ("write", write, WRITE_KINDS),
                                   ("drop", drop, DROP_KINDS), ("variant", variant, tuple(VARIANTS))):
            if value not in kinds:
                raise choices_error(f"{what} kind", value, kinds)
        v = VARIANTS[variant]
        self.group_size, self.latents_per_group, self.drop = tuple(group_size), latents_per_group, drop
        self.variant, self.read_all_latents = variant, v["read_all_latents"]
        tokens = math.prod(self.group_size)
        self.latent_embed = nn.Parameter(torch.zeros(latents_per_group, dim))
        self.read_pos = nn.Parameter(torch.zeros(tokens, dim))
        self.write_pos = nn.Parameter(torch.zeros(tokens, dim))
        self.latent_pos = (nn.Parameter(torch.zeros(num_groups * latents_per_group, dim))
                           if v["learned_latent_pos"] else None)
        common = dict(mlp_ratio=mlp_ratio, qk_norm=v["qk_norm"], mlp_bias=v["mlp_bias"])
        self.read = ReadLayer(dim, num_heads, read, read_depth, cond_dim=cond_dim, norms=v["read_norms"], **common)
        self.write = WriteLayer(dim, num_heads, write, write_depth, norms=v["write_norms"],
                                zero_init_outputs=True, **common)

    def check_budget(self, budget) -> int:
        J = self.latents_per_group
        if budget is None:
            return J
        if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= J:
            raise UserError(f"budget {budget!r} is outside 1..{J}: it counts latents kept per group "
                            f"(this model has J={J}; None means all {J})")
        return budget

    def keep_index(self, groups: int, budget: int, device, generator=None) -> torch.Tensor | int | None:
        """Kept latent slots: None (all), J~ (the first J~: tail dropping), or indices (1|B, G, J~) with one
        generator per sample.

        generator: None (global RNG), a torch.Generator, or a sequence of them,
        one per sample, so a sample's random subset does not depend on its batch.
        """
        J = self.latents_per_group
        if budget == J:
            return None
        if self.drop == "tail":
            return budget
        gens = generator if isinstance(generator, (list, tuple)) else [generator]
        scores = torch.stack([torch.rand(groups, J, generator=g, device=g.device if g else device) for g in gens])
        return scores.argsort(dim=-1)[..., :budget].sort(dim=-1).values.to(device)

    def read_latents(self, s, c, grid: Grid, budget: int, keep, group_pos=None):
        """Spatial tokens s (B, N, d) -> kept latents (B, G*J~, d), their LatentSet and the Write's `ReadState`.

        budget: J~ (checked); keep: the plan's `keep_index`."""
        groups = Grid(grid.group_shape(self.group_size), self.group_size)
        G, b, d = groups.num_tokens, s.shape[0], s.shape[-1]
        read_keep = None if self.read_all_latents else keep
        latents = take(self.latent_embed.expand(1, G, -1, -1), read_keep)
        if group_pos is not None:  # learned absolute positions: latents get their group's mean
            latents = latents + group_pos.unsqueeze(1)
        spatial = to_groups(s, grid, self.group_size) + self.read_pos
        target = latents.expand(b, -1, -1, -1).reshape(b * G, latents.shape[2], d)
        out = self.read(target, spatial, c).reshape(b, G, -1, d)
        if self.latent_pos is not None:
            out = out + take(self.latent_pos.view(1, G, -1, d), read_keep)
        state = ReadState(spatial)
        if self.read_all_latents and keep is not None:
            state.all_latents, state.keep = out, keep
            out = take(out, keep)
        return out.reshape(b, G * budget, d), LatentSet(groups, budget), state

    def write_latents(self, latents, grid: Grid, layout: LatentSet, state: ReadState):
        """Latents (B, G*J~, d) from the core -> spatial tokens (B, N, d) updated by the Write."""
        b, d, G = latents.shape[0], latents.shape[-1], layout.num_groups
        latents = latents.reshape(b, G, layout.per_group, d)
        if isinstance(state.keep, int):  # the dropped tail comes back with its Read output
            latents = torch.cat([latents, state.all_latents[:, :, state.keep:]], dim=2)
        elif state.all_latents is not None:  # the dropped latents come back with their Read output
            index = state.keep.expand(b, -1, -1).unsqueeze(-1).expand(-1, -1, -1, d)
            latents = state.all_latents.scatter(2, index, latents)
        target = state.spatial + self.write_pos
        out = self.write(target, latents.reshape(b * G, -1, d))
        return from_groups(out, grid, self.group_size)

    def macs(self, grid: Grid, budget) -> tuple[int, int]:
        budget = self.check_budget(budget)
        G, n = math.prod(grid.group_shape(self.group_size)), math.prod(self.group_size)
        interfaced = self.latents_per_group if self.read_all_latents else budget
        return self.read.macs(G, interfaced, n), self.write.macs(G, n, interfaced)


class ELIT(PlannedModel):
    """A backbone with a latent interface: forward(x, t, y, budget=None) like any model.

    The backbone is a `Backbone`: ELIT calls its embed / run_blocks / unembed and their `macs` twins. A
    second token stream (an MM-DiT's text) lives in the pass's `state`, which the backbone's `run_blocks`
    reads and updates, so it passes the head, the latent core and the tail untouched by Read and Write.

    blocks: (B_in, B_core, B_out), summing to the backbone's depth; Read runs
    after block B_in - 1 and Write after block B_in + B_core - 1. group_size:
    spatial tokens per group and axis (default: the token grid split in 4 per
    spatial axis, i.e. 16 groups for images, and 2 frames for video).
    latents_per_group: J (default: tokens per group, so K = N at full budget).
    variant: "paper" or "official" (the released code's interface, see `VARIANTS`).
    A trained backbone's checkpoint loads under `base_prefix` (`train.init`); the interface keeps its init.
    """

    base_prefix, new_parameters = "backbone.", ("interface.",)

    def __init__(self, backbone: Backbone, blocks=None, group_size=None, latents_per_group=None,
                 read: str = "cross", write: str = "cross", read_depth: int = 1, write_depth: int = 1,
                 interface_mlp_ratio: float = 1.0, drop: str = "tail", variant: str = "paper"):
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
                                         J, read, write, read_depth, write_depth, interface_mlp_ratio, drop,
                                         variant, math.prod(grid.group_shape(group_size)))
        initialize_weights(self.interface, xavier=VARIANTS[variant]["xavier"])
        self.macs()  # walks the configuration: a Read or Write at an incompatible block raises here

    # the attributes every model exposes
    in_channels = property(lambda self: self.backbone.in_channels)
    num_classes = property(lambda self: self.backbone.num_classes)
    input_shape = property(lambda self: self.backbone.input_shape)
    hidden_size = property(lambda self: self.backbone.hidden_size)
    depth = property(lambda self: self.backbone.depth)
    max_budget = property(lambda self: self.interface.latents_per_group)
    t_embedder = property(lambda self: self.backbone.t_embedder)
    runs_dit_blocks = property(lambda self: self.backbone.runs_dit_blocks)  # an MM-DiT's blocks are not DiT blocks

    def _group_pos(self, grid: Grid):
        if self.backbone.pos_embed_kind != "learned":
            return None
        return to_groups(self.backbone.pos_embed, grid, self.interface.group_size).mean(dim=1)

    def plan(self, x, budget=None, patch_size=None, generator=None) -> dict:
        """The backbone's plan plus the budget J~ and the kept latents (`LatentInterface.keep_index`).

        generator: the random source for random dropping: None (global RNG), one
        torch.Generator, or one per sample.
        """
        self.backbone.check_input(x)
        budget = self.interface.check_budget(budget)
        plan = self.static_plan(x, budget, patch_size)
        groups = math.prod(plan["grid"].group_shape(self.interface.group_size))
        keep = self.interface.keep_index(groups, budget, x.device, generator)
        return {**plan, "budget": budget, "keep": keep}

    def shared_plan(self, walk: dict, device) -> dict:
        return self.backbone.shared_plan(walk, device)

    def embed(self, x, t, y, state: dict):
        return self.backbone.embed(x, t, y, state)

    def unembed(self, tokens, c, state: dict):
        return self.backbone.unembed(tokens, c, state)

    def trunk(self, s, c, state: dict):
        """Spatial head -> Read -> latent core -> Write -> spatial tail: tokens (B, N, d) in and out."""
        bb, (b_in, b_core, _), grid = self.backbone, self.blocks, state["grid"]
        s, _ = bb.run_blocks(s, c, grid, 0, b_in, state)
        latents, layout, read = self.interface.read_latents(s, c, grid, state["budget"], state["keep"],
                                                            self._group_pos(grid))
        latents, layout = bb.run_blocks(latents, c, layout, b_in, b_in + b_core, state)
        s = self.interface.write_latents(latents, grid, layout, read)
        return bb.run_blocks(s, c, grid, b_in + b_core, bb.depth, state)[0]

    def macs(self, input_shape=None, budget=None, patch_size=None) -> dict[str, int]:
        """Forward MACs per sample by component; the analytic twin of forward()."""
        return self.walk(input_shape or self.input_shape, budget, patch_size)[0]

    def walk(self, input_shape, budget=None, patch_size=None) -> tuple[dict[str, int], dict]:
        """The analytic pass: MACs by component, and the state it walked (grid, every layout, merges)."""
        bb, (b_in, b_core, _) = self.backbone, self.blocks
        budget = self.interface.check_budget(budget)
        costs, grid, state = bb.macs_embed(input_shape, patch_size)
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
        costs = {**costs, "blocks": head + core + tail, "token_ops": ops1 + ops2 + ops3, "read": read, "write": write}
        return costs, state


def default_blocks(depth: int) -> tuple[int, int, int]:
    """The paper's allocation: XL (28) 4-20-4, B (12) 2-8-2; other depths keep ~1/7 per spatial side."""
    side = {28: 4, 12: 2}.get(depth, max(1, round(depth / 7)))
    return side, depth - 2 * side, side
