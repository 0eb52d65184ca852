"""`elit-bench` command line.

Each subcommand lives next to the code it drives and exposes
`register(subparsers)`, which adds its parser and sets `func`. Modules are
imported lazily so that `elit-bench --help` stays fast. Every error a user can
act on is one line on stderr and exit status 2: a `UserError` (bad input) prints
its message, an OSError names what failed on which path (a full disk, a
read-only or missing folder, a permission), a file that is not UTF-8 text says
so; Ctrl-C is "interrupted; rerun the same command to resume", status 130 (the
commands that write resume where they stopped). Anything else is a bug and keeps
its traceback. `-q` / `-v` (before or after the subcommand) set the log level;
`-q` also turns progress bars off.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
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
    "elit_bench.data.text_cli",
    "elit_bench.suites.cli",
    "elit_bench.results.cli",
    "elit_bench.results.compare",
    "elit_bench.results.plan",
    "elit_bench.results.dpg_cli",
    "elit_bench.bench.cli",
    "elit_bench.convert",
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (what was wrong, and where the help is), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    except KeyboardInterrupt:
        print(f"elit-bench {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (UserError, OSError, UnicodeDecodeError) as exc:
        print(f"elit-bench {args.command}: error: {describe_error(exc)}", file=sys.stderr)
        return 2


# what to do about an OSError, by errno
OS_ADVICE = {
    errno.ENOSPC: "free some space and rerun the same command to resume",
    errno.EDQUOT: "free some space and rerun the same command to resume",
    errno.EACCES: "choose a path you may write, or fix its permissions",
    errno.EPERM: "choose a path you may write, or fix its permissions",
    errno.EROFS: "choose a path on a writable file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def describe_error(exc: BaseException) -> str:
    """One line for an error the user can act on (see the module docstring)."""
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
    if isinstance(exc, OSError) and exc.errno is not None:
        what = os.strerror(exc.errno)
        what = what[0].lower() + what[1:]
        paths = " -> ".join(repr(str(p)) for p in (exc.filename, exc.filename2) if p is not None)
        advice = OS_ADVICE.get(exc.errno)
        return f"{what}{f' on {paths}' if paths else ''}" + (f"; {advice}" if advice else "")
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
