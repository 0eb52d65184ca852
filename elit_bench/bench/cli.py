"""`elit-bench bench`: how fast things run on this machine, measured, with how they were measured.

    elit-bench bench train DiT-XL/2 ELIT-DiT-XL/2 --resolution 256 --batch 32 --steps 5 --compile
    elit-bench bench latency ELIT-DiT-XL/2 --resolution 512 --budgets 4,16,32,64 --batch 16 --precision bf16
    elit-bench bench inception --images 256 --size 64 --batch 64

Each prints a Markdown table. `--out FILE.json` also writes the measurements
with the exact command, code and library versions, device and torch thread
count (atomically), so that committed figures under `results/bench/` say how
they were made. Speed targets live here, not in timed unit tests.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from elit_bench.errors import UserError
from elit_bench.models.precision import DEFAULT_SAMPLE_PRECISION, SAMPLE_PRECISIONS


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _budgets(text: str) -> list:
    """'1,4,16' -> [1, 4, 16]; 'all' -> [None] (the full budget)."""
    try:
        return [None if part == "all" else int(part) for part in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"budgets are comma-separated integers or 'all', got {text!r}") from exc


def _model_kwargs(items: list[str]) -> dict:
    from elit_bench.yamlconfig import apply_overrides

    return apply_overrides({}, items, "--kw", "group_size=2")


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="speed benchmarks on this machine (training, latency, Inception)",
                                   description=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)

    def common(p):
        p.add_argument("--out", type=Path, help="also write the measurements and their provenance to this JSON file")
        p.add_argument("--threads", type=_positive, help="torch CPU threads (default: torch's choice)")

    p = sub.add_parser("train", help="training steps/s and MFU (forward, backward, optimizer, EMA) on latents")
    p.add_argument("models", nargs="+", help="registry names, e.g. DiT-S/2 ELIT-DiT-S/2")
    p.add_argument("--resolution", type=_positive, default=256,
                   help="image px; the model trains on random 4-channel latents 8x smaller (256 -> 32x32)")
    p.add_argument("--batch", type=_positive, default=8, help="global batch per step")
    p.add_argument("--steps", type=_positive, default=5, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--rounds", type=_positive, default=3, help="timed rounds, models alternating; the median is shown")
    p.add_argument("--multi-budget", action="store_true", help="ELIT models draw J~ each step as in multi-budget training; baselines train as usual")
    p.add_argument("--compile", action="store_true",
                   help="train.compile: report graphs compiled, graph breaks and fallbacks to eager too")
    p.add_argument("--peak-tflops", type=float,
                   help="device peak dense bf16 TFLOP/s for MFU (default: a table of known GPUs; none on CPU)")
    p.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE", help="create_model override")
    common(p)

    p = sub.add_parser("latency", help="forward ms per sample beside analytic GFLOPs, across budgets (Fig. 9)")
    p.add_argument("model")
    p.add_argument("--resolution", type=_positive, default=256, help="image px (latent models: 8x down)")
    p.add_argument("--budgets", type=_budgets, default=[None], help="comma-separated J~ values or 'all'")
    p.add_argument("--batch", type=_positive, default=8, help="samples per forward pass")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes first")
    p.add_argument("--repeats", type=_positive, default=5, help="timed passes; the median is shown")
    p.add_argument("--precision", choices=SAMPLE_PRECISIONS, default=DEFAULT_SAMPLE_PRECISION,
                   help="the sampler's precision (`elit-bench sample --precision`)")
    p.add_argument("--compile", action="store_true", help="compile the model, one graph per budget (in the warmup)")
    p.add_argument("--cuda-graphs", action="store_true", help="capture each budget's forward as a CUDA graph (CUDA only)")
    p.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE", help="create_model override")
    common(p)

    p = sub.add_parser("inception", help="Inception features/s: ours vs torch-fidelity on the same images")
    p.add_argument("--images", type=_positive, default=256)
    p.add_argument("--size", type=_positive, default=64, help="image side in pixels")
    p.add_argument("--batch", type=_positive, default=64)
    p.add_argument("--repeats", type=_positive, default=2, help="runs per pipeline, alternating; best is kept")
    p.add_argument("--inception-weights", type=Path, help="default: a random-weight stand-in (speed is the same)")
    common(p)
    parser.set_defaults(func=run)


def run(args) -> int:
    from elit_bench.checkpoint import atomic_write
    from elit_bench.provenance import provenance

    if args.out is not None and args.out.is_dir():
        raise UserError(f"--out {str(args.out)!r} is a directory; give a .json file path")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bench == "train":
        from elit_bench.bench.speed import train_speed

        kwargs = _model_kwargs(args.kw)
        rounds = {name: [] for name in args.models}
        plan = [name for _ in range(args.rounds) for name in args.models]  # alternate: load hits every model alike
        for name in tqdm(plan, desc="bench train", unit="window", dynamic_ncols=True):
            rounds[name].append(train_speed(name, args.resolution, args.batch, args.steps, args.warmup,
                                            args.multi_budget, kwargs, args.compile, args.peak_tflops))
        rows = []
        for results in rounds.values():
            rates = [r["steps_per_s"] for r in results]
            median = sorted(results, key=lambda r: r["steps_per_s"])[len(results) // 2]
            rows.append({**median, "rounds": len(results), "steps_per_s_all": rates})
    elif args.bench == "latency":
        from elit_bench.bench.speed import latency_sweep

        rows = latency_sweep(args.model, args.resolution, args.budgets, args.batch, args.warmup, args.repeats,
                             _model_kwargs(args.kw), precision=args.precision, compile=args.compile,
                             cuda_graphs=args.cuda_graphs)
    else:
        from elit_bench.bench.inception import inception_speed

        rows = inception_speed(args.images, args.size, args.batch, args.repeats, args.inception_weights)
    table = pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, list)} for r in rows])
    print(f"torch threads {torch.get_num_threads()}")
    print(table.to_markdown(index=False, floatfmt=".4g"))
    if args.out is not None:
        record = {"bench": args.bench, "command": shlex.join(args.command_line),
                  "torch_threads": torch.get_num_threads(), "provenance": provenance(), "results": rows}
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, default=str)))
        print(f"wrote {args.out}")
    return 0
