"""How alike a trained model's tokens are, block by block: the regime ToMe's merging assumes.

ToMe merges each src token into its most similar dst token (cosine of the block input), so it costs
little only where tokens have near-duplicates. Prints, for each block and each t, the mean over tokens
of the cosine similarity to the most similar other token, on noised training images x_t = t x + (1 - t) e.

    python scripts/tome_similarity.py CHECKPOINT [--t 0.2 0.5 0.9] [--batch 64] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from elit_bench.checkpoint import load_checkpoint
from elit_bench.data import build_dataset
from elit_bench.sampling.generate import model_from_checkpoint


def nearest_token_cosine(x: torch.Tensor) -> float:
    """x (B, L, d) -> mean over batch and tokens of the largest cosine similarity to another token."""
    x = x / x.norm(dim=-1, keepdim=True)
    sim = x @ x.transpose(1, 2)
    sim.diagonal(dim1=1, dim2=2).fill_(-2.0)
    return sim.max(dim=-1).values.mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--t", type=float, nargs="+", default=[0.2, 0.5, 0.9])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt, ema=True).eval()
    images, labels = build_dataset(ckpt["config"]["data"]).load(np.arange(args.batch))
    inputs: list[torch.Tensor] = []
    for block in model.blocks:
        block.register_forward_pre_hook(lambda _module, a: inputs.append(a[0]))
    g = torch.Generator().manual_seed(args.seed)
    print("t     " + " ".join(f"block{i:<3d}" for i in range(len(model.blocks))))
    for t in args.t:
        inputs.clear()
        noise = torch.randn(images.shape, generator=g)
        with torch.no_grad():
            model(t * images + (1 - t) * noise, torch.full((len(images),), t), labels)
        print(f"{t:<5.2f} " + " ".join(f"{nearest_token_cosine(x):<8.3f}" for x in inputs))


if __name__ == "__main__":
    main()
