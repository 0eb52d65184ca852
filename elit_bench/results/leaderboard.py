"""Leaderboards: entries measured under one fixed protocol, ranked, FLOPs beside quality, Pareto set marked.

A suite joins a board with

    leaderboard: {name: digits-16px, metric: digits_fd,
                  protocol: {data: digits, resolution: 16, sample_steps: 20, num_samples: 256}}

Every record of any suite under OUT that satisfies the protocol is an entry,
so a variant from the user's own module (`model: mypkg.mod:factory`) shows
up after `elit-bench run` of a suite that names the board. Records of one
run and evaluation that differ only in their training seed are one entry
(mean over seeds, with the spread). Entries are ranked by value; one whose
95% interval overlaps the entry above is marked tied (`=`), and the Pareto
set counts a point as dominated only where the intervals do not overlap.
The real-data floor under the same protocol heads the board, unranked.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import pandas as pd

from elit_bench.checkpoint import atomic_write
from elit_bench.errors import UserError
from elit_bench.metrics.compute import DEBIASED
from elit_bench.metrics.frontier import HIGHER_IS_BETTER, pareto_frontier
from elit_bench.results.records import (
    aggregate_seeds,
    format_estimate,
    interval_of,
    load_records,
    overlaps,
    records_frame,
)

log = logging.getLogger(__name__)

# protocol key -> column of `records_frame`
PROTOCOL_COLUMNS = {"data": "data", "resolution": "data_resolution", "sample_steps": "steps",
                    "num_samples": "num_samples"}


def board_definition(name: str) -> dict:
    """The board `name` as the first suite that joins it defines it; a suite file that does not load is skipped
    with a warning (it cannot be the one asked for, or the error says so)."""
    from elit_bench.suites.spec import list_suites, load_suite

    boards = {}
    for suite_name in list_suites():
        try:
            board = load_suite(suite_name).raw.get("leaderboard")
        except UserError as exc:
            log.warning("skipping suite %r: %s", suite_name, exc)
            continue
        if board:
            boards.setdefault(board["name"], board)
    if name not in boards:
        raise UserError(f"unknown leaderboard {name!r}; valid choices: {', '.join(sorted(boards)) or '(none defined)'}")
    return boards[name]


def matches(frame: pd.DataFrame, protocol: dict) -> pd.Series:
    """Rows of `records_frame` measured under `protocol`; the real-data floor has no sampler, so steps do not apply."""
    keep = pd.Series(True, index=frame.index)
    for key, value in protocol.items():
        if key in PROTOCOL_COLUMNS:
            column = frame[PROTOCOL_COLUMNS[key]]
            keep &= (column == value) | (frame["real_data"] & (key == "sample_steps"))
    return keep


def leaderboard_frame(name: str, out) -> tuple[dict, pd.DataFrame]:
    board = board_definition(name)
    metric, protocol = board["metric"], board.get("protocol", {})
    frame = records_frame(load_records(out))
    if not frame.empty:
        frame = frame[frame["metric"].isin([metric, metric + DEBIASED]) & matches(frame, protocol)]
    if frame.empty or frame["real_data"].all():
        raise UserError(f"leaderboard {name!r} has no entries under {str(out)!r} matching its protocol {protocol}")
    higher = HIGHER_IS_BETTER.get(metric, False)
    agg = aggregate_seeds(frame)
    at_n = agg[agg["metric"] == metric].set_index(["suite", "scale", "run", "eval"])["value"]
    # a Frechet board ranks the debiased estimates (their intervals hold them) when every entry has one; the value
    # at N goes beside; boards of older records rank the value at N as before
    ranked = metric + DEBIASED
    keys = agg[["suite", "scale", "run", "eval"]].drop_duplicates()
    has = agg[agg["metric"] == ranked][["suite", "scale", "run", "eval"]].drop_duplicates()
    ranked = ranked if not has.empty and len(has) == len(keys) else metric
    agg = agg[agg["metric"] == ranked]
    floors = agg[agg["real_data"]].drop_duplicates("num_samples")
    entries = agg[~agg["real_data"]].sort_values("value", ascending=not higher, kind="stable").reset_index(drop=True)
    bounds = [interval_of(row) for _, row in entries.iterrows()]
    front = set(pareto_frontier(entries["sample_gflops"], entries["value"], higher_is_better=higher,
                                low=entries["low"], high=entries["high"]).tolist())
    # "=": tied with the entry above (overlapping intervals)
    entries["rank"] = [("=" if i and overlaps(bounds[i], bounds[i - 1]) else "") + str(i + 1) for i in range(len(entries))]
    entries["Pareto"] = ["*" if i in front else "" for i in range(len(entries))]
    floors = floors.assign(rank="-", Pareto="")
    rows = pd.concat([floors, entries], ignore_index=True)
    df = pd.DataFrame({
        "rank": rows["rank"], "model": rows["model"], "run": rows["run"], "eval": rows["eval"],
        "suite": rows["suite"], **({f"{metric}@N": [at_n.get(k) for k in zip(rows["suite"], rows["scale"], rows["run"],
                                                                             rows["eval"])]}
                                   if ranked != metric else {}),
        ranked: rows["value"], "95% interval / seeds": rows.apply(format_estimate, axis=1),
        "low": rows["low"], "high": rows["high"], "seeds": rows["seeds"],
        "sample GFLOPs": rows["sample_gflops"], "train TF/iter": rows["train_tflops_per_iter"],
        "samples": rows["num_samples"], "code": rows["code"], "Pareto": rows["Pareto"],
    })
    return board, df


def write_leaderboard(name: str, out, dest) -> list[Path]:
    board, df = leaderboard_frame(name, out)
    arrow = "higher is better" if HIGHER_IS_BETTER.get(board["metric"], False) else "lower is better"
    title = f"Leaderboard {name}: {board['metric']} ({arrow})"
    protocol = ", ".join(f"{k}={v}" for k, v in board.get("protocol", {}).items())
    legend = ("Ranked by value (mean over training seeds). Rank `=k`: the entry's 95% interval overlaps the one "
              "above, so the two are tied. `*` marks the compute-quality Pareto frontier (sample "
              "FLOPs vs metric; dominated only where the intervals do not overlap). Rank `-`: real training data "
              "under the same protocol, the floor. Intervals: docs/intervals.md.")
    if f"{board['metric']}@N" in df.columns:
        legend += (f" Ranked by {board['metric']}{DEBIASED}, the debiased estimate of the population distance with "
                   f"its interval; {board['metric']}@N is the plug-in value at N samples, the protocol's number.")
    md = f"# {title}\n\nProtocol: {protocol}. {legend}\n\n"
    md += df.to_markdown(index=False, floatfmt=".4g") + "\n"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd}"
            "</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Protocol: {html.escape(protocol)}. {html.escape(legend)}</p>"
            + df.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0) + "</body></html>")
    dest = Path(dest)
    paths = [dest / f"{name}.md", dest / f"{name}.html"]
    for path, text in zip(paths, (md, page)):
        atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text))
    return paths
