"""`elit-bench` command line.

Each subcommand lives next to the code it drives and exposes
`register(subparsers)`, which adds its parser and sets `func`. Modules are
imported lazily so that `elit-bench --help` stays fast. Any `UserError` (bad
input) prints its message and exits with status 2. `-q` / `-v` (before or
after the subcommand) set the log level; `-q` also turns progress bars off.
"""

from __future__ import annotations

import argparse
import importlib
import logging
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
    "elit_bench.results.compare",
    "elit_bench.bench",
    "elit_bench.convert",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elit-bench",
        description="Benchmark harness for elastic diffusion transformers (ELIT) and matched baselines.",
    )
    parser.add_argument("--version", action="version", version=f"elit-bench {__version__}")
    _talk_options(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():  # `elit-bench -q run ...` and `elit-bench run ... -q` alike
        _talk_options(command, default=argparse.SUPPRESS)
    return parser


def _talk_options(parser: argparse.ArgumentParser, default) -> None:
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", default=default,
                      help="no progress bars, only warnings and errors")
    talk.add_argument("-v", "--verbose", action="store_true", default=default,
                      help="also debug messages (resolved configs, launch commands)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = ["elit-bench", *argv]  # what records name as the command that made them
    logging.basicConfig(format="%(message)s")  # other libraries: warnings and errors
    logging.getLogger("elit_bench").setLevel(logging.WARNING if args.quiet else
                                             logging.DEBUG if args.verbose else logging.INFO)
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
