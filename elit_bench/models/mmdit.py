"""MM-DiT: a text-to-image transformer with two token streams (Qwen-Image's layout), and ELIT on its image stream.

    latents (B, C, H, W) -> patch embedding -> image tokens ┐
                                                            ├ joint blocks -> image tokens -> final layer
    text-encoder outputs (B, T, d_text) -> RMSNorm, Linear ┘

Every block keeps two streams with their own weights (adaLN modulation from
the timestep, norms, q/k/v, output projection, MLP) and runs one attention
over the concatenated [text; image] tokens. There is no pooled text vector:
the conditioning c of every adaLN is the timestep embedding alone
(Qwen-Image; SD3 and FLUX add a pooled text embedding).

Positions (Qwen-Image's multimodal RoPE): per head, 1/8 of the rotation pairs
encode a frame axis and the rest row and column (16 + 56 + 56 channels at head
dim 128). Image tokens sit at (0, row, column) with rows and columns centred on
the image; text token i sits at (m + i, m + i, m + i) on all three axes, with m
= max(rows // 2, columns // 2), just past the image.

Text conditioning: `y` is either prompt ids (B,), long, indexing the model's
prompt table (`TextEmbedder.prompts`, precomputed text-encoder outputs; id
`num_classes` is the empty prompt, the null condition of CFG and of label
dropout), so the harness's trainer and sampler pass it like class labels; or a
`TextCondition` (text-encoder outputs and their mask, per sample).

ELIT (`ELIT(MMDiT(...))`, elit.py): Read after the head, Write before the tail
move the image stream to latents and back; in the latent core the latents take
the image tokens' place in the joint attention and the text stream runs as in
the head and tail. Read and Write see image tokens and latents only (docs/mmdit.md).

Input x (B, C, H, W); t (B,) in [0, 1] (0 at noise); output: velocity like x.
The weights follow Qwen-Image's convention (t = 1 at noise, v = noise - data,
t scaled by 1000): `time_reversed` turns it into the harness's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from elit_bench.errors import UserError
from elit_bench.models.backbones import Backbone, device_rope, initialize_weights
from elit_bench.models.layers import (
    Mlp,
    TimestepEmbedder,
    adaln,
    apply_rope,
    linear_macs,
    modulate,
    rope_tables,
)
from elit_bench.models.layout import Layout


class TextCondition(NamedTuple):
    """Text conditioning given per sample: tokens (B, T, d_text) from a text encoder, mask (B, T) bool
    (True: a real token, False: padding) or None (every token is real)."""

    tokens: torch.Tensor
    mask: torch.Tensor | None = None


class TextEmbedder(nn.Module):
    """Text-encoder outputs -> text-stream tokens: RMSNorm over the encoder width, then Linear to the model width.

    prompts (P + 1, T, d_text) and prompt_mask (P + 1, T): the model's prompt set, precomputed by a text
    encoder and loaded with `set_prompts`; row P is the empty prompt. Until a set is loaded, prompt i is a
    fixed random code (T tokens of N(0, 1)), so on class-labelled data the model is class-conditional
    through its text stream, and the empty prompt is all padding.
    """

    def __init__(self, num_prompts: int, text_tokens: int, text_dim: int, dim: int):
        super().__init__()
        self.norm = nn.RMSNorm(text_dim, eps=1e-6)
        self.proj = nn.Linear(text_dim, dim)
        prompts = torch.randn(num_prompts + 1, text_tokens, text_dim)
        prompts[-1] = 0
        mask = torch.ones(num_prompts + 1, text_tokens, dtype=torch.bool)
        mask[-1] = False
        self.register_buffer("prompts", prompts)  # persistent: a checkpoint carries the prompts it learned
        self.register_buffer("prompt_mask", mask)

    def set_prompts(self, tokens: torch.Tensor, mask: torch.Tensor) -> None:
        """Load a prompt set: tokens (P + 1, T', d_text) with T' <= T, mask (P + 1, T') bool; the last row is
        the empty prompt. Shorter prompts are padded (masked) to the table's T tokens."""
        rows, length, dim = self.prompts.shape
        if tokens.ndim != 3 or tokens.shape[0] != rows or tokens.shape[1] > length or tokens.shape[2] != dim:
            raise UserError(f"prompt embeddings of shape {tuple(tokens.shape)} do not fit this model's prompt table "
                            f"({rows} prompts including the empty one last, up to {length} tokens of width {dim}); "
                            "build the model with num_classes, text_tokens and text_dim of the encoded prompts")
        if mask.shape != tokens.shape[:2] or mask.dtype != torch.bool:
            raise UserError(f"prompt mask must be bool of shape {tuple(tokens.shape[:2])}, got {mask.dtype} "
                            f"{tuple(mask.shape)}")
        with torch.no_grad():
            self.prompts.zero_()[:, : tokens.shape[1]] = tokens
            self.prompt_mask.zero_()[:, : tokens.shape[1]] = mask

    def check(self, text: TextCondition, batch: int) -> None:
        tokens, mask = text
        want = f"(B={batch}, T, {self.prompts.shape[2]})"
        if tokens.ndim != 3 or tokens.shape[0] != batch or tokens.shape[2] != self.prompts.shape[2]:
            raise UserError(f"text tokens must be {want}, got {tuple(tokens.shape)}")
        if mask is not None and (mask.shape != tokens.shape[:2] or mask.dtype != torch.bool):
            raise UserError(f"text mask must be bool (B, T) = {tuple(tokens.shape[:2])}, got {mask.dtype} "
                            f"{tuple(mask.shape)}")

    def forward(self, y) -> tuple[torch.Tensor, torch.Tensor | None]:
        """y: prompt ids (B,) or a `TextCondition` -> text tokens (B, T, d) and their mask (B, T) or None."""
        tokens, mask = y if isinstance(y, TextCondition) else (self.prompts[y], self.prompt_mask[y])
        return self.proj(self.norm(tokens.to(self.proj.weight.dtype))), mask

    def macs(self, tokens: int) -> int:
        return linear_macs(tokens, self.proj)


def prompt_embedder(model: nn.Module) -> TextEmbedder:
    """The `TextEmbedder` of a text-conditioned model (an MM-DiT, or ELIT on one): where its prompt table lives."""
    found = [m for m in model.modules() if isinstance(m, TextEmbedder)]
    if len(found) != 1:
        raise UserError(f"{type(model).__name__} is not text-conditioned: prompts need an MM-DiT (MMDiT-*, "
                        "ELIT-MMDiT-*)")
    return found[0]


class QwenTimestepEmbedder(TimestepEmbedder):
    """Qwen-Image's timestep embedding: the harness's, with the products in diffusers' order, (t * freqs) * scale.

    (scale * t) * freqs, the harness's order, moves the sinusoid features by up to 5e-5 at scale 1000: more than
    a converted model's 1e-5 match to diffusers allows."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None] * self.t_scale
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.mlp[0].weight.dtype))


class Stream(nn.Module):
    """One stream's weights in a joint block: adaLN, LayerNorms, q/k/v with per-head RMS QK-norm, output
    projection and MLP.

    output=False: the stream only lends keys and values to the attention (the last block's text stream, whose
    output nothing reads; SD3's `context_pre_only`): `qkv` makes k and v only, and there are no queries, output
    projection, MLP or their modulation, so no parameter is left without a gradient.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, output: bool = True):
        super().__init__()
        self.num_heads, self.head_dim, self.output = num_heads, dim // num_heads, output
        self.adaLN_modulation = adaln(dim, 6 if output else 2, dim)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, (3 if output else 2) * dim)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        if output:
            self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
            self.proj = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.mlp = Mlp(dim, mlp_ratio)

    def attention_inputs(self, x: torch.Tensor, mod) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """x (B, L, d) -> q (None without an output), k, v (B, H, L, head_dim), q and k normed."""
        h = self.qkv(modulate(self.norm1(x), mod[0], mod[1]))
        *q, k, v = h.unflatten(-1, (-1, self.num_heads, self.head_dim)).unbind(2)
        q = self.q_norm(q[0]).transpose(1, 2) if q else None
        return q, self.k_norm(k).transpose(1, 2), v.transpose(1, 2)

    def finish(self, x: torch.Tensor, attended: torch.Tensor, mod) -> torch.Tensor:
        """Residual updates after the joint attention: x, attended (B, L, d) -> (B, L, d)."""
        _, _, gate1, shift2, scale2, gate2 = mod
        x = x + gate1.unsqueeze(1) * self.proj(attended)
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))

    def macs(self, tokens: int) -> int:
        total = linear_macs(tokens, self.qkv) + linear_macs(1, self.adaLN_modulation[1])
        return total + (linear_macs(tokens, self.proj) + self.mlp.macs(tokens) if self.output else 0)


