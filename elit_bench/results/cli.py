"""`elit-bench table`, `elit-bench plot` and `elit-bench leaderboard`."""

from __future__ import annotations

from pathlib import Path

from elit_bench.errors import UserError


def register(sub) -> None:
    for name, helptext in (("table", "render a suite's table (Markdown and LaTeX), ours beside the published numbers; "
                                    "a claims suite: verdicts.json and the forest plot too"),
                           ("plot", "draw a suite's figure with seaborn (PNG and SVG)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("suite")
        p.add_argument("--out", default="runs", help="where the suite's runs live")
        p.add_argument("--scale", help="the records of this scale (default: the cheapest scale that has records)")
        p.add_argument("--dest", help="output folder (default OUT/<suite>/<scale>/report)")
        p.set_defaults(func=cmd_table if name == "table" else cmd_plot)
    p = sub.add_parser("leaderboard", help="rank every entry measured under a board's protocol (Markdown + HTML)")
    p.add_argument("name")
    p.add_argument("--out", default="runs")
    p.add_argument("--dest", help="output folder (default OUT/leaderboards)")
    p.set_defaults(func=cmd_leaderboard)


def _load(args):
    """(suite, its report kind, the records as that kind needs them) for one command: the suite is loaded and
    checked once, and its runs expanded once (`Suite.runs` keeps its expansions) however many parts the report has."""
    from elit_bench.checkpoint import check_output
    from elit_bench.results.records import load_records
    from elit_bench.results.reports import kind_of
    from elit_bench.suites.options import default_scale
    from elit_bench.suites.spec import load_suite

    suite = load_suite(args.suite)
    kind = kind_of(suite)
    records = load_records(args.out, suite.name, args.scale)
    if args.scale is None:  # one scale per table: never rows of two scales side by side
        args.scale = default_scale(suite, "showing", {r["scale"] for r in records})
        records = [r for r in records if r["scale"] == args.scale]
    frame = kind.frame(suite, records) if records else None
    if frame is None or frame.empty:
        raise UserError(f"no records for suite {suite.name!r} under {str(args.out)!r}"
                        + (f" at scale {args.scale!r}" if args.scale else "") + f": run `elit-bench run {args.suite}` first")
    check_output(_dest(args, suite), "--dest")
    return suite, kind, frame


def _dest(args, suite) -> Path:
    return Path(args.dest) if args.dest else Path(args.out) / suite.name / args.scale / "report"


def cmd_table(args) -> int:
    suite, kind, frame = _load(args)
    md, paths = kind.write(suite, frame, _dest(args, suite))
    print(md)
    print("wrote " + " and ".join(map(str, paths)))
    return 0


def cmd_plot(args) -> int:
    suite, kind, frame = _load(args)
    for path in kind.draw(suite, frame, _dest(args, suite) / "figure"):
        print(f"wrote {path}")
    return 0


def cmd_leaderboard(args) -> int:
    from elit_bench.checkpoint import check_output
    from elit_bench.results.leaderboard import write_leaderboard

    dest = check_output(args.dest or Path(args.out) / "leaderboards", "--dest")
    for path in write_leaderboard(args.name, args.out, dest):
        print(f"wrote {path}")
    return 0
