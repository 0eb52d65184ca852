"""Baseline backbones: DiT, U-ViT, HDiT and multi-patch DiT, all from the same `DiTBlock`.

A backbone is patch embedding -> `depth` blocks -> final layer. What makes
U-ViT and HDiT different is a list of token operations run before or after
given blocks (long-skip push/join, 2x2 merge/split). The ELIT wrapper
(`elit.py`) runs the same blocks in three segments, on spatial tokens or on
latents, so baselines and ELIT share the exact block code.

Input x (B, C, H, W) or (B, C, T, H, W); t (B,) in [0, 1]; y (B,) labels
(`num_classes` is the null label). Output: velocity, same shape as x.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.utils.checkpoint
from torch import nn

from elit_bench.errors import UserError
from elit_bench.models.layers import (
    DiTBlock,
    FinalLayer,
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    linear_macs,
    rope_tables,
    sincos_positions,
)
from elit_bench.models.layout import Grid, Layout, Unmerge


def _tuple(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


# ---------------------------------------------------------------- tables on the device, made once
@functools.cache
def device_rope(layout: Layout, head_dim: int, device: torch.device,
                axes_pairs: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables of a layout (anything with `positions()`), built once per device: a forward pass copies
    nothing from the host. axes_pairs: as in `rope_tables`.

    Built outside inference mode, so tables first made while sampling still serve training."""
    with torch.inference_mode(False), torch.no_grad():
        return rope_tables(layout.positions().to(device), head_dim, axes_pairs=axes_pairs)


