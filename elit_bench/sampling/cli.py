"""`elit-bench sample`: a seeded, resumable sample set from a checkpoint."""

from __future__ import annotations

import argparse

from elit_bench.flow.guidance import MODES
from elit_bench.flow.sampling import DEFAULT_STEPS, SOLVERS
from elit_bench.flow.schedules import SYNTAX
from elit_bench.models.precision import DEFAULT_SAMPLE_PRECISION, SAMPLE_PRECISIONS


def register(sub) -> None:
    p = sub.add_parser(
        "sample", help="draw a sample set (ADM .npz + JSON record) from a checkpoint",
        description="Euler/Heun sampling from noise (t=0) to data (t=1) with elastic budgets, guidance "
                    "(none, CFG, autoguidance, cheap CFG), TeaCache and TaylorSeer. Sample i uses its own "
                    "generator seeded by i, so a set does not depend on --batch or the number of torchrun processes; "
                    "rerunning the same command into the same --out completes an interrupted set.")
    p.add_argument("checkpoint", help="checkpoint .pt written by `elit-bench train` (e.g. RUN/checkpoints/last.pt)")
    p.add_argument("--out", required=True, help="output directory (samples.npz, samples.json, optional grid.png)")
    p.add_argument("--num", type=int, help="number of samples, seeds 0..N-1 (under torchrun use --seeds: "
                                           "torchrun's own parser mistakes --num for its --numa-binding)")
    p.add_argument("--seeds", help="seeds, A-B inclusive or a comma list, e.g. 0-9999 (agrees with --num if both)")
    p.add_argument("--class-labels", type=int, nargs="+", metavar="Y",
                   help="labels cycled over the set (default: uniform, drawn from each sample's generator)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="sampling steps")
    p.add_argument("--sampler", choices=SOLVERS, default="euler", help="ODE solver (heun: 2 evaluations per step)")
    p.add_argument("--shift", type=float, default=1.0,
                   help="time shift of the uniform grid (1 = uniform; >1 = more steps near the noise)")
    p.add_argument("--guidance", default="none", metavar="{" + ",".join(MODES) + "}",
                   help="cfg: G(x|0;J) guides; ag: G(x|c;J_w); ccfg: G(x|0;J_w) (paper Eq. 3)")
    p.add_argument("--scale", type=float, default=0.0,
                   help="guidance scale l of Eq. 3, v = (l+1) main - l guide; the common w is l + 1")
    p.add_argument("--budget", type=int, help="latents per group J of the main pass (ELIT; default all)")
    p.add_argument("--guide-budget", type=int, help="latents per group J_w of the AG / CCFG guide pass (<= budget)")
    p.add_argument("--schedule", help=f"per-step budgets instead of --budget: {SYNTAX}")
    p.add_argument("--guidance-interval", type=float, nargs=2, metavar=("T_LO", "T_HI"),
                   help="apply guidance only for t in [T_LO, T_HI]")
    p.add_argument("--teacache", type=float, metavar="THRESH",
                   help="TeaCache threshold on the accumulated timestep-embedding change (off by default)")
    p.add_argument("--taylorseer", type=int, nargs=2, metavar=("ORDER", "INTERVAL"),
                   help="TaylorSeer: the model runs in full at the first two evaluations and one in INTERVAL after; "
                        "between, each block's attention and MLP outputs are forecast by a Taylor expansion of ORDER "
                        "(off by default; not with --teacache)")
    p.add_argument("--tome", type=float, metavar="RATIO",
                   help="ToMe: merge this share of each block's tokens (0 < RATIO <= 0.75) before attention, "
                        "unmerge after (off by default)")
    p.add_argument("--patch-size", type=int, help="patchifier of a multi-patch model (e.g. 4)")
    p.add_argument("--precision", choices=SAMPLE_PRECISIONS, default=DEFAULT_SAMPLE_PRECISION,
                   help="model arithmetic: fp32, tf32 (fp32 with TF32 matmuls on CUDA; the released code's "
                        "default) or bf16 autocast; recorded in the set's settings")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="use the EMA weights")
    p.add_argument("--batch", type=int, default=32, help="samples per forward batch (does not change the samples)")
    p.add_argument("--grid", action="store_true", help="also write grid.png of the first 64 samples")
    p.add_argument("--device", help="torch device (default: this rank's GPU if any, else CPU)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    from elit_bench import distributed
    from elit_bench.checkpoint import check_output
    from elit_bench.flow.taylorseer import TaylorSeer
    from elit_bench.sampling.generate import Recipe, generate, seed_list

    check_output(args.out, "--out")  # before the model is loaded and sampled
    seeds = seed_list(args.num, args.seeds)
    recipe = Recipe(
        steps=args.steps, sampler=args.sampler, shift=args.shift, guidance=args.guidance, scale=args.scale,
        budget=args.budget, guide_budget=args.guide_budget, schedule=args.schedule,
        interval=tuple(args.guidance_interval) if args.guidance_interval else None, teacache=args.teacache,
        taylorseer=TaylorSeer(*args.taylorseer) if args.taylorseer else None, tome=args.tome,
        patch_size=args.patch_size,
        class_labels=tuple(args.class_labels) if args.class_labels else None, precision=args.precision)
    with distributed.job(args.device) as job:  # under torchrun: the group lives as long as the command
        record = generate(args.checkpoint, args.out, seeds, recipe, ema=args.ema, batch=args.batch, grid=args.grid,
                          device=args.device, progress=args.progress)
    if job.is_main:  # under torchrun, rank 0 speaks
        evaluations = record["model_evaluations"]
        cached = (f"; TeaCache skipped {record['teacache_skipped_steps']} of {evaluations} evaluations"
                  if record["teacache_threshold"] is not None else
                  f"; TaylorSeer forecast {record['taylorseer_forecast_evaluations']} of {evaluations} evaluations"
                  if record["taylorseer_order"] is not None else "")
        print(f"{record['num_samples']} samples -> {args.out}/samples.npz ({record['resumed_samples']} resumed); "
              f"{record['flops_per_sample'] / 1e9:.4g} GFLOPs per sample, {record['flops_vs_cfg']:.3f}x CFG at the "
              f"same budget{cached}")
    return 0