class MMDiTBlock(nn.Module):
    """A double-stream block: each stream modulates, normalises and projects its own tokens; one attention runs
    over [text; image]; each stream gets its part of the result through its own projection and MLP.

    x (B, T + L, d): the T text tokens, then the L image tokens (or latents); c (B, d); rope: (cos, sin)
    of the T + L positions; mask (B, 1, 1, T + L) bool or None. Returns (B, T + L, d). Without a text output
    (`text_output=False`) only the image tokens query the attention and the text part is returned as it came.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, text_output: bool = True):
        super().__init__()
        self.img = Stream(dim, num_heads, mlp_ratio)
        self.txt = Stream(dim, num_heads, mlp_ratio, output=text_output)

    def forward(self, x, c, rope, mask=None, text_tokens: int = 0):
        txt, img = x[:, :text_tokens], x[:, text_tokens:]
        mod_txt = self.txt.adaLN_modulation(c).chunk(6 if self.txt.output else 2, dim=-1)
        mod_img = self.img.adaLN_modulation(c).chunk(6, dim=-1)
        (qt, kt, vt), (qi, ki, vi) = self.txt.attention_inputs(txt, mod_txt), self.img.attention_inputs(img, mod_img)
        queries = text_tokens if self.txt.output else 0  # text tokens among the queries
        q = torch.cat([qt, qi], dim=2) if queries else qi
        k, v = torch.cat([kt, ki], dim=2), torch.cat([vt, vi], dim=2)
        q_rope = tuple(table[text_tokens - queries:] for table in rope)
        out = F.scaled_dot_product_attention(apply_rope(q, q_rope), apply_rope(k, rope), v, attn_mask=mask)
        out = out.transpose(1, 2).flatten(2)
        img = self.img.finish(img, out[:, queries:], mod_img)
        if self.txt.output:
            txt = self.txt.finish(txt, out[:, :queries], mod_txt)
        return torch.cat([txt, img], dim=1)

    def macs(self, tokens: int, text_tokens: int) -> int:
        """MACs on `tokens` image tokens (or latents) and `text_tokens` text tokens."""
        queries = tokens + (text_tokens if self.txt.output else 0)
        attention = 2 * queries * (tokens + text_tokens) * self.img.proj.in_features
        return self.img.macs(tokens) + self.txt.macs(text_tokens) + attention


@dataclass(frozen=True)
class QwenFrame:
    """A layout's tokens in Qwen-Image's RoPE frame: (frame 0, row, column), rows and columns shifted by
    `offset` so that the image is centred (a `device_rope` layout)."""

    layout: Layout
    offset: tuple[int, int]

    def positions(self) -> torch.Tensor:
        pos = self.layout.positions() - torch.tensor(self.offset, dtype=torch.float32)
        return torch.cat([torch.zeros(len(pos), 1), pos], dim=-1)


def default_rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Channels per RoPE axis (frame, row, column), Qwen-Image's split scaled to any head dim: 128 -> (16, 56, 56)."""
    pairs = head_dim // 2
    frame = pairs // 8
    row = (pairs - frame) // 2
    return 2 * frame, 2 * row, 2 * (pairs - frame - row)


