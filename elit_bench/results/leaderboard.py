"""Leaderboards: entries measured under one fixed protocol, ranked, FLOPs beside quality, Pareto set marked.

A suite joins a board with

    leaderboard: {name: digits-16px, metric: digits_fd,
                  protocol: {data: digits, resolution: 16, sample_steps: 20, num_samples: 256}}

Every record of any suite under OUT that satisfies the protocol is an entry,
so a variant from the user's own module (`model: mypkg.mod:factory`) shows
up after `elit-bench run` of a suite that names the board. Records of one
run and evaluation that differ only in their training seed are one entry,
the mean over seeds. A seed-mean and a single-seed record estimate different
things (a training recipe; one trained model), so the two kinds are ranked
apart, each in its own section, and never compared with each other.

Within a kind, entries are ranked by value; two entries are told apart by
the 95% interval of their difference (`records.difference_of`: paired where
they share training and noise seeds and the reference), never by overlap of
their own intervals. Ties go by groups, each headed by the best entry not
yet placed: the entries after it whose difference from the head holds 0
share its rank (`=k`); the first one separated from the head starts the next
group. So every entry of a group is not separated from its head, and ties do
not chain (a = b and b = c never make c tied with a unless c is itself not
separated from a). The Pareto set counts a point as dominated only where a
point with at most its FLOPs is better with that difference interval
excluding 0; a point that stays only so is marked "not separated". The
real-data floor under the same protocol heads the board, unranked.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import pandas as pd

from elit_bench.checkpoint import atomic_write
from elit_bench.errors import UserError
from elit_bench.metrics.compute import DEBIASED, higher_is_better
from elit_bench.metrics.frontier import pareto_frontier
from elit_bench.results.records import (
    aggregate_seeds,
    better,
    format_estimate,
    load_records,
    records_frame,
    seed_names,
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


SEED_MEAN, SINGLE_SEED, FLOOR = "mean over training seeds", "single training seed", "real data (floor)"


def entry_kind(row) -> str:
    return FLOOR if row["real_data"] else SEED_MEAN if row["seeds"] > 1 else SINGLE_SEED


def rank_ties(entries: pd.DataFrame, higher: bool) -> list[str]:
    """Ranks of entries sorted best first: "k", or "=k" for an entry not separated from the head of its group
    (ranked k; `records.better` on the interval of their difference)."""
    ranks, head = [], None
    for i in range(len(entries)):
        if head is not None and not better(entries.iloc[head], entries.iloc[i], higher):
            ranks.append(f"={head + 1}")
        else:
            head = i
            ranks.append(str(i + 1))
    return ranks


def pareto_marks(entries: pd.DataFrame, higher: bool) -> list[str]:
    """"*" on the compute-quality frontier, "* (not separated)" where only the interval of the difference from a
    point that dominates it by value holds 0, "" dominated."""
    flops, values = entries["sample_gflops"], entries["value"]
    by_value = set(pareto_frontier(flops, values, higher_is_better=higher).tolist())
    resolved = set(pareto_frontier(flops, values, higher_is_better=higher, separated=lambda j, i: better(
        entries.iloc[j], entries.iloc[i], higher)).tolist())
    return ["*" if i in by_value else "* (not separated)" if i in resolved else "" for i in range(len(entries))]


def leaderboard_frame(name: str, out) -> tuple[dict, pd.DataFrame]:
    """(the board, its rows: the floor, then each kind's entries ranked best first, column `kind`)."""
    board = board_definition(name)
    metric, protocol = board["metric"], board.get("protocol", {})
    higher = higher_is_better(metric)  # a metric without a declared direction ranks nothing
    frame = records_frame(load_records(out))
    if not frame.empty:
        frame = frame[frame["metric"].isin([metric, metric + DEBIASED]) & matches(frame, protocol)]
    if frame.empty or frame["real_data"].all():
        raise UserError(f"leaderboard {name!r} has no entries under {str(out)!r} matching its protocol {protocol}")
    agg = aggregate_seeds(frame)
    at_n = agg[agg["metric"] == metric].set_index(["suite", "scale", "run", "eval"])["value"]
    # a Frechet board ranks the debiased estimates (their intervals hold them) when every entry has one; the value
    # at N goes beside; boards of older records rank the value at N as before
    ranked = metric + DEBIASED
    keys = agg[["suite", "scale", "run", "eval"]].drop_duplicates()
    has = agg[agg["metric"] == ranked][["suite", "scale", "run", "eval"]].drop_duplicates()
    ranked = ranked if not has.empty and len(has) == len(keys) else metric
    agg = agg[agg["metric"] == ranked]
    agg = agg.assign(kind=agg.apply(entry_kind, axis=1))
    sections = [agg[agg["kind"] == FLOOR].drop_duplicates("num_samples").assign(rank="-", Pareto="")]
    for kind in (SEED_MEAN, SINGLE_SEED):
        entries = agg[agg["kind"] == kind].sort_values("value", ascending=not higher, kind="stable")
        entries = entries.reset_index(drop=True)
        sections.append(entries.assign(rank=rank_ties(entries, higher), Pareto=pareto_marks(entries, higher)))
    rows = pd.concat(sections, ignore_index=True)
    df = pd.DataFrame({
        "kind": rows["kind"], "rank": rows["rank"], "model": rows["model"], "run": rows["run"], "eval": rows["eval"],
        "suite": rows["suite"], "seeds": rows.apply(seed_names, axis=1),
        **({f"{metric}@N": [at_n.get(k) for k in zip(rows["suite"], rows["scale"], rows["run"], rows["eval"])]}
           if ranked != metric else {}),
        ranked: rows["value"], "95% interval": rows.apply(format_estimate, axis=1),
        "low": rows["low"], "high": rows["high"], "method": rows["method"],
        "sample GFLOPs": rows["sample_gflops"], "train TF/iter": rows["train_tflops_per_iter"],
        "samples": rows["num_samples"], "code": rows["code"], "Pareto": rows["Pareto"],
    })
    return board, df


LEGEND = ("Entries of one kind are ranked by value; a mean over training seeds and a single seed's record are "
          "different kinds of entry, ranked in their own sections and never against each other. Rank `=k`: the "
          "95% interval of the difference between this entry and the one ranked k (the head of its group) holds 0 "
          "(paired where the two share training seeds, noise seeds and reference, docs/intervals.md); the first "
          "entry separated from the head starts a new group, so ties do not chain. `*`: on the compute-quality "
          "Pareto frontier (sample FLOPs vs metric) of its kind, where a point is dominated only by one with at most "
          "its FLOPs that is better with the interval of their difference excluding 0; `* (not separated)`: "
          "dominated by value, but not separated from any point that would dominate it. Intervals: the record's "
          "own for one seed, over seeds and samples for a mean (or a t interval over seeds that omits sampling "
          "noise, for records without per-sample values); `±` is the half-width of a 95% interval, sd is "
          "labelled sd.")


def write_leaderboard(name: str, out, dest) -> list[Path]:
    board, df = leaderboard_frame(name, out)
    arrow = "higher is better" if higher_is_better(board["metric"]) else "lower is better"
    title = f"Leaderboard {name}: {board['metric']} ({arrow})"
    protocol = ", ".join(f"{k}={v}" for k, v in board.get("protocol", {}).items())
    legend = LEGEND
    if f"{board['metric']}@N" in df.columns:
        legend += (f" Ranked by {board['metric']}{DEBIASED}, the debiased estimate of the population distance with "
                   f"its interval; {board['metric']}@N is the plug-in value at N samples, the protocol's number.")
    sections = [(kind, part.drop(columns="kind")) for kind, part in df.groupby("kind", sort=False)]
    md = f"# {title}\n\nProtocol: {protocol}. {legend}\n"
    md += "".join(f"\n## {kind.capitalize()}\n\n" + part.to_markdown(index=False, floatfmt=".4g") + "\n"
                  for kind, part in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd}"
            "</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Protocol: {html.escape(protocol)}. {html.escape(legend)}</p>"
            + "".join(f"<h2>{html.escape(kind.capitalize())}</h2>"
                      + part.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)
                      for kind, part in sections) + "</body></html>")
    dest = Path(dest)
    paths = [dest / f"{name}.md", dest / f"{name}.html"]
    for path, text in zip(paths, (md, page)):
        atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text))
    return paths
