"""`elit-bench data`: encode an ImageFolder into a latent data set, or describe a data set."""

from __future__ import annotations

import json

from elit_bench.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="prepare and inspect training data sets",
                                   description="Prepare and inspect training data sets.")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    enc = sub.add_parser("encode", help="ImageFolder -> latent data set through a local diffusers AutoencoderKL",
                         description="Encode ROOT/<class>/<image> files (ADM center crop) into sharded latents.")
    enc.add_argument("root", help="ImageFolder root, e.g. imagenet/train")
    enc.add_argument("--autoencoder", required=True,
                     help="local diffusers AutoencoderKL directory (FLUX: 16 channels, SD: 4 channels)")
    enc.add_argument("--resolution", type=int, required=True, help="image size in px after the center crop")
    enc.add_argument("--out", required=True, help="new directory for the latent data set")
    enc.add_argument("--batch", type=int, default=32, help="images per encoder batch")
    enc.add_argument("--shard-size", type=int, default=10000, help="samples per .npy shard")
    enc.add_argument("--workers", type=int, default=4, help="image decoding processes")
    enc.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    enc.add_argument("--limit", type=int, default=None, help="encode only the first N images (for trials)")
    enc.add_argument("--no-flip", action="store_true",
                     help="do not also store each image's horizontally flipped encoding (stored by default)")
    enc.add_argument("--posterior", action="store_true",
                     help="also store the posterior's std: training then draws a latent each step (REPA)")
    enc.set_defaults(func=_encode)

    info = sub.add_parser("info", help="print the description of a data set (digits, padded-digits or a path)")
    info.add_argument("spec", help="digits, padded-digits, or a latent data set directory")
    info.add_argument("--resolution", type=int, default=None, help="resolution for the embedded digits (default 16)")
    info.set_defaults(func=_info)


def _encode(args) -> int:
    from elit_bench.data.encode import encode_image_folder

    if args.batch < 1 or args.workers < 0:
        raise UserError("--batch must be >= 1 and --workers >= 0")
    out = encode_image_folder(args.root, args.autoencoder, args.out, args.resolution, batch_size=args.batch,
                              shard_size=args.shard_size, device=args.device, workers=args.workers,
                              limit=args.limit, flips=not args.no_flip, posterior=args.posterior)
    print(f"wrote latent data set {out}")
    return 0


def _info(args) -> int:
    from elit_bench.data import EMBEDDED, build_dataset, describe_data
    from elit_bench.data.digits import DEFAULT_RESOLUTION

    resolution = args.resolution
    if resolution is None and args.spec in EMBEDDED:
        resolution = DEFAULT_RESOLUTION
    description = describe_data(args.spec, resolution)
    dataset = build_dataset(description)
    x, _ = dataset.load([0])
    print(json.dumps({**description, "num_samples": len(dataset), "model_input_shape": list(x.shape[1:])}, indent=2))
    return 0