class MMDiT(Backbone):
    """Patch embedding and text embedding -> `depth` double-stream blocks -> final layer on the image tokens.

    text_dim: the text encoder's width (Qwen-Image: 3584, Qwen2.5-VL's hidden size); text_tokens: the
    prompt table's padded length, and the text length `macs()` counts; num_classes: prompts in the table.
    rope_axes: RoPE channels per axis (frame, row, column), summing to the head dim (default
    `default_rope_axes`). Other arguments as for `Backbone`; the defaults follow Qwen-Image (16 latent
    channels, t scaled by 1000 and reversed).
    """

    runs_dit_blocks = False  # its blocks are double-stream blocks: no TaylorSeer forecasts, no ToMe

    def __init__(self, *, input_size=32, in_channels: int = 16, patch_size=2, hidden_size: int = 3072,
                 depth: int = 60, num_heads: int = 24, num_classes: int = 1000, mlp_ratio: float = 4.0,
                 text_dim: int = 3584, text_tokens: int = 300, rope_axes=None, time_scale: float = 1000.0,
                 time_reversed: bool = True):
        head_dim = hidden_size // num_heads
        self.rope_axes = tuple(rope_axes) if rope_axes is not None else default_rope_axes(head_dim)
        if hidden_size % num_heads or len(self.rope_axes) != 3 or sum(self.rope_axes) != head_dim \
                or any(a % 2 for a in self.rope_axes):
            raise UserError(f"MM-DiT RoPE axes {self.rope_axes} must be 3 even channel counts summing to the head "
                            f"dim {hidden_size} / {num_heads} heads")
        if isinstance(patch_size, (tuple, list)) and len(patch_size) != 2:
            raise UserError(f"MM-DiT takes images (B, C, H, W): patch size {patch_size} must be 2D")
        super().__init__(input_size=input_size, in_channels=in_channels, patch_size=patch_size,
                         hidden_size=hidden_size, depth=depth, num_heads=num_heads, num_classes=num_classes,
                         mlp_ratio=mlp_ratio, pos_embed="rope", qk_norm="rms", time_scale=time_scale,
                         time_reversed=time_reversed)
        del self.y_embedder  # conditioned on text through its text stream, not on a label embedding
        self.t_embedder = QwenTimestepEmbedder(hidden_size, t_scale=time_scale)
        self.text_tokens = text_tokens
        self.text_embedder = TextEmbedder(num_classes, text_tokens, text_dim, hidden_size)
        initialize_weights(self.t_embedder)
        initialize_weights(self.text_embedder)

    def build_blocks(self):
        return [MMDiTBlock(self.hidden_size, self.num_heads, self.mlp_ratio, text_output=i < self.depth - 1)
                for i in range(self.depth)]

    def set_prompts(self, tokens: torch.Tensor, mask: torch.Tensor) -> None:
        """Load the prompt set prompt ids index (`TextEmbedder.set_prompts`)."""
        self.text_embedder.set_prompts(tokens, mask)

    # -- the plan: Qwen-Image's RoPE tables of every layout the pass visits
    def shared_plan(self, walk: dict, device) -> dict:
        grid = walk["grid"]
        rows, cols = grid.shape
        offset = (rows - rows // 2, cols - cols // 2)
        pairs = tuple(a // 2 for a in self.rope_axes)
        rope = {layout: device_rope(QwenFrame(layout, offset), self.head_dim, device, pairs)
                for layout in walk["layouts"]}
        return {"patch": walk["patch"], "grid": grid, "rope": rope, "text_start": max(rows // 2, cols // 2)}

    # -- the tensor side
    def embed(self, x, t, y, state: dict):
        """-> image tokens (B, N, d), conditioning (B, d); the text stream and its RoPE tables go to `state`."""
        embedder = self.patch_embedders[state["patch"]]
        tokens = embedder(x).to(embedder.proj.weight.dtype)
        c = state["t_emb"] = self.t_embedder(1 - t if self.time_reversed else t)
        if isinstance(y, TextCondition):
            self.text_embedder.check(y, x.shape[0])
        text, state["text_mask"] = self.text_embedder(y)
        state["text"] = text.to(tokens.dtype)
        positions = state["text_start"] + torch.arange(text.shape[1], device=x.device, dtype=torch.float32)
        state["text_rope"] = rope_tables(positions[:, None].expand(-1, 3), self.head_dim,
                                         axes_pairs=tuple(a // 2 for a in self.rope_axes))
        return tokens, c

    def run_blocks(self, x, c, layout: Layout, start: int, stop: int, state: dict):
        """Blocks start..stop-1 on image tokens (or latents) x (B, L, d) and the text stream in `state`
        -> (x, layout); `state["text"]` is updated."""
        if start == stop:
            return x, layout
        text, mask = state["text"], state["text_mask"]
        rope = tuple(torch.cat(pair) for pair in zip(state["text_rope"], state["rope"][layout]))
        if mask is not None:  # image tokens and latents are never padding
            mask = torch.cat([mask, mask.new_ones(x.shape[0], x.shape[1])], dim=1)[:, None, None]
        h, n = torch.cat([text, x], dim=1), text.shape[1]
        checkpoint = self.checkpoint_blocks and torch.is_grad_enabled()
        for i in range(start, stop):
            if checkpoint:
                h = torch.utils.checkpoint.checkpoint(self.blocks[i], h, c, rope, mask, n, use_reentrant=False)
            else:
                h = self.blocks[i](h, c, rope, mask, n)
        state["text"] = h[:, :n]
        return h[:, n:], layout

    # -- analytic FLOPs (text counted at `text_tokens`)
    def macs_embed(self, input_shape, patch_size=None):
        costs, grid, state = super().macs_embed(input_shape, patch_size)
        costs["embed"] += self.text_embedder.macs(self.text_tokens)
        return costs, grid, {**state, "text_tokens": self.text_tokens}

    def macs_blocks(self, layout: Layout, start: int, stop: int, state: dict):
        if start < stop:
            state.setdefault("layouts", set()).add(layout)
        blocks = sum(self.blocks[i].macs(layout.num_tokens, state["text_tokens"]) for i in range(start, stop))
        return blocks, 0, layout
