"""Small models and utilities shared by the tests."""

import torch


def tiny(name: str, **kw):
    """A small CPU model: 8x8 token grid of 1-channel pixels, width 64, depth 6."""
    from elit_bench.models import create_model

    args = dict(input_size=16, in_channels=1, num_classes=10, hidden_size=64, depth=6, num_heads=4)
    args.update(kw)
    return create_model(name, **args)


def randomize(model, std: float = 0.05, seed: int = 0):
    """Replace the zero (adaLN-Zero) init by random weights so every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model
