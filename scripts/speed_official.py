"""Training-step speed, side by side: the harness's ELIT-SiT against the released implementation.

Same weights (the official model's, converted), same input, same device, one process; rounds
alternate between the two so that a slow spell of a shared machine hits both. A step is forward +
backward of an MSE loss (no optimiser: both would run the same AdamW). Prints the median seconds per
step and ours' speed relative to the official code (> 1: ours is faster) at each budget.

    python scripts/speed_official.py --model ELIT-SiT-S/2 --resolution 256 --batch 8 --budgets 16,4 \
        [--oracle ../shared/oracle] [--rounds 5] [--steps 3] [--device cuda] [--out results/bench/x.json]

The oracle (../shared/oracle/elit-official, needs timm and einops) is imported here only, never by
the package.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from elit_bench.checkpoint import atomic_write
from elit_bench.convert import convert


def load_official(oracle: Path):
    sys.path.insert(0, str(oracle / "elit-official"))
    from models.sit_elit import SiT_models

    return SiT_models


def timed_steps(step, steps: int, device) -> float:
    """Median seconds of `steps` calls of step()."""
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ELIT-SiT-S/2")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--budgets", default="16,4", help="latents per group, comma list (16 = full at 256 px)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="timed steps per round and model")
    p.add_argument("--oracle", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "oracle")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    latent = args.resolution // 8
    official = load_official(args.oracle)[args.model](
        input_size=latent, in_channels=4, num_classes=1000, group_size=4 if args.resolution == 256 else 8,
        elit_min_mask_prob=0.0, qk_norm=False).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "official.pt"
        torch.save(official.state_dict(), src)
        ckpt = convert(src, "elit-official", args.model)
    from elit_bench.models import model_from_checkpoint

    ours = model_from_checkpoint(ckpt, device=device).train()
    official.train()
    J = ours.max_budget
    x = torch.randn(args.batch, 4, latent, latent, device=device)
    t = torch.rand(args.batch, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)

    results = []
    for budget in (int(b) for b in args.budgets.split(",")):
        def ours_step():
            ours.zero_grad(set_to_none=True)
            ours(x, t, y, budget=budget).square().mean().backward()

        def official_step():
            official.zero_grad(set_to_none=True)
            official(x, 1 - t, y, inference_budget=budget / J)[0].square().mean().backward()

        ours_step(), official_step()  # warm-up
        mine, theirs = [], []
        for _ in range(args.rounds):
            mine.append(timed_steps(ours_step, args.steps, device))
            theirs.append(timed_steps(official_step, args.steps, device))
        row = {"budget": budget, "ours_s": statistics.median(mine), "official_s": statistics.median(theirs)}
        row["speed_ratio"] = row["official_s"] / row["ours_s"]
        results.append(row)
        print(f"J={budget:>3}: ours {row['ours_s'] * 1e3:8.1f} ms/step, official {row['official_s'] * 1e3:8.1f} ms/step,"
              f" ours is {row['speed_ratio']:.2f}x the official speed")
    if args.out:
        meta = {"command": " ".join(["python", *sys.argv]), "model": args.model, "resolution": args.resolution,
                "batch": args.batch, "device": str(device), "threads": torch.get_num_threads(),
                "torch": torch.__version__, "rounds": args.rounds, "steps": args.steps, "results": results}
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
