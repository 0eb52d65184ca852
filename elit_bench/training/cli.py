"""`elit-bench train [CONFIG.yaml] [--model M] [--data D] ... [key=value ...]`.

Precedence: built-in defaults < CONFIG.yaml < flags < key=value overrides
(dotted keys reach into mappings: `model_kwargs.hidden_size=64`). Options,
the config file and overrides may come in any order. Under
`torchrun --nproc_per_node=N -m elit_bench.cli train ...` the same command
trains one run on N processes.
"""

from __future__ import annotations

import argparse

from elit_bench.errors import UserError

# flag -> config key (None: the flag was not given)
FLAGS = ("model", "data", "resolution", "batch", "steps", "seed", "multi_budget", "budget_range", "out")


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="registry name, e.g. DiT-S/2 or ELIT-DiT-S/2 (`elit-bench models` lists them)")
    parser.add_argument("--data", help="digits | padded-digits | moving-digits | latent data set directory (default: digits)")
    parser.add_argument("--resolution", type=int, help="image size in px for the embedded digits (default 16)")
    parser.add_argument("--batch", type=int, help="global batch size, split over processes")
    parser.add_argument("--steps", type=int, help="total optimizer steps; a larger value continues a finished run")
    parser.add_argument("--seed", type=int, help="run seed (data order, noise, budgets, initial weights)")
    parser.add_argument("--multi-budget", action="store_const", const=True,
                        help="draw the budget J~ uniformly each iteration (ELIT; range 1:J unless --budget-range)")
    parser.add_argument("--budget-range", help="JMIN:JMAX for multi-budget training, e.g. 1:16")
    parser.add_argument("--drop", choices=("tail", "random"), help="ELIT latent dropping (model_kwargs.drop)")
    parser.add_argument("--out", help="run directory (default: runs/<model>-<data>-<hash>)")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model (rectified flow); re-running the command resumes it",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_options(parser)
    # argparse cannot take positionals before and after options; the remainder is re-parsed intermixed
    parser.add_argument("rest", nargs=argparse.REMAINDER, metavar="[CONFIG.yaml] [key=value ...]")
    parser.set_defaults(func=run)


def config_from_args(args) -> dict:
    """The user config the command line describes (before defaults and validation)."""
    from elit_bench.training.config import load_yaml
    from elit_bench.yamlconfig import apply_overrides

    again = argparse.ArgumentParser(prog="elit-bench train")
    _add_options(again)
    again.add_argument("items", nargs="*")
    extra = again.parse_intermixed_args(args.rest)
    items = extra.items
    config_file = items.pop(0) if items and "=" not in items[0] else None
    stray = [i for i in items if "=" not in i]
    if stray:
        raise UserError(f"unexpected argument(s) {' '.join(stray)}: give at most one CONFIG.yaml, then key=value "
                        "overrides")
    config = load_yaml(config_file) if config_file else {}
    for key in FLAGS:
        value = getattr(extra, key) if getattr(extra, key) is not None else getattr(args, key)
        if value is not None:
            config[key] = value
    drop = extra.drop or args.drop
    if drop is not None:
        config["model_kwargs"] = {**(config.get("model_kwargs") or {}), "drop": drop}
    return apply_overrides(config, items)


def run(args) -> int:
    from elit_bench import distributed
    from elit_bench.training.trainer import train

    config = config_from_args(args)
    with distributed.job() as job:  # under torchrun: the group lives as long as the command
        summary = train(config)
    if summary["losses"] and job.is_main:
        tail = summary["losses"][-10:]
        print(f"{summary['out']}: step {summary['step']}, loss {sum(tail) / len(tail):.4f} (last {len(tail)} steps), "
              f"{summary['steps_per_s']:.2f} steps/s")
    return 0
