"""Building blocks shared by every backbone and by the ELIT interface.

Shapes: B batch, L tokens, d width, H heads, C channels. Every layer reports
its analytic multiply-accumulate count through `macs(...)` (elementwise ops,
norms and softmax are not counted, as in the DiT and ELIT papers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from elit_bench.errors import UserError


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, L, d), shift/scale (B, d)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def linear_macs(tokens: int, layer: nn.Linear) -> int:
    return tokens * layer.in_features * layer.out_features


# ---------------------------------------------------------------- rotary embedding
def rope_tables(pos: torch.Tensor, head_dim: int, theta: float = 10000.0,
                axes_pairs: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Axial RoPE tables for token coordinates pos (L, n_axes).

    The head_dim / 2 rotation pairs are shared out over the axes as evenly as
    possible (2D at head_dim 72: 18 + 18 pairs; 3D at 64: 11 + 11 + 10), or
    as `axes_pairs` says (Qwen-Image: 8 + 28 + 28 at head_dim 128).
    Returns cos, sin of shape (L, head_dim / 2).
    """
    pairs, axes = head_dim // 2, pos.shape[-1]
    counts = axes_pairs or [pairs // axes + (1 if a < pairs % axes else 0) for a in range(axes)]
    angles = []
    for a, n in enumerate(counts):
        freqs = theta ** (-torch.arange(n, dtype=torch.float32, device=pos.device) / max(n, 1))
        angles.append(pos[:, a:a + 1].float() * freqs)
    angles = torch.cat(angles, dim=-1)
    return angles.cos(), angles.sin()


def sincos_positions(shape: tuple[int, ...], dim: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embeddings (MAE / DiT / SiT convention) for an (H, W) grid -> (H*W, dim).

    The first half of the channels encodes the column, the second half the row;
    each half is [sin(pos * w), cos(pos * w)] with w = 10000^(-k / (dim / 4)).
    Computed in float64 as the released code does, then cast.
    """
    if len(shape) != 2 or dim % 4:
        raise UserError(f"sin-cos positions need a 2D grid and a width divisible by 4, got {shape}, {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in shape), indexing="ij")

    def axis(pos):
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=-1)
    return torch.cat([axis(cols), axis(rows)], dim=-1).float()


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate consecutive channel pairs of x (B, H, L, hd) by the tables of `rope_tables`."""
    cos, sin = (t.to(x.dtype) for t in rope)
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


# ---------------------------------------------------------------- attention / MLP
class WidthRMSNorm(nn.Module):
    """RMS norm over the full width with eps added to the RMS, not under the root: x / (rms(x) + eps) * scale.

    The released ELIT code normalises cross-attention queries and keys this way
    (before splitting heads); the placement of eps matters at 1e-5 tolerance.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.float().norm(dim=-1, keepdim=True) * x.shape[-1] ** -0.5
        return self.scale * (x.float() / (rms + self.eps)).to(x.dtype)


# QK normalisation: "rms" per head (the paper's blocks), "layer" per head with affine
# (timm's, the released SiT blocks with qk_norm), "width-rms" (the released Read/Write), None
QK_NORMS = ("rms", "layer", "width-rms", None)


def _qk_norm(kind, head_dim: int, dim: int) -> nn.Module:
    if kind == "rms":
        return nn.RMSNorm(head_dim, eps=1e-6)
    if kind == "layer":
        return nn.LayerNorm(head_dim, eps=1e-5)
    if kind == "width-rms":
        return WidthRMSNorm(dim)
    if kind is None:
        return nn.Identity()
    raise ValueError(f"unknown qk_norm {kind!r}; valid choices: {QK_NORMS}")


class Attention(nn.Module):
    """Multi-head attention with QK-norm and optional RoPE.

    Self-attention: forward(x) with x (B, L, d). Cross-attention (`cross=True`):
    forward(x, context) with queries x (B, L, d) and keys/values context
    (B, M, d); the batch dimension may fold groups (B*G) for grouped attention.
    qk_norm: one of `QK_NORMS`.
    """

    def __init__(self, dim: int, num_heads: int, cross: bool = False, qk_norm="rms"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.head_dim, self.cross = num_heads, dim // num_heads, cross
        if cross:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.norm_width = qk_norm == "width-rms"
        self.q_norm = _qk_norm(qk_norm, self.head_dim, dim)
        self.k_norm = _qk_norm(qk_norm, self.head_dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, rope=None) -> torch.Tensor:
        heads = lambda t: t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        if self.cross:
            q = self.q(x)
            k, v = self.kv(context).chunk(2, dim=-1)
        else:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.norm_width:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = heads(q), heads(k), heads(v)
        if not self.norm_width:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).flatten(2))

    def macs(self, queries: int, keys: int | None = None, batches: int = 1) -> int:
        """MACs for `batches` independent attentions of `queries` x `keys` tokens."""
        keys = queries if keys is None else keys
        d = self.proj.in_features
        if self.cross:
            proj = linear_macs(queries, self.q) + linear_macs(keys, self.kv)
        else:
            proj = linear_macs(queries, self.qkv)
        return batches * (proj + linear_macs(queries, self.proj) + 2 * queries * keys * d)


class Mlp(nn.Module):
    """Two-layer GELU(tanh) MLP, hidden = ratio * d (the released Read/Write MLPs have no biases)."""

    def __init__(self, dim: int, ratio: float = 4.0, bias: bool = True):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden, bias=bias), nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))

    def macs(self, tokens: int) -> int:
        return linear_macs(tokens, self.fc1) + linear_macs(tokens, self.fc2)


def adaln(cond_dim: int, chunks: int, dim: int) -> nn.Sequential:
    """adaLN modulation head: SiLU then Linear(cond_dim -> chunks * dim), zero-initialised."""
    return nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, chunks * dim))


class DiTBlock(nn.Module):
    """The transformer block every model shares: adaLN-Zero (6 chunks), QK-norm, RoPE, MLP x4.

    x (B, L, d), c (B, cond_dim) -> (B, L, d).
    token_merge: None, or the ToMe hook `apply_tome` sets (models/tome.py): called on the block
    input, it gives each sublayer's merge (None: that sublayer sees every token); the sublayer runs
    on the merged tokens and its output is unmerged (copied back to every merged token).
    sublayer_cache: None, or the TaylorSeer hook a sampling pass sets (flow/taylorseer.py): it
    records each sublayer's output (0 attention, 1 MLP; (B, L, d), before the gate), or, when
    `forecasting`, supplies forecasts of them; the adaLN modulation is always computed from c.
    """

    def __init__(self, dim: int, num_heads: int, cond_dim: int | None = None, mlp_ratio: float = 4.0,
                 qk_norm="rms"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio)
        self.adaLN_modulation = adaln(cond_dim or dim, 6, dim)
        self.token_merge = None
        self.sublayer_cache = None

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope=None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        cache = self.sublayer_cache
        if cache is not None and cache.forecasting:  # TaylorSeer: gate(c) * forecast, no attention or MLP
            x = x + gate1.unsqueeze(1) * cache.forecast(0)
            return x + gate2.unsqueeze(1) * cache.forecast(1)
        ma, mm = self.token_merge(x, rope) if self.token_merge is not None else (None, None)
        h = modulate(self.norm1(x), shift1, scale1)
        out = self.attn(h, rope=rope) if ma is None else ma.unmerge(self.attn(ma.merge(h), rope=ma.rope))
        if cache is not None:
            cache.record(0, out)
        x = x + gate1.unsqueeze(1) * out
        h = modulate(self.norm2(x), shift2, scale2)
        out = self.mlp(h) if mm is None else mm.unmerge(self.mlp(mm.merge(h)))
        if cache is not None:
            cache.record(1, out)
        return x + gate2.unsqueeze(1) * out

    def modulation_macs(self) -> int:
        """MACs of the adaLN projection (once per sample): all a block computes at a TaylorSeer forecast."""
        return linear_macs(1, self.adaLN_modulation[1])

    def macs(self, tokens: int) -> int:
        """MACs on `tokens` tokens; with ToMe, each sublayer's at its merged count plus the matching."""
        attn, mlp, matching = (tokens, tokens, 0) if self.token_merge is None else self.token_merge.counts(tokens)
        return self.attn.macs(attn) + self.mlp.macs(mlp) + self.modulation_macs() + matching


# ---------------------------------------------------------------- embedders
class TimestepEmbedder(nn.Module):
    """t (B,) in [0, 1] -> (B, d): sinusoidal features of `t_scale` * t, then a 2-layer MLP.

    t_scale: 1000 (DiT's step-index range); the released SiT and ELIT feed t itself (1).
    """

    def __init__(self, dim: int, freq_dim: int = 256, t_scale: float = 1000.0):
        super().__init__()
        self.freq_dim, self.t_scale = freq_dim, t_scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = (self.t_scale * t.float())[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))

    def macs(self) -> int:
        return linear_macs(1, self.mlp[0]) + linear_macs(1, self.mlp[2])


class LabelEmbedder(nn.Module):
    """y (B,) class ids -> (B, d). Id `num_classes` is the null class used for guidance."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class PatchEmbed(nn.Module):
    """Patchify x (B, C, *S) with patch p (one size per axis) -> tokens (B, L, d) and their grid.

    A Linear over flattened patches is a strided convolution written so that
    2D, 3D and non-square patches share one code path.
    """

    def __init__(self, patch: tuple[int, ...], in_channels: int, dim: int):
        super().__init__()
        self.patch = tuple(patch)
        self.proj = nn.Linear(in_channels * math.prod(self.patch), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *size = x.shape
        grid = [s // p for s, p in zip(size, self.patch)]
        shape = [b, c] + [v for g, p in zip(grid, self.patch) for v in (g, p)]
        x = x.reshape(shape)
        n = len(grid)
        # (B, C, g1, p1, g2, p2, ...) -> (B, g1, g2, ..., C, p1, p2, ...)
        perm = [0, *(2 + 2 * i for i in range(n)), 1, *(3 + 2 * i for i in range(n))]
        return self.proj(x.permute(perm).reshape(b, math.prod(grid), -1))

    def macs(self, tokens: int) -> int:
        return linear_macs(tokens, self.proj)


class FinalLayer(nn.Module):
    """adaLN (2 chunks) + Linear to patches, then unpatchify back to (B, C, *S)."""

    def __init__(self, dim: int, patch: tuple[int, ...], out_channels: int, cond_dim: int | None = None):
        super().__init__()
        self.patch, self.out_channels = tuple(patch), out_channels
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = adaln(cond_dim or dim, 2, dim)
        self.linear = nn.Linear(dim, out_channels * math.prod(self.patch))

    def forward(self, x: torch.Tensor, c: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        x = self.linear(modulate(self.norm(x), shift, scale))
        b, n = x.shape[0], len(grid)
        x = x.reshape(b, *grid, self.out_channels, *self.patch)
        # (B, g1.., C, p1..) -> (B, C, g1, p1, g2, p2, ...)
        perm = [0, n + 1, *(v for i in range(n) for v in (1 + i, n + 2 + i))]
        return x.permute(perm).reshape(b, self.out_channels, *(g * p for g, p in zip(grid, self.patch)))

    def macs(self, tokens: int) -> int:
        return linear_macs(tokens, self.linear) + linear_macs(1, self.adaLN_modulation[1])
