"""DyDiT (Zhao et al., ICLR 2025): a trained DiT whose width follows the timestep and whose MLPs skip easy tokens.

    TDW  per block, two routers on the timestep embedding E_t (B, d): Linear(d, H - 1) each,
         a 0/1 gate per attention head and per MLP channel group (the MLP's 4d hidden channels in
         H groups); head 0 and group 0 always run.
    SDT  per block, a token router on the residual stream after attention,
         Linear(d, d/16) -> ReLU -> Linear(d/16, 1): a token whose gate is 0 skips the MLP.

A gate is 1[logit > 0] (sigmoid > 0.5) at inference. In training it is a straight-through
Gumbel-sigmoid: forward 1[logit + g1 - g2 > 0], backward the gradient of sigmoid((logit + g1 - g2) / tau),
tau = 5; the dense model runs and gates multiply head outputs, channel groups and token updates.
Fine-tuning adds the FLOPs-target loss (weight w, target ratio lambda) to the rectified-flow loss:

    L_flops = w * (mean_b R_b - lambda)^2,   R_b = sum_l (A_l a_bl + M_l g_bl k_bl) / sum_l (A_l + M_l)

with A_l, M_l the attention and MLP MACs of block l, a_bl and g_bl the fraction of heads and groups
kept and k_bl the fraction of tokens through the MLP (`auxiliary_loss()`, read by the trainer).
Router biases start at 15 (and 35 for tokens, as released), so a freshly wrapped DiT runs every head,
group and token and gives the DiT's output exactly.

At inference the width depends on t only: rows of a batch with the same gates run together with the
kept heads' and groups' weights sliced out (the paper's per-timestep masks), and each block's MLP runs
on the kept tokens only (gathered, then added back). The cost is therefore realised, not masked: every
eval forward adds its MACs to `usage` (`reset_usage`, `recorded_flops`), and `macs(t=..., tokens=...)`
is the analytic twin at a timestep and token fraction. docs/zoo.md lists where this differs from the
released code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from elit_bench.errors import UserError
from elit_bench.models.backbones import Backbone, PlannedModel
from elit_bench.models.layers import Attention, Mlp, apply_rope, linear_macs, modulate

GUMBEL_TAU = 5.0  # released Router / TokenSelect
WIDTH_BIAS, TOKEN_BIAS = 15.0, 35.0  # released init: every gate open at the start of fine-tuning


def straight_through_gate(logits: torch.Tensor, noise: torch.Tensor, tau: float = GUMBEL_TAU) -> torch.Tensor:
    """Hard 0/1 gate 1[logits + noise > 0] with the gradient of sigmoid((logits + noise) / tau).

    noise: logistic (the difference of two Gumbels). hard + (soft - soft) keeps forward values exactly 0 or 1."""
    soft = torch.sigmoid((logits + noise) / tau)
    hard = (soft > 0.5).to(soft.dtype)
    return hard + (soft - soft.detach())


def logistic_noise(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """g1 - g2 for two independent Gumbel(0, 1) draws: log(u) - log(1 - u), u ~ U(0, 1)."""
    device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=device).clamp(1e-6, 1 - 1e-6)
    return u.log() - (-u).log1p()


def attend(attn: Attention, x: torch.Tensor, rope=None, heads: torch.Tensor | None = None,
           gates: torch.Tensor | None = None) -> torch.Tensor:
    """Self-attention of `attn` on some heads: x (B, L, d) -> (B, L, d).

    heads: indices of the heads that run (None: all, the same ops as `attn(x)`); gates (B, H):
    each head's output scaled before the output projection (training)."""
    hd, d = attn.head_dim, attn.proj.out_features
    if heads is None:
        q, k, v = attn.qkv(x).chunk(3, dim=-1)
        proj = attn.proj.weight
    else:  # the kept heads' rows of q, k and v, and their columns of the output projection
        channels = (heads[:, None] * hd + torch.arange(hd, device=heads.device)).flatten()
        rows = torch.cat([channels, channels + d, channels + 2 * d])
        q, k, v = F.linear(x, attn.qkv.weight[rows], attn.qkv.bias[rows]).chunk(3, dim=-1)
        proj = attn.proj.weight[:, channels]
    split = lambda z: z.unflatten(-1, (-1, hd)).transpose(1, 2)  # noqa: E731
    q, k, v = attn.q_norm(split(q)), attn.k_norm(split(k)), split(v)
    if rope is not None:
        q, k = apply_rope(q, rope), apply_rope(k, rope)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)  # (B, L, h, hd)
    if gates is not None:
        out = out * gates[:, None, :, None].to(out.dtype)
    return F.linear(out.flatten(2), proj, attn.proj.bias)


