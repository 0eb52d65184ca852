"""ToMe for diffusion (Bolya & Hoffman, 2023): training-free token merging inside the DiT blocks.

In every block that merges, the block input x (B, L, d) is split into dst
tokens, one per 2x2 window of the token grid, and src tokens, the other 3 of
each window. Each src token is matched to its most similar dst token by the
cosine similarity of x (bipartite soft matching); the r = int(ratio * L) src
tokens with the highest similarity are merged into their dst, by averaging
(a dst with k src tokens becomes their mean with it, k + 1 tokens). A sublayer
(attention by default, the MLP with `merge_mlp`) then runs on the L - r merged
tokens, and its output is unmerged: every token gets the output of the
merged token it belongs to. The residual stream itself is never merged.

Choices of this harness (docs/zoo.md, ToMe section):
- which window member is dst: drawn at random per block and window, once, from
  `seed` (`random_dst`), or the top-left one (`random_dst=False`). The draw
  does not depend on the sample, the batch, the pass or the step, so the
  conditional and unconditional passes of a step share their dst tokens and a
  sample's output does not depend on its batch.
- positions: a merged token keeps its dst token's RoPE phase.
- ELIT: only the spatial head and tail blocks merge; the latent core runs
  unchanged (its budget J~ is ELIT's own knob on the core's tokens).
- FLOPs: a block's `macs` counts each sublayer at its merged count plus the
  matching (the src x dst similarity matmul: (L - L/4) * L/4 * d MACs).
- the dst/src tables are made by `apply_tome` on the model's device (apply it
  after moving the model), so a pass, compiled or not, only looks them up.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from elit_bench.errors import UserError
from elit_bench.models.backbones import Backbone
from elit_bench.models.elit import ELIT
from elit_bench.models.layers import DiTBlock
from elit_bench.models.layout import Grid
from elit_bench.models.tread import TREAD

MAX_RATIO = 0.75  # with one dst per 2x2 window, at most the 3 src tokens of every window merge


def merged_away(tokens: int, ratio: float) -> int:
    """r: tokens a block merges away (tomesd: int(L * ratio)); the forward and `counts` share it."""
    return int(tokens * ratio)


@functools.cache
def partition(grid: Grid, depth: int, seed: int | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """dst (depth, L/4) and src (depth, 3L/4) token indices of every block, ascending, on the device.

    Row i is block i's split: one dst per 2x2 window (`Grid.merge_index`), chosen by a draw from
    torch.Generator(seed) (the same for every sample and pass), or the top-left one when seed is None.
    """
    with torch.inference_mode(False), torch.no_grad():
        windows = grid.merge_index()  # (W, 4), raster order within each window
        W = windows.shape[0]
        if seed is None:
            pick = torch.zeros(depth, W, dtype=torch.long)
        else:
            pick = torch.randint(4, (depth, W), generator=torch.Generator().manual_seed(seed))
        is_dst = torch.zeros(depth, grid.num_tokens, dtype=torch.bool)
        is_dst.scatter_(1, windows[torch.arange(W), pick], True)
        order = torch.argsort(is_dst.to(torch.int8), dim=1, descending=True, stable=True)  # dst, then src
        return order[:, :W].to(device), order[:, W:].to(device)


@torch.no_grad()
def bipartite_soft_matching(metric: torch.Tensor, dst: torch.Tensor, src: torch.Tensor, r: int):
    """Which src tokens merge, and into which dst (ToMe's bipartite soft matching).

    metric (B, L, c); dst (Nd,), src (Ns,) token indices; r <= Ns.
    -> kept (B, Ns - r) and merged (B, r), positions in `src`; into (B, r), positions in `dst`:
    the r src tokens most similar (cosine) to their best dst, each with that dst.
    """
    metric = metric / metric.norm(dim=-1, keepdim=True)
    scores = metric[:, src] @ metric[:, dst].transpose(1, 2)  # (B, Ns, Nd)
    best, nearest = scores.max(dim=-1)
    order = best.sort(dim=-1, descending=True, stable=True).indices
    merged, kept = order[:, :r], order[:, r:]
    return kept, merged, nearest.gather(1, merged)


@dataclass
class Merge:
    """One block's merge of L tokens into L' = L - r, for a batch.

    row (B, L): the merged token each token belongs to; home (B, L'): the token whose position
    each merged token takes (itself, or the dst of a merge). rope: the RoPE tables at `home`
    ((B, 1, L', hd/2) each, broadcast over heads), or None for a model without RoPE.
    """

    row: torch.Tensor
    home: torch.Tensor
    rope: tuple[torch.Tensor, torch.Tensor] | None

    def merge(self, h: torch.Tensor) -> torch.Tensor:
        """(B, L, c) -> (B, L', c): each merged token is the mean of its members."""
        out = h.new_zeros(h.shape[0], self.home.shape[1], h.shape[2])
        return out.scatter_reduce(1, self.row.unsqueeze(-1).expand_as(h), h, reduce="mean", include_self=False)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, L', c) -> (B, L, c): every token gets its merged token's value."""
        return y.gather(1, self.row.unsqueeze(-1).expand(-1, -1, y.shape[2]))

    @classmethod
    def match(cls, x: torch.Tensor, dst: torch.Tensor, src: torch.Tensor, r: int, rope=None) -> Merge:
        """The merge of x (B, L, d) by `bipartite_soft_matching` on x itself (tomesd's metric)."""
        b, L, _ = x.shape
        kept, merged, into = bipartite_soft_matching(x, dst, src, r)
        nk, nd = kept.shape[1], dst.shape[0]
        # merged tokens in order: the kept src tokens, then the dst tokens
        row = torch.empty(b, L, dtype=torch.long, device=x.device)
        row[:, dst] = torch.arange(nk, nk + nd, device=x.device)
        row.scatter_(1, src[kept], torch.arange(nk, device=x.device).expand(b, -1))
        row.scatter_(1, src[merged], into + nk)
        home = torch.cat([src[kept], dst.expand(b, -1)], dim=1)
        if rope is not None:
            rope = tuple(t[home].unsqueeze(1) for t in rope)
        return cls(row, home, rope)


class BlockMerging:
    """The hook `apply_tome` puts on one `DiTBlock` (`DiTBlock.token_merge`).

    grids: the token grid of each token count this block can see (set up by `apply_tome`).
    Called on the block input x (B, L, d) and its RoPE tables -> (attention merge, MLP merge),
    each a `Merge` or None.
    """

    def __init__(self, index: int, depth: int, width: int, grids: dict[int, Grid], ratio: float,
                 merge_attn: bool, merge_mlp: bool, seed: int | None):
        self.index, self.depth, self.width, self.grids = index, depth, width, grids
        self.ratio, self.merge_attn, self.merge_mlp, self.seed = ratio, merge_attn, merge_mlp, seed
        self.splits: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}  # (L, device) -> dst, src

    def split(self, tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """This block's (dst, src) indices on `device`; `apply_tome` makes them for the model's device, so
        a compiled pass only looks them up."""
        key = (tokens, str(device))
        if key not in self.splits:
            self.splits[key] = tuple(t[self.index] for t in partition(self.grid(tokens), self.depth, self.seed, device))
        return self.splits[key]

    def grid(self, tokens: int) -> Grid:
        if tokens not in self.grids:
            shapes = ", ".join(f"{g.shape} ({n} tokens)" for n, g in self.grids.items())
            raise UserError(f"ToMe was set up for the token grids {shapes}, not {tokens} tokens: call "
                            "apply_tome(model, ratio, input_shape=...) with this input's latent size")
        return self.grids[tokens]

    def __call__(self, x: torch.Tensor, rope=None):
        L = x.shape[1]
        dst, src = self.split(L, x.device)
        r = merged_away(L, self.ratio)
        if r == 0:
            return None, None
        merge = Merge.match(x, dst, src, r, rope)
        return (merge if self.merge_attn else None), (merge if self.merge_mlp else None)

    def counts(self, tokens: int) -> tuple[int, int, int]:
        """Analytic twin: (attention tokens, MLP tokens, matching MACs) of a block on `tokens` tokens."""
        self.grid(tokens)
        r = merged_away(tokens, self.ratio)
        if r == 0:
            return tokens, tokens, 0
        dst = tokens // 4
        merged = tokens - r
        return (merged if self.merge_attn else tokens, merged if self.merge_mlp else tokens,
                (tokens - dst) * dst * self.width)


def spatial_blocks(model) -> tuple[Backbone, range | list[int]]:
    """(backbone, indices of the blocks that see spatial tokens): every block of a backbone; for
    ELIT the head and tail (the core runs on latents)."""
    if isinstance(model, ELIT) and all(isinstance(b, DiTBlock) for b in model.backbone.blocks):
        b_in, b_core, _ = model.blocks
        depth = model.backbone.depth
        return model.backbone, [*range(b_in), *range(b_in + b_core, depth)]
    if isinstance(model, TREAD):  # it samples as its backbone
        model = model.backbone
    if isinstance(model, Backbone) and all(isinstance(b, DiTBlock) for b in model.blocks):
        return model, range(model.depth)
    raise UserError(f"ToMe applies to this harness's backbones (DiT, U-ViT, HDiT, multi-patch DiT, SiT), their "
                    f"ELIT and TREAD versions, not {type(model).__name__}")


def token_grids(model, backbone: Backbone, input_shape) -> dict[int, Grid]:
    """Every spatial token grid a pass of `model` visits (each patchifier; HDiT's merged grid), by token count."""
    grids: dict[int, Grid] = {}
    for embedder in backbone.patch_embedders:
        layouts = model.walk(tuple(input_shape), None, embedder.patch)[1]["layouts"]
        for grid in (g for g in layouts if isinstance(g, Grid)):
            if grids.setdefault(grid.num_tokens, grid).shape != grid.shape:
                raise UserError(f"ToMe cannot tell the token grids {grids[grid.num_tokens].shape} and {grid.shape} "
                                "apart (same token count); give the model one patchifier per token count")
            grid.merge_index()  # a 2x2 window needs an even grid: raises a UserError naming it
    return grids


def apply_tome(model, ratio: float, *, merge_attn: bool = True, merge_mlp: bool = False,
               random_dst: bool = True, seed: int = 0, input_shape=None):
    """Make `model`'s DiT blocks merge tokens (ToMe), in place, and return it; ratio 0 removes ToMe.

    ratio: the fraction of a block's tokens merged away, 0..0.75 (tomesd's `ratio`).
    merge_attn / merge_mlp: which sublayers run on merged tokens (tomesd's defaults: attention only).
    random_dst / seed: the dst token of each 2x2 window is drawn per block from `seed`, or is the
    top-left one. input_shape: the latent size the model will see (default: the model's own).
    Afterwards `model.macs()` (and `forward_flops(model, ...)`) count the merged blocks.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= MAX_RATIO:
        raise UserError(f"ToMe ratio {ratio!r} must be a number in [0, {MAX_RATIO}]: the fraction of each block's "
                        "tokens merged away (one dst per 2x2 window leaves at most 3 of 4 to merge)")
    if not (merge_attn or merge_mlp):
        raise UserError("ToMe with merge_attn=False and merge_mlp=False merges nothing; enable one (tomesd: attention)")
    if ratio == 0 and not any(getattr(m, "token_merge", None) for m in model.modules()):
        return model  # nothing to remove (also on models ToMe does not apply to)
    backbone, indices = spatial_blocks(model)
    for block in backbone.blocks:
        block.token_merge = None
    if ratio == 0:
        return model
    grids = token_grids(model, backbone, input_shape or model.input_shape)
    device = next(model.parameters()).device
    for i in indices:
        block = backbone.blocks[i]
        block.token_merge = BlockMerging(i, backbone.depth, block.attn.proj.in_features, grids, float(ratio),
                                         merge_attn, merge_mlp, seed if random_dst else None)
        for tokens in grids:
            block.token_merge.split(tokens, device)
    return model


def tome_ratio(model) -> float:
    """The ratio `apply_tome` set on `model` (0 when ToMe is off)."""
    backbone, indices = spatial_blocks(model)
    return next((h.ratio for h in (backbone.blocks[i].token_merge for i in indices) if h is not None), 0.0)
