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


def free_port() -> int:
    """A TCP port free on localhost now (for a gloo rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_rank(rank: int, world: int, port: int, config: dict) -> dict:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from elit_bench import distributed
    from elit_bench.training import train

    with distributed.job():
        return train(config)


def _train_rank_to_file(rank: int, world: int, port: int, config: dict, out_dir: str) -> None:
    import json
    import os

    summary = _train_rank(rank, world, port, config)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(summary, f)


def train_ddp(config: dict, out_dir, world: int = 2) -> list[dict]:
    """`train(config)` in `world` gloo processes (one job each) -> every rank's training summary."""
    import json
    from pathlib import Path

    import torch.multiprocessing as mp

    mp.spawn(_train_rank_to_file, args=(world, free_port(), config, str(out_dir)), nprocs=world, join=True)
    return [json.loads((Path(out_dir) / f"rank{r}.json").read_text()) for r in range(world)]


def tiny_suite(name: str, runs: str) -> str:
    """A suite file's text: tiny digits models (2 training steps, 8 samples per evaluation) and the given runs
    (YAML list items, one per line), at scale smoke."""
    return f"""name: {name}
base:
  train: {{data: digits, resolution: 8, batch: 8, steps: 2, ckpt_every: 2, log_every: 1, progress: false,
          model_kwargs: {{hidden_size: 32, depth: 2, num_heads: 2}}}}
  sample: {{steps: 2, batch: 8}}
  metrics: {{names: [digits_acc], num_samples: 8, real: digits}}
runs:
{runs}
scales: {{smoke: {{}}}}
"""
