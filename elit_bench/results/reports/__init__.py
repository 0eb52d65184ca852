"""Report kinds: what a suite's `report: {kind: ...}` makes of its records, one module each, in one registry.

    table    the paper's layout, ours beside the published numbers (reports/table.py)
    plot     the same table, and a figure of one metric against compute (reports/plot.py)
    claims   a verdict on each of the paper's claims, with a forest plot of the effects (results/claims.py)

A kind gives three functions: `frame(suite, records)`, the records as its report needs them;
`write(suite, frame, dest) -> (Markdown, paths)`, the tables `elit-bench table` writes (and what goes with
them: the contact sheet of samples; for claims verdicts.json and the forest plot); `draw(suite, frame,
path_stem) -> paths`, the figure `elit-bench plot` draws. `elit-bench run` writes the tables and, for a kind
with `report_draws`, the figure. A new kind is a module with those functions and one entry in KINDS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from elit_bench.errors import UserError, choices_error
from elit_bench.results import claims
from elit_bench.results.records import load_records
from elit_bench.results.reports import plot, table


@dataclass(frozen=True)
class ReportKind:
    frame: Callable  # (suite, records) -> pd.DataFrame
    write: Callable  # (suite, frame, dest) -> (Markdown, [paths])
    draw: Callable  # (suite, frame, path_stem) -> [paths]
    report_draws: bool = False  # the report `elit-bench run` writes has the figure too


KINDS: dict[str, ReportKind] = {
    "table": ReportKind(table.frame, table.write, plot.draw),
    "plot": ReportKind(table.frame, table.write, plot.draw, report_draws=True),
    "claims": ReportKind(claims.frame, claims.write, claims.draw),  # its tables come with their forest plot
}
REPORT_KINDS = tuple(KINDS)


def kind_of(suite) -> ReportKind:
    """The report kind of a suite (`report: {kind: ...}`, table by default)."""
    kind = suite.report.get("kind", "table")
    if kind not in KINDS:
        raise choices_error(f"report kind of suite {suite.name!r}", kind, REPORT_KINDS)
    return KINDS[kind]


def write_report(suite, out, scale: str | None = None, dest: Path | None = None) -> list[Path]:
    """The suite's report from its records under OUT: the tables, and the figure where the kind draws one with
    them, under DEST (default OUT/<suite>/<scale>/report)."""
    kind = kind_of(suite)
    frame = kind.frame(suite, load_records(out, suite.name, scale))
    if frame.empty:
        raise UserError(f"no records for suite {suite.name!r} under {str(out)!r}: run `elit-bench run {suite.name}`")
    dest = Path(dest) if dest else Path(out) / suite.name / (scale or "all") / "report"
    _, paths = kind.write(suite, frame, dest)
    return paths + (kind.draw(suite, frame, dest / "figure") if kind.report_draws else [])
