"""``elit-bench metrics``: compare a sample set with a reference, or write reference statistics.

Examples::

    elit-bench metrics --fake samples.npz --real VIRTUAL_imagenet256_labeled.npz \\
        --metrics fid,is,sfid,pr --inception-weights weights-inception-2015-12-05-6726825d.pth --json
    elit-bench metrics --real data/val_images --metrics fid,fdd --save-real-stats val_stats.npz \\
        --dinov2-repo ~/dinov2 --dinov2-weights dinov2_vitl14_pretrain.pth
    torchrun --nproc_per_node 8 -m elit_bench.cli metrics --fake ... --real ...   # sharded extraction

Heavy modules are imported when the command runs, not when the parser is built.
"""

from __future__ import annotations

import argparse
import json

from elit_bench.errors import UserError

# (flag, extractor, constructor option)
WEIGHT_FLAGS = (
    ("inception_weights", "inception-v3-tf", "weights"),
    ("dinov2_weights", "dinov2-vitl14", "weights"),
    ("dinov2_repo", "dinov2-vitl14", "repo"),
    ("i3d", "i3d-stylegan-v", "weights"),
    ("digits_weights", "digits-cnn", "weights"),
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "metrics",
        help="FID, FDD, IS, sFID, precision/recall, KID, FVD of samples against a reference",
        description=(
            "Compute generative metrics of --fake against --real. PATH is an image folder, an .npz in the ADM "
            "layout (arr_0 uint8 images (N,H,W,3) or videos (N,T,H,W,3), optional arr_1 labels and stored "
            "mu/sigma/mu_s/sigma_s), or a statistics .npz. Stored statistics are used for Frechet metrics when "
            "present. Weights are never downloaded: name the files or put them in the torch hub cache."
        ),
    )
    p.add_argument("--fake", metavar="PATH", help="generated samples (or their statistics)")
    p.add_argument("--real", metavar="PATH", help="reference samples or statistics")
    p.add_argument(
        "--metrics", default="fid", help="comma-separated: fid,fdd,is,sfid,pr,kid,fvd,digits_fd,digits_acc (default: fid)"
    )
    p.add_argument("--inception-weights", metavar="F", help="torch-fidelity Inception state dict (weights-inception-2015-12-05-6726825d.pth)")
    p.add_argument("--dinov2-weights", metavar="F", help="DINOv2 ViT-L/14 weights (dinov2_vitl14_pretrain.pth)")
    p.add_argument("--dinov2-repo", metavar="DIR", help="local clone of facebookresearch/dinov2 (default: torch hub cache)")
    p.add_argument("--i3d", metavar="F", help="I3D TorchScript detector for FVD (i3d_torchscript.pt)")
    p.add_argument("--digits-weights", metavar="F", help="digits classifier weights (default: the shipped ones)")
    p.add_argument("--batch", type=_positive_int, default=64, metavar="B", help="extraction batch size (default 64)")
    p.add_argument("--device", help="torch device (default: this rank's GPU if available, else cpu)")
    p.add_argument("--cache-dir", metavar="DIR", help="feature cache (default $ELIT_BENCH_CACHE/features or ~/.cache/elit_bench/features)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--save-real-stats", metavar="OUT", help="write the --real statistics of the requested Frechet metrics to OUT (.npz)")
    p.add_argument("--json", action="store_true", help="print one JSON object (metrics and provenance)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from elit_bench import distributed
    from elit_bench.metrics.compute import Evaluator, parse_metrics
    from elit_bench.metrics.sources import open_source

    metrics = parse_metrics(args.metrics)
    if args.fake is None and args.save_real_stats is None:
        raise UserError("give --fake PATH (with --real PATH for comparisons), or --real PATH --save-real-stats OUT")
    if args.save_real_stats is not None and args.real is None:
        raise UserError("--save-real-stats needs --real PATH")
    if args.save_real_stats is not None:  # before features are extracted, not after
        from elit_bench.checkpoint import check_output

        check_output(args.save_real_stats, "--save-real-stats", folder=False)
    options: dict[str, dict] = {}
    for flag, extractor, option in WEIGHT_FLAGS:
        if getattr(args, flag) is not None:
            options.setdefault(extractor, {})[option] = getattr(args, flag)
    with distributed.job(args.device) as job:  # under torchrun: one group for the command, extraction sharded
        evaluator = Evaluator(options, batch_size=args.batch, device=job.device, cache_dir=args.cache_dir,
                              use_cache=not args.no_cache, progress=not args.quiet)
        real = open_source(args.real) if args.real is not None else None
        results: dict = {}
        if args.save_real_stats is not None:
            evaluator.save_statistics(real, metrics, args.save_real_stats)
            results["saved_statistics"] = args.save_real_stats
        if args.fake is not None:
            results.update(evaluator.compute(open_source(args.fake), real, metrics))
    if job.is_main:
        print(json.dumps(results, indent=1) if args.json else _human(results))
    return 0


def _human(results: dict) -> str:
    bounds = results.get("intervals", {})
    lines = []
    for key, value in results.items():
        if key in ("provenance", "intervals"):
            continue
        line = f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}"
        if key in bounds:
            b = bounds[key]
            line += f"  {b['level']:.0%} interval [{b['low']:.6g}, {b['high']:.6g}] ({b['method']})"
        lines.append(line)
    for metric, ref in results.get("provenance", {}).get("reference_statistics", {}).items():
        digest = ref.get("sha256") or ref.get("content_sha256")
        lines.append(f"{metric} reference: {digest[:16]} ({ref.get('origin', 'samples')}, n={ref.get('num_samples')})")
    return "\n".join(lines)