@functools.cache
def device_unmerge(layout: Layout, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(merge index, inverse) of `Unmerge(layout)` on the device, built once."""
    with torch.inference_mode(False), torch.no_grad():
        unmerge = Unmerge(layout)
        return unmerge.index.to(device), unmerge.inverse.to(device)


# ---------------------------------------------------------------- token operations
class TokenOp(nn.Module):
    """An operation between blocks: forward(x, layout, state) -> (x, layout).

    `state` is a dict living for one forward pass: the plan's device tables
    and the skip and merge stacks; `macs(layout, state)` is the analytic twin:
    (MACs, layout after the op), with a state of layouts instead of tensors.
    """

    def macs(self, layout: Layout, state: dict) -> tuple[int, Layout]:
        return 0, layout


class SkipPush(TokenOp):
    """U-ViT: remember this block's output for the matching late block."""

    def forward(self, x, layout, state):
        state.setdefault("skips", []).append((x, layout))
        return x, layout

    def macs(self, layout, state):
        state.setdefault("skips", []).append((None, layout))
        return 0, layout


class SkipJoin(TokenOp):
    """U-ViT long skip: concatenate the remembered tokens, Linear 2d -> d."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(2 * dim, dim)

    def _pop(self, layout, state):
        skip, skip_layout = state["skips"].pop()
        if skip_layout != layout:
            raise UserError(
                f"a U-ViT long skip joins tokens of layout {skip_layout} into {layout}; with ELIT the "
                "spatial head and tail must have the same number of blocks (B_in == B_out)")
        return skip

    def forward(self, x, layout, state):
        return self.linear(torch.cat([x, self._pop(layout, state)], dim=-1)).to(x.dtype), layout

    def macs(self, layout, state):
        self._pop(layout, state)
        return linear_macs(layout.num_tokens, self.linear), layout


class TokenMerge(TokenOp):
    """HDiT down-sampling: each 2x2 token neighbourhood (or 4 latents of a group) -> one token.

    Concatenates the 4 tokens (4d) and projects to `out_dim` (2d in HDiT).
    """

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(4 * dim, out_dim)

    def forward(self, x, layout, state):
        state.setdefault("merges", []).append((x, layout))
        index = state["unmerge"][layout][0]
        padded = torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[2])], dim=1)  # row L = padding
        return self.linear(padded[:, index].flatten(2)).to(x.dtype), layout.merged()

    def macs(self, layout, state):
        state.setdefault("merges", []).append(layout)
        state.setdefault("merged", set()).add(layout)  # the plan builds its unmerge tables
        merged = layout.merged()
        return linear_macs(merged.num_tokens, self.linear), merged


class TokenSplit(TokenOp):
    """HDiT up-sampling: undo the last merge (Linear -> 4 tokens), plus the pre-merge tokens as a skip."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 4 * out_dim)

    def forward(self, x, layout, state):
        skip, before = state["merges"].pop()
        y = self.linear(x).unflatten(-1, (4, -1)).flatten(1, 2)
        return skip + y[:, state["unmerge"][before][1]], before

    def macs(self, layout, state):
        return linear_macs(layout.num_tokens, self.linear), state["merges"].pop()


# ---------------------------------------------------------------- the forward pass of every model
class PlannedModel(nn.Module):
    """forward = compute(x, t, y, plan(x, budget, patch_size, generator)).

    `plan` is the Python side of a pass: input checks, the token grid, the
    budget and the kept latents (random dropping draws them here, from the
    caller's generators), and the RoPE / merge tables of every layout the pass
    visits, cached on the device. `compute` is tensors only, so
    `compile_model` compiles it alone: one graph per (budget, patch, batch
    shape), nothing drawn or copied from the host inside it.
    """

    # the trunk runs each DiTBlock once per pass through `DiTBlock.forward`, so TaylorSeer can forecast its
    # sublayers (flow/taylorseer.py); a model that runs its blocks another way (DyDiT) sets it False
    runs_dit_blocks = True

    def forward(self, x, t, y, budget=None, patch_size=None, generator=None):
        return self.compute(x, t, y, self.plan(x, budget, patch_size, generator))[0]

    def static_plan(self, x, budget, patch_size) -> dict:
        """The plan's part that depends on shapes only (`shared_plan` of the analytic `walk`), made once per
        (input shape, budget, patchifier, device): later passes pay a dict lookup, not a walk of the blocks."""
        key = (tuple(x.shape[2:]), budget, patch_size, x.device)
        plans = self.__dict__.setdefault("_static_plans", {})
        if key not in plans:
            plans[key] = self.shared_plan(self.walk(x.shape[2:], budget, patch_size)[1], x.device)
        return plans[key]

    def compute(self, x, t, y, plan: dict, residual=None, keep_residual: bool = False):
        """-> (velocity like x, trunk residual or None).

        With `residual` (B, L, d) the trunk is skipped and the residual added to
        the embedded tokens (TeaCache); with `keep_residual` the trunk's residual
        (output - input) is returned for reuse.
        """
        state = dict(plan)  # the pass's skip and merge stacks stay out of the plan
        tokens, c = self.embed(x, t, y, state)
        if residual is not None:
            out = tokens + residual
        else:
            out = self.trunk(tokens, c, state)
            residual = out - tokens if keep_residual else None
        return self.unembed(out, c, state), residual


# ---------------------------------------------------------------- backbone
class Backbone(PlannedModel):
    """Patch embedding -> `depth` shared DiT blocks (with token ops between them) -> final layer.

    input_size: latent spatial size (int or (H, W)); frames: latent frames for
    video (None for images); patch_size: int, (ph, pw) or (pt, ph, pw).
    pos_embed: "rope" (axial RoPE in every self-attention), "learned"
    (absolute embeddings, the zero-padding experiment of Fig. 2) or "sincos"
    (fixed 2D sin-cos added once, as SiT and the released ELIT do).
    qk_norm: the blocks' QK normalisation (`layers.QK_NORMS`).
    time_scale: what t is multiplied by before its sinusoidal features (1000 here, 1 in SiT).
    time_reversed: the weights were trained with t = 1 at noise and v = noise - data
    (the released ELIT / REPA convention): the forward feeds 1 - t and negates the
    output, so callers always see t = 0 at noise and v = data - noise.
    """

    def __init__(self, *, input_size=32, in_channels: int = 16, patch_size=2, hidden_size: int = 1152,
                 depth: int = 28, num_heads: int = 16, num_classes: int = 1000, mlp_ratio: float = 4.0,
                 frames: int | None = None, pos_embed: str = "rope", qk_norm="rms", time_scale: float = 1000.0,
                 time_reversed: bool = False):
        super().__init__()
        ndim = 2 if frames is None else 3
        size = _tuple(input_size, 2)
        self.input_shape = size if frames is None else (frames, *size)
        patch = _tuple(patch_size, 2)
        if ndim == 3 and len(patch) == 2:
            patch = (1, *patch)
        if pos_embed not in ("rope", "learned", "sincos"):
            raise UserError(f"unknown pos_embed {pos_embed!r}; valid choices: rope, learned, sincos")
        self.in_channels, self.num_classes, self.hidden_size, self.depth = in_channels, num_classes, hidden_size, depth
        self.num_heads, self.mlp_ratio, self.pos_embed_kind = num_heads, mlp_ratio, pos_embed
        self.qk_norm, self.time_reversed = qk_norm, time_reversed
        self.head_dim = hidden_size // num_heads
        self.max_budget = None  # baselines have no latent interface
        self.patch_embedders = nn.ModuleList([PatchEmbed(p, in_channels, hidden_size) for p in self.patch_sizes(patch)])
        self.final_layers = nn.ModuleList([FinalLayer(hidden_size, p, in_channels) for p in self.patch_sizes(patch)])
        self.t_embedder = TimestepEmbedder(hidden_size, t_scale=time_scale)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        grid = self._grid(self.input_shape, self.patch_embedders[0].patch)
        if pos_embed == "sincos":  # a function of the grid, not a weight: kept out of the state dict
            self.register_buffer("pos_embed", sincos_positions(grid.shape, hidden_size)[None], persistent=False)
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid.num_tokens, hidden_size)) if pos_embed == "learned" else None
        self.blocks = nn.ModuleList(self.build_blocks())
        ops_before, ops_after = self.build_ops()
        self.ops_before = nn.ModuleDict({str(i): nn.ModuleList(v) for i, v in ops_before.items()})
        self.ops_after = nn.ModuleDict({str(i): nn.ModuleList(v) for i, v in ops_after.items()})
        initialize_weights(self)

    # -- what subclasses change
    def patch_sizes(self, patch: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [patch]

    def build_blocks(self) -> list[nn.Module]:
        return [DiTBlock(self.hidden_size, self.num_heads, mlp_ratio=self.mlp_ratio, qk_norm=self.qk_norm)
                for _ in range(self.depth)]

    def build_ops(self) -> tuple[dict[int, list[TokenOp]], dict[int, list[TokenOp]]]:
        """Token ops to run before / after block i."""
        return {}, {}

    # -- the plan of a pass: grid, checks, device tables
    def _grid(self, shape, patch) -> Grid:
        if len(shape) != len(patch) or any(s % p for s, p in zip(shape, patch)):
            raise UserError(f"input size {tuple(shape)} is not divisible by patch size {patch}")
        return Grid(tuple(s // p for s, p in zip(shape, patch)))

    def _patch_index(self, patch_size) -> int:
        sizes = [e.patch for e in self.patch_embedders]
        if patch_size is None:
            return 0
        key = _tuple(patch_size, len(sizes[0]))
        if key not in sizes:
            raise UserError(f"patch size {patch_size} is not one of this model's patchifiers {sizes}")
        return sizes.index(key)

    def token_grid(self, shape, p: int) -> Grid:
        """The token grid of input `shape` under patchifier p; a coarser patchifier keeps RoPE positions
        in units of the finest token grid."""
        patch = self.patch_embedders[p].patch
        grid = self._grid(shape, patch)
        if p:
            base = self.patch_embedders[0].patch
            grid = Grid(grid.shape, tuple(a / b for a, b in zip(patch, base)))
        return grid

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 2 + len(self.input_shape) or x.shape[1] != self.in_channels:
            want = "(B, C, T, H, W)" if len(self.input_shape) == 3 else "(B, C, H, W)"
            raise UserError(f"expected input {want} with C={self.in_channels}, got {tuple(x.shape)}")

    def shared_plan(self, walk: dict, device) -> dict:
        """The plan's part every model shares, from the analytic walk of its pass (`walk`): patchifier,
        token grid, and the device tables of every layout the pass visits."""
        grid = walk["grid"]
        if self.pos_embed is not None and grid.num_tokens != self.pos_embed.shape[1]:
            raise UserError("absolute position embeddings fix the input size: "
                            f"built for {self.pos_embed.shape[1]} tokens, got {grid.num_tokens}")
        rope = ({layout: device_rope(layout, self.head_dim, device) for layout in walk["layouts"]}
                if self.pos_embed_kind == "rope" else {})
        unmerge = {layout: device_unmerge(layout, device) for layout in walk.get("merged", ())}
        return {"patch": walk["patch"], "grid": grid, "rope": rope, "unmerge": unmerge}

    def plan(self, x, budget=None, patch_size=None, generator=None) -> dict:
        """The Python side of a pass (see `PlannedModel`): checks, grid, device tables."""
        if budget is not None:
            raise UserError(f"{type(self).__name__} has no latent interface: budget must be None")
        self.check_input(x)
        return self.static_plan(x, None, patch_size)

    # -- the tensor side in pieces, so ELIT can run the blocks in segments
    def embed(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, state: dict):
        """-> tokens (B, L, d), conditioning (B, d)."""
        embedder = self.patch_embedders[state["patch"]]
        tokens = embedder(x)
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed
        # one residual-stream dtype for every model: the weights' (fp32 under autocast, where the
        # patch embedding returns bf16); see docs/precision-and-compile.md
        tokens = tokens.to(embedder.proj.weight.dtype)
        state["t_emb"] = self.t_embedder(1 - t if self.time_reversed else t)  # DyDiT's width routers read it
        c = state["t_emb"] + self.y_embedder(y)
        return tokens, c

    def rope(self, layout: Layout, state: dict):
        return state["rope"][layout] if self.pos_embed_kind == "rope" else None

    checkpoint_blocks = False  # train.activation_checkpointing: blocks recompute their activations in backward

    def run_blocks(self, x, c, layout: Layout, start: int, stop: int, state: dict):
        """Apply blocks start..stop-1 (and their token ops) -> (x, layout).

        With `checkpoint_blocks` (and gradients on) each block keeps only its input for backward and runs
        again there; the token ops (which push and pop `state`) are not recomputed."""
        checkpoint = self.checkpoint_blocks and torch.is_grad_enabled()
        for i in range(start, stop):
            for op in self._ops(self.ops_before, i):
                x, layout = op(x, layout, state)
            rope = self.rope(layout, state)
            if checkpoint:
                x = torch.utils.checkpoint.checkpoint(self.blocks[i], x, c, rope=rope, use_reentrant=False)
            else:
                x = self.blocks[i](x, c, rope=rope)
            for op in self._ops(self.ops_after, i):
                x, layout = op(x, layout, state)
        return x, layout

    def unembed(self, x, c, state: dict) -> torch.Tensor:
        out = self.final_layers[state["patch"]](x, c, state["grid"].shape)
        return -out if self.time_reversed else out

    def trunk(self, tokens, c, state: dict):
        """All blocks, embedded tokens in, tokens out (B, L, d); TeaCache caches its residual."""
        return self.run_blocks(tokens, c, state["grid"], 0, self.depth, state)[0]

    # -- analytic FLOPs, walking the same blocks and ops
    def macs_embed(self, input_shape, patch_size=None) -> tuple[dict[str, int], Grid, dict]:
        """-> embed and final MACs, the token grid, and the walk's state (patchifier, grid)."""
        p = self._patch_index(patch_size)
        grid = self.token_grid(tuple(input_shape), p)
        costs = {"embed": self.patch_embedders[p].macs(grid.num_tokens) + self.t_embedder.macs(),
                 "final": self.final_layers[p].macs(grid.num_tokens)}
        return costs, grid, {"patch": p, "grid": grid}

    def _ops(self, table: nn.ModuleDict, i: int):
        return table[str(i)] if str(i) in table else ()

    def macs_blocks(self, layout: Layout, start: int, stop: int, state: dict) -> tuple[int, int, Layout]:
        """Analytic twin of `run_blocks` -> (block MACs, token-op MACs, layout after)."""
        blocks = ops = 0
        for i in range(start, stop):
            for op in self._ops(self.ops_before, i):
                m, layout = op.macs(layout, state)
                ops += m
            state.setdefault("layouts", set()).add(layout)  # the plan builds their RoPE tables
            blocks += self.blocks[i].macs(layout.num_tokens)
            for op in self._ops(self.ops_after, i):
                m, layout = op.macs(layout, state)
                ops += m
        return blocks, ops, layout

    def walk(self, input_shape, budget=None, patch_size=None) -> tuple[dict[str, int], dict]:
        """The analytic pass: MACs by component, and the state it walked (grid, every layout, merges)."""
        if budget is not None:
            raise UserError(f"{type(self).__name__} has no latent interface: budget must be None")
        costs, grid, state = self.macs_embed(input_shape, patch_size)
        blocks, ops, _ = self.macs_blocks(grid, 0, self.depth, state)
        return {**costs, "blocks": blocks, "token_ops": ops}, state

    def macs(self, input_shape=None, budget=None, patch_size=None) -> dict[str, int]:
        """Forward MACs per sample by component (embed, final, blocks, token_ops)."""
        return self.walk(input_shape or self.input_shape, budget, patch_size)[0]


class DiT(Backbone):
    """DiT (Peebles & Xie) with QK-norm and RoPE: the reference backbone."""


class SiT(Backbone):
    """SiT as released (and as the ELIT code's baseline): fixed sin-cos positions, no RoPE, no QK-norm
    by default, t fed unscaled, trained with t = 1 at noise (see `time_reversed`)."""

    def __init__(self, *, pos_embed: str = "sincos", qk_norm=None, time_scale: float = 1.0,
                 time_reversed: bool = True, in_channels: int = 4, **kw):
        super().__init__(pos_embed=pos_embed, qk_norm=qk_norm, time_scale=time_scale,
                         time_reversed=time_reversed, in_channels=in_channels, **kw)


class UViT(Backbone):
    """U-ViT: DiT blocks plus U-Net-style long skips (concatenate, Linear 2d -> d).

    With depth D there are (D - 1) // 2 skips: the first that many blocks push
    their output, the last that many join it (13 at XL, which reproduces the
    paper's TF and parameter count), the blocks in between are the middle.
    """

    def build_ops(self):
        n = (self.depth - 1) // 2
        after = {i: [SkipPush()] for i in range(n)}
        before = {self.depth - n + k: [SkipJoin(self.hidden_size)] for k in range(n)}
        return before, after


class HDiT(Backbone):
    """HDiT-style hierarchy: one 2x2 token merge before block `merge_at`, split before `split_at`.

    Blocks in between run at `inner_width_mult` x width on 4x fewer tokens
    (full attention, no local attention). Defaults scale the paper's XL choice
    (merge at block 8 and split at block 20 of 28) to any depth.
    """

    def __init__(self, *, merge_at: int | None = None, split_at: int | None = None,
                 inner_width_mult: int = 2, **kw):
        depth = kw.get("depth", 28)
        self.merge_at = round(depth * 2 / 7) if merge_at is None else merge_at
        self.split_at = round(depth * 5 / 7) if split_at is None else split_at
        self.inner_width_mult = inner_width_mult
        if not 0 < self.merge_at < self.split_at <= depth:
            raise UserError(f"HDiT needs 0 < merge_at < split_at <= depth, got {self.merge_at}, {self.split_at}, {depth}")
        super().__init__(**kw)

    def inner(self, i: int) -> bool:
        return self.merge_at <= i < self.split_at

    def build_blocks(self):
        d, wide = self.hidden_size, self.hidden_size * self.inner_width_mult
        return [DiTBlock(wide, wide // self.head_dim, cond_dim=d, mlp_ratio=self.mlp_ratio, qk_norm=self.qk_norm)
                if self.inner(i) else DiTBlock(d, self.num_heads, mlp_ratio=self.mlp_ratio, qk_norm=self.qk_norm)
                for i in range(self.depth)]

    def build_ops(self):
        d, wide = self.hidden_size, self.hidden_size * self.inner_width_mult
        before = {self.merge_at: [TokenMerge(d, wide)]}
        if self.split_at < self.depth:
            before[self.split_at] = [TokenSplit(wide, d)]
        else:
            raise UserError("HDiT needs split_at < depth so the output is back at full resolution")
        return before, {}


class MultiPatchDiT(Backbone):
    """FlexiDiT-like baseline: one DiT trunk with several patchifiers (default 2x2 and 4x4).

    The patchifier is chosen per call with forward(..., patch_size=p); the
    first one is the default.
    """

    def __init__(self, *, patch_sizes=(2, 4), **kw):
        self.patch_options = tuple(patch_sizes)
        kw["patch_size"] = patch_sizes[0]
        super().__init__(**kw)

    def patch_sizes(self, patch):
        n = len(patch)
        return [(1, *_tuple(p, 2)) if n == 3 else _tuple(p, 2) for p in self.patch_options]


# ---------------------------------------------------------------- weight init (one place)
def initialize_weights(module: nn.Module, xavier: bool = True) -> None:
    """DiT's initialisation: xavier Linear, N(0, 0.02) embeddings, zero adaLN and output layers.

    xavier=False leaves Linear layers at PyTorch's default init (the released ELIT
    code builds its Read/Write after SiT's init has run). A module with
    `zero_init_outputs` (Write) gets zero attention output projections and MLP
    last layers, so it starts as the identity.
    """
    for m in module.modules():
        if xavier and isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for name, m in module.named_modules():
        if isinstance(m, TimestepEmbedder):
            for lin in (m.mlp[0], m.mlp[2]):
                nn.init.normal_(lin.weight, std=0.02)
        elif isinstance(m, LabelEmbedder):
            nn.init.normal_(m.embedding_table.weight, std=0.02)
        elif isinstance(m, FinalLayer):
            nn.init.zeros_(m.linear.weight)
            nn.init.zeros_(m.linear.bias)
        if name.endswith("adaLN_modulation"):
            nn.init.zeros_(m[1].weight)
            nn.init.zeros_(m[1].bias)
        if getattr(m, "zero_init_outputs", False):
            for sub in m.modules():
                for lin in (getattr(sub, "proj", None), getattr(sub, "fc2", None)):
                    if isinstance(lin, nn.Linear):
                        nn.init.zeros_(lin.weight)
                        if lin.bias is not None:
                            nn.init.zeros_(lin.bias)
    for name, p in module.named_parameters():
        if name.endswith(("pos_embed", "latent_embed", "read_pos", "write_pos", "latent_pos")):
            nn.init.normal_(p, std=0.02)


def param_count(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