def feed_forward(mlp: Mlp, x: torch.Tensor, num_groups: int, groups: torch.Tensor | None = None,
                 gates: torch.Tensor | None = None) -> torch.Tensor:
    """The MLP on some hidden channel groups: x (..., d) -> (..., d).

    groups: indices of the groups that run (None: all, the same ops as `mlp(x)`); gates (B, G) scale
    each group's hidden channels (training; x is then (B, L, d))."""
    width = mlp.fc1.out_features // num_groups
    if groups is None:
        h = F.gelu(mlp.fc1(x), approximate="tanh")
        w2 = mlp.fc2.weight
    else:
        channels = (groups[:, None] * width + torch.arange(width, device=groups.device)).flatten()
        h = F.gelu(F.linear(x, mlp.fc1.weight[channels], mlp.fc1.bias[channels]), approximate="tanh")
        w2 = mlp.fc2.weight[:, channels]
    if gates is not None:
        h = h * gates.repeat_interleave(width, dim=-1)[:, None].to(h.dtype)
    return F.linear(h, w2, mlp.fc2.bias)


class BlockRouters(nn.Module):
    """One block's routers: `heads` and `groups` on E_t (B, d) -> (B, H - 1) logits; `tokens` on x (B, L, d) -> (B, L)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.heads = nn.Linear(dim, num_heads - 1)
        self.groups = nn.Linear(dim, num_heads - 1)
        hidden = max(1, dim // 16)
        self.tokens = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        for lin in (self.heads, self.groups, self.tokens[0], self.tokens[2]):
            nn.init.xavier_uniform_(lin.weight)
        nn.init.constant_(self.heads.bias, WIDTH_BIAS)
        nn.init.constant_(self.groups.bias, WIDTH_BIAS)
        nn.init.zeros_(self.tokens[0].bias)
        nn.init.constant_(self.tokens[2].bias, TOKEN_BIAS)

    def token_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x).squeeze(-1)

    def macs(self, tokens: int) -> int:
        """Per sample: both width routers once, the token router on `tokens` tokens."""
        return (linear_macs(1, self.heads) + linear_macs(1, self.groups)
                + linear_macs(tokens, self.tokens[0]) + linear_macs(tokens, self.tokens[2]))


@dataclass
class Usage:
    """What eval forwards computed since `reset_usage`: rows (samples x passes), the trunk's realised MACs
    summed over those rows, the tokens each block's MLP ran on (summed over rows), and the input shape
    (for the embed and final costs, which every row pays)."""

    rows: int = 0
    trunk_macs: int = 0
    mlp_tokens: list[int] = field(default_factory=list)
    input_shape: tuple[int, ...] | None = None


class DyDiT(PlannedModel):
    """A DiT backbone with DyDiT's routers: forward(x, t, y) like any model; `auxiliary_loss()` after a
    training forward.

    flops_target: lambda, the target ratio of realised to full attention + MLP MACs; flops_weight: w;
    tau: the Gumbel-sigmoid temperature. The backbone's state dict lives under `backbone.`, so a
    trained DiT's weights load into it (`base_prefix`; `new_parameters` start from their init).
    """

    base_prefix, new_parameters = "backbone.", ("routers.",)

    def __init__(self, backbone: Backbone, flops_target: float = 0.5, flops_weight: float = 2.0,
                 tau: float = GUMBEL_TAU):
        super().__init__()
        if not 0 < flops_target <= 1:
            raise UserError(f"flops_target {flops_target!r} must be in (0, 1]: the share of the DiT's "
                            "attention + MLP FLOPs to keep (the paper's lambda, e.g. 0.5 or 0.7)")
        if backbone.ops_before or backbone.ops_after or len(backbone.patch_embedders) != 1:
            raise UserError(f"DyDiT wraps a plain DiT (one patchifier, no token ops), not a {type(backbone).__name__}")
        if backbone.num_heads < 2 or backbone.qk_norm == "width-rms":
            raise UserError("DyDiT routes attention heads: it needs at least 2 heads and a per-head (or no) QK norm, "
                            f"got {backbone.num_heads} heads, qk_norm={backbone.qk_norm!r}")
        self.backbone = backbone
        self.flops_target, self.flops_weight, self.tau = flops_target, flops_weight, tau
        self.routers = nn.ModuleList(BlockRouters(backbone.hidden_size, backbone.num_heads)
                                     for _ in range(backbone.depth))
        self._flops_loss = None
        self.usage = Usage()

    # the attributes every model exposes
    in_channels = property(lambda self: self.backbone.in_channels)
    num_classes = property(lambda self: self.backbone.num_classes)
    input_shape = property(lambda self: self.backbone.input_shape)
    hidden_size = property(lambda self: self.backbone.hidden_size)
    depth = property(lambda self: self.backbone.depth)
    num_heads = property(lambda self: self.backbone.num_heads)
    t_embedder = property(lambda self: self.backbone.t_embedder)
    max_budget = None
    runs_dit_blocks = False  # its blocks run at routed widths, not through DiTBlock.forward: no TaylorSeer
    calls_blocks = False  # nor through any block's forward: train.sharding: fsdp cannot gather a block per call

    # -- the pass
    def plan(self, x, budget=None, patch_size=None, generator=None) -> dict:
        """The backbone's plan, plus the generator the training gates draw their noise from."""
        return {**self.backbone.plan(x, budget, patch_size), "generator": generator}

    def embed(self, x, t, y, state: dict):
        if not self.training:
            self.usage.rows += x.shape[0]
            self.usage.input_shape = tuple(x.shape[2:])
        return self.backbone.embed(x, t, y, state)

    def unembed(self, tokens, c, state: dict):
        return self.backbone.unembed(tokens, c, state)

    def width_logits(self, t_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E_t (B, d) -> head and group logits (B, depth, H - 1)."""
        return (torch.stack([r.heads(t_emb) for r in self.routers], dim=1),
                torch.stack([r.groups(t_emb) for r in self.routers], dim=1))

    def trunk(self, tokens, c, state: dict):
        """All blocks: tokens (B, L, d) in and out; dense with gates in training, realised at inference."""
        if self.training:
            return self._gated_trunk(tokens, c, state)
        rope = self.backbone.rope(state["grid"], state)
        heads, groups = (logits > 0 for logits in self.width_logits(state["t_emb"]))
        patterns = torch.cat([heads, groups], dim=-1).flatten(1).tolist()  # the one host sync of the width
        rows = {}
        for i, p in enumerate(patterns):  # rows with the same width run together
            rows.setdefault(tuple(p), []).append(i)
        if len(rows) == 1:
            return self._realised_blocks(tokens, c, rope, torch.tensor(patterns[0]).view(self.depth, 2, -1))
        out = torch.empty_like(tokens)
        for key, group in rows.items():
            index = torch.tensor(group, device=tokens.device)
            out[index] = self._realised_blocks(tokens[index], c[index], rope, torch.tensor(key).view(self.depth, 2, -1))
        return out

    def _realised_blocks(self, x, c, rope, width: torch.Tensor) -> torch.Tensor:
        """Blocks at one width: width (depth, 2, H - 1) bool (heads, groups) shared by the rows of x (B, L, d)."""
        b, L, _ = x.shape
        H = self.num_heads
        macs = 0
        counts = self.usage.mlp_tokens = self.usage.mlp_tokens or [0] * self.depth
        for i, (block, router, (heads, groups)) in enumerate(zip(self.backbone.blocks, self.routers, width)):
            heads, groups = (None if bool(g.all()) else torch.cat([torch.zeros(1, dtype=torch.long),
                                                                   g.nonzero().flatten() + 1]).to(x.device)
                             for g in (heads, groups))
            shift1, scale1, gate1, shift2, scale2, gate2 = block.adaLN_modulation(c).chunk(6, dim=-1)
            x = x + gate1.unsqueeze(1) * attend(block.attn, modulate(block.norm1(x), shift1, scale1), rope, heads)
            rows, cols = (router.token_logits(x) > 0).nonzero(as_tuple=True)
            h = block.norm2(x[rows, cols]) * (1 + scale2[rows]) + shift2[rows]
            x = x.index_put((rows, cols), gate2[rows] * feed_forward(block.mlp, h, H, groups), accumulate=True)
            counts[i] += rows.numel()
            kept_heads, kept_groups = (H if g is None else len(g) for g in (heads, groups))
            macs += b * (attention_macs(block, L, kept_heads) + router.macs(L)) \
                + mlp_macs(block, rows.numel(), kept_groups, H)
        self.usage.trunk_macs += macs
        return x

    def _gated_trunk(self, x, c, state):
        """Training: every block dense, gates drawn with noise, and the FLOPs-target loss of the realised gates."""
        b, L, _ = x.shape
        gen = state.get("generator")
        gen = gen if isinstance(gen, torch.Generator) else None
        head_logits, group_logits = self.width_logits(state["t_emb"])
        noise = [logistic_noise(s, gen, x.device) for s in (head_logits.shape, group_logits.shape, (b, self.depth, L))]
        ones = head_logits.new_ones(b, self.depth, 1)
        heads = torch.cat([ones, straight_through_gate(head_logits, noise[0], self.tau)], dim=-1)
        groups = torch.cat([ones, straight_through_gate(group_logits, noise[1], self.tau)], dim=-1)
        rope = self.backbone.rope(state["grid"], state)
        checkpoint = self.backbone.checkpoint_blocks and torch.is_grad_enabled()
        keeps = []
        for i in range(self.depth):
            args = (x, c, rope, heads[:, i], groups[:, i], noise[2][:, i])
            if checkpoint:
                x, keep = torch.utils.checkpoint.checkpoint(self._gated_block, i, *args, use_reentrant=False)
            else:
                x, keep = self._gated_block(i, *args)
            keeps.append(keep)
        ratio = self.flops_ratio(L, heads, groups, torch.stack(keeps, dim=1).mean(dim=-1))
        self._flops_loss = self.flops_weight * (ratio.mean() - self.flops_target) ** 2
        return x

    def _gated_block(self, i, x, c, rope, heads, groups, token_noise):
        """Block i dense: heads, groups (B, H) and the token gates (drawn with token_noise (B, L)) scale its updates."""
        block, router = self.backbone.blocks[i], self.routers[i]
        shift1, scale1, gate1, shift2, scale2, gate2 = block.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate1.unsqueeze(1) * attend(block.attn, modulate(block.norm1(x), shift1, scale1), rope, gates=heads)
        keep = straight_through_gate(router.token_logits(x), token_noise, self.tau)  # (B, L)
        update = feed_forward(block.mlp, modulate(block.norm2(x), shift2, scale2), self.num_heads, gates=groups)
        return x + (keep.unsqueeze(-1) * gate2.unsqueeze(1) * update).to(x.dtype), keep

    def flops_ratio(self, tokens: int, heads: torch.Tensor, groups: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """R_b: realised / full attention + MLP MACs per row. heads, groups (B, depth, H) gates; kept (B, depth)
        the fraction of tokens through each MLP."""
        blocks = self.backbone.blocks
        attn = torch.tensor([b.attn.macs(tokens) for b in blocks], dtype=heads.dtype, device=heads.device)
        mlp = torch.tensor([b.mlp.macs(tokens) for b in blocks], dtype=heads.dtype, device=heads.device)
        realised = attn * heads.mean(dim=-1) + mlp * groups.mean(dim=-1) * kept
        return realised.sum(dim=-1) / (attn + mlp).sum()

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The FLOPs-target loss of the last training forward (added to the flow loss by the trainer), then cleared."""
        loss, self._flops_loss = self._flops_loss, None
        return loss

    # -- analytic FLOPs
    @torch.no_grad()
    def width_at(self, t: float) -> list[tuple[int, int]]:
        """(heads, groups) each block runs at timestep t in [0, 1]: the gates inference precomputes per step."""
        device = self.backbone.t_embedder.mlp[0].weight.device
        t_emb = self.backbone.t_embedder(torch.full((1,), 1 - t if self.backbone.time_reversed else t, device=device))
        heads, groups = (1 + (logits[0] > 0).sum(dim=-1) for logits in self.width_logits(t_emb))
        return list(zip(heads.tolist(), groups.tolist()))

    def walk(self, input_shape, budget=None, patch_size=None, t=None, tokens=None) -> tuple[dict[str, int], dict]:
        """The analytic pass: the backbone's walk with the blocks at the width of timestep t (None: full) and
        `tokens` (a fraction, or one per block; None: all) of the tokens through each MLP, plus the routers."""
        costs, state = self.backbone.walk(input_shape, budget, patch_size)
        L, H = state["grid"].num_tokens, self.num_heads
        width = self.width_at(t) if t is not None else [(H, H)] * self.depth
        shares = tokens if isinstance(tokens, (list, tuple)) else [1.0 if tokens is None else tokens] * self.depth
        if len(shares) != self.depth or not all(0 <= s <= 1 for s in shares):
            raise UserError(f"tokens must be a fraction in [0, 1] or {self.depth} of them (one per block), got {tokens!r}")
        costs["blocks"] = sum(attention_macs(block, L, h) + mlp_macs(block, round(s * L), g, H)
                              for block, (h, g), s in zip(self.backbone.blocks, width, shares))
        costs["routers"] = sum(r.macs(L) for r in self.routers)
        return costs, state

    def macs(self, input_shape=None, budget=None, patch_size=None, t=None, tokens=None) -> dict[str, int]:
        """Forward MACs per sample by component (embed, final, blocks, token_ops, routers): full width and every
        token by default (the training pass's cost); see `walk` for t and tokens."""
        return self.walk(input_shape or self.input_shape, budget, patch_size, t, tokens)[0]

    # -- realised FLOPs of eval forwards
    def reset_usage(self) -> None:
        self.usage = Usage()

    def recorded_flops(self, samples: int) -> float:
        """FLOPs per sample of the eval forwards since `reset_usage`, for `samples` samples generated: the
        realised trunk MACs plus embed and final for every row (guidance passes are rows too), x 2."""
        if self.usage.rows == 0:
            return 0.0
        costs = self.macs(self.usage.input_shape)
        macs = self.usage.trunk_macs + self.usage.rows * (costs["embed"] + costs["final"])
        return 2 * macs / samples


def attention_macs(block, tokens: int, heads: int) -> int:
    """One sample's MACs of a DiT block's adaLN head and of its attention with `heads` heads on `tokens` tokens."""
    attn = block.attn
    width, d = heads * attn.head_dim, attn.proj.out_features
    attention = tokens * d * 3 * width + 2 * tokens * tokens * width + tokens * width * d
    return attention + linear_macs(1, block.adaLN_modulation[1])


def mlp_macs(block, tokens: int, groups: int, num_groups: int) -> int:
    """MACs of a DiT block's MLP on `tokens` tokens with `groups` of its `num_groups` hidden channel groups."""
    hidden = groups * (block.mlp.fc1.out_features // num_groups)
    return tokens * 2 * block.mlp.fc1.in_features * hidden
