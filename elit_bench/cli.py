"""`elit-bench` command line.

Each subcommand lives next to the code it drives and exposes
`register(subparsers)`, which adds its parser and sets `func`. Modules are
imported lazily so that `elit-bench --help` stays fast. Any `UserError` (bad
input) prints its message and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from elit_bench import __version__
from elit_bench.errors import UserError

# subcommand modules, in the order `--help` lists them
COMMAND_MODULES = (
    "elit_bench.models.cli",
    "elit_bench.metrics.cli",
    "elit_bench.sampling.cli",
    "elit_bench.training.cli",
    "elit_bench.data.cli",
    "elit_bench.suites.cli",
    "elit_bench.results.cli",
    "elit_bench.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elit-bench",
        description="Benchmark harness for elastic diffusion transformers (ELIT) and matched baselines.",
    )
    parser.add_argument("--version", action="version", version=f"elit-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = ["elit-bench", *argv]  # what records name as the command that made them
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"elit-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
