"""TREAD (Krause et al., 2025): token routing while training, on any backbone.

    blocks 0..i-1 (all tokens) -> blocks i..j (kept tokens) -> routed tokens back -> blocks j+1..D-1 (all)

In every training pass a uniformly random share `route_rate` of the spatial tokens takes the route
r_{i->j}: they skip blocks i..j (both included) and re-enter before block j + 1 at their own places,
unchanged (an identity bypass); the kept tokens run blocks i..j alone, each with its own position (its
row of the grid's RoPE tables, or the absolute embedding it got at the input). The output and the loss
cover every token. Nothing is added to the backbone: in eval mode, and whenever no token is routed, the
pass is the backbone's own, so a trained TREAD checkpoint samples as the base model.

`macs()` is that inference pass; `train_macs()` the routed training pass (blocks i..j see the kept tokens
only), which the training-FLOPs accounting uses (`flops.train_forward_flops`), so a FLOPs-matched TREAD
run gets the larger batch or the more steps its cheaper pass buys. docs/zoo.md cites the paper and the
released code for each choice and lists where this harness differs.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from elit_bench.errors import UserError
from elit_bench.models.backbones import Backbone, PlannedModel
from elit_bench.models.layout import Grid


@dataclass(frozen=True)
class TokenSubset:
    """`num_tokens` tokens of `grid` drawn anew in every pass (TREAD's kept tokens, in raster order).

    Its RoPE tables are the grid's rows at the drawn indices, so each pass's plan makes them."""

    grid: Grid
    num_tokens: int


def draw_kept(num_tokens: int, kept: int, device, generator=None) -> torch.Tensor:
    """Indices of the kept tokens (1|B, kept), sorted: a uniform random subset per generator.

    generator: None (global RNG) or one torch.Generator: one subset shared by the batch, as ELIT's random
    dropping draws its latents (the trainer's stream then does not depend on micro-batching or the number
    of processes); a sequence of generators, one per sample: a subset per sample.
    """
    gens = generator if isinstance(generator, (list, tuple)) else [generator]
    scores = torch.stack([torch.rand(num_tokens, generator=g, device=g.device if g else device) for g in gens])
    return scores.argsort(dim=-1)[:, :kept].sort(dim=-1).values.to(device)


def _index(keep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """keep (1|B, K) -> gather/scatter index (B, K, d) over the tokens of x (B, L, d)."""
    return keep.expand(x.shape[0], -1).unsqueeze(-1).expand(-1, -1, x.shape[-1])


class TREAD(PlannedModel):
    """A backbone trained with token routing: forward(x, t, y) like any model.

    route_rate: share of the tokens routed past the span in a training pass, 0 <= rate < 1 (the paper's
    selection rate; 0.5 is its choice); int(rate * L) of the L tokens are routed, as the released code does.
    route: (i, j), the first and last block the routed tokens skip (default (2, depth - 4), the paper's
    route for every depth).
    """

    def __init__(self, backbone: Backbone, route_rate: float = 0.5, route=None):
        super().__init__()
        self.backbone = backbone
        depth = backbone.depth
        if isinstance(route_rate, bool) or not isinstance(route_rate, numbers.Real) or not 0 <= route_rate < 1:
            raise UserError(f"route_rate {route_rate!r} must be a number in [0, 1): the share of tokens that skip "
                            "the route's blocks while training (the paper's 0.5)")
        route = (2, depth - 4) if route is None else route
        if (not isinstance(route, (tuple, list)) or len(route) != 2
                or any(isinstance(b, bool) or not isinstance(b, int) for b in route)
                or not 0 <= route[0] <= route[1] < depth):
            raise UserError(f"route {route!r} must be two block indices (i, j) with 0 <= i <= j < depth {depth}: "
                            f"the first and last block routed tokens skip (the paper's (2, depth - 4) needs "
                            f"depth >= 6; give route for a shallower model)")
        self.route_rate, self.route = float(route_rate), (route[0], route[1])
        with_ops = [k for k in range(route[0], route[1] + 1)
                    if backbone._ops(backbone.ops_before, k) or backbone._ops(backbone.ops_after, k)]
        if with_ops:
            raise UserError(f"{type(backbone).__name__} has token operations at block(s) {with_ops}, inside the "
                            f"route {self.route}: TREAD routes past plain blocks only; choose a route without them")

    # the attributes every model exposes
    in_channels = property(lambda self: self.backbone.in_channels)
    num_classes = property(lambda self: self.backbone.num_classes)
    input_shape = property(lambda self: self.backbone.input_shape)
    hidden_size = property(lambda self: self.backbone.hidden_size)
    depth = property(lambda self: self.backbone.depth)
    max_budget = None  # no latent interface
    t_embedder = property(lambda self: self.backbone.t_embedder)

    def kept_tokens(self, num_tokens: int) -> int:
        """Tokens that run the route's blocks in a training pass."""
        return num_tokens - int(num_tokens * self.route_rate)

    def plan(self, x, budget=None, patch_size=None, generator=None) -> dict:
        """The backbone's plan, plus in training the kept tokens (`draw_kept`) and their RoPE tables.

        generator: the random source of the kept tokens: None (global RNG), one torch.Generator (one subset
        for the batch) or one per sample."""
        plan = {**self.backbone.plan(x, budget, patch_size), "route": None}
        grid = plan["grid"]
        kept = self.kept_tokens(grid.num_tokens)
        if not self.training or kept == grid.num_tokens:
            return plan
        keep = draw_kept(grid.num_tokens, kept, x.device, generator)
        subset = TokenSubset(grid, kept)
        if plan["rope"]:  # each kept token keeps its own phase: (1|B, 1, K, head_dim / 2), heads broadcast
            cos, sin = plan["rope"][grid]
            plan["rope"] = {**plan["rope"], subset: (cos[keep].unsqueeze(1), sin[keep].unsqueeze(1))}
        plan["route"] = (keep, subset)
        return plan

    def embed(self, x, t, y, state: dict):
        return self.backbone.embed(x, t, y, state)

    def unembed(self, tokens, c, state: dict):
        return self.backbone.unembed(tokens, c, state)

    def trunk(self, s, c, state: dict):
        """Tokens (B, L, d) in and out; with a route, blocks i..j run on the kept tokens (B, K, d) only."""
        bb = self.backbone
        if state["route"] is None:
            return bb.trunk(s, c, state)
        (i, j), (keep, subset), grid = self.route, state["route"], state["grid"]
        s, _ = bb.run_blocks(s, c, grid, 0, i, state)
        index = _index(keep, s)
        kept, _ = bb.run_blocks(s.gather(1, index), c, subset, i, j + 1, state)
        s = s.scatter(1, index, kept)  # out of place: the routed tokens are block i's input, unchanged
        return bb.run_blocks(s, c, grid, j + 1, bb.depth, state)[0]

    def macs(self, input_shape=None, budget=None, patch_size=None) -> dict[str, int]:
        """Inference MACs per sample by component: the backbone's (the twin of forward() in eval mode)."""
        return self.backbone.macs(input_shape, budget, patch_size)

    def train_macs(self, input_shape=None, budget=None, patch_size=None) -> dict[str, int]:
        """MACs per sample of a training pass by component (the twin of forward() in train mode): blocks
        i..j count the kept tokens only; the gather and scatter multiply nothing."""
        bb, (i, j) = self.backbone, self.route
        if budget is not None:
            raise UserError(f"{type(self).__name__} has no latent interface: budget must be None")
        costs, grid, state = bb.macs_embed(input_shape or self.input_shape, patch_size)
        head, ops1, _ = bb.macs_blocks(grid, 0, i, state)
        span, ops2, _ = bb.macs_blocks(TokenSubset(grid, self.kept_tokens(grid.num_tokens)), i, j + 1, state)
        tail, ops3, _ = bb.macs_blocks(grid, j + 1, bb.depth, state)
        return {**costs, "blocks": head + span + tail, "token_ops": ops1 + ops2 + ops3}
