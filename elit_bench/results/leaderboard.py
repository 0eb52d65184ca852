"""Leaderboards: entries measured under one fixed protocol, ranked, FLOPs beside quality, Pareto set marked.

A suite joins a board with

    leaderboard: {name: digits-16px, metric: digits_fd,
                  protocol: {data: digits, resolution: 16, sample_steps: 20, num_samples: 256}}

Every record of any suite under OUT that satisfies the protocol is an entry,
so a variant from the user's own module (`model: mypkg.mod:factory`) shows
up after `elit-bench run` of a suite that names the board.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from elit_bench.checkpoint import atomic_write
from elit_bench.errors import UserError
from elit_bench.metrics.frontier import HIGHER_IS_BETTER, pareto_frontier
from elit_bench.results.records import load_records


def board_definition(name: str) -> dict:
    from elit_bench.suites.spec import list_suites, load_suite

    boards = {}
    for suite_name in list_suites():
        board = load_suite(suite_name).raw.get("leaderboard")
        if board:
            boards.setdefault(board["name"], board)
    if name not in boards:
        raise UserError(f"unknown leaderboard {name!r}; valid choices: {', '.join(sorted(boards)) or '(none defined)'}")
    return boards[name]


def matches(record: dict, protocol: dict) -> bool:
    train = record["provenance"]["train_config"]
    checks = {"data": train["data"]["name"], "resolution": train["data"]["resolution"],
              "sample_steps": record["sample"]["steps"], "num_samples": record["num_samples"]}
    return all(checks[k] == v for k, v in protocol.items() if k in checks)


def leaderboard_frame(name: str, out) -> tuple[dict, pd.DataFrame]:

    board = board_definition(name)
    metric, protocol = board["metric"], board.get("protocol", {})
    rows = []
    for r in load_records(out):
        if metric in r["metrics"] and matches(r, protocol):
            rows.append({"model": r["model"], "run": r["run_label"], "eval": r["eval_label"], "suite": r["suite"],
                         metric: r["metrics"][metric], "sample GFLOPs": r["flops"]["sample_flops_per_sample"] / 1e9,
                         "train TF/iter": r["flops"]["train_tflops_per_iter"], "samples": r["num_samples"],
                         "code": r["provenance"]["code_version"]})
    if not rows:
        raise UserError(f"leaderboard {name!r} has no entries under {str(out)!r} matching its protocol {protocol}")
    df = pd.DataFrame(rows)
    higher = HIGHER_IS_BETTER.get(metric, False)
    df = df.sort_values(metric, ascending=not higher).reset_index(drop=True)
    front = set(pareto_frontier(df["sample GFLOPs"], df[metric], higher_is_better=higher).tolist())
    df.insert(0, "rank", range(1, len(df) + 1))
    df["Pareto"] = ["*" if i in front else "" for i in range(len(df))]
    return board, df


def write_leaderboard(name: str, out, dest) -> list[Path]:
    board, df = leaderboard_frame(name, out)
    arrow = "higher is better" if HIGHER_IS_BETTER.get(board["metric"], False) else "lower is better"
    title = f"Leaderboard {name}: {board['metric']} ({arrow})"
    protocol = ", ".join(f"{k}={v}" for k, v in board.get("protocol", {}).items())
    md = f"# {title}\n\nProtocol: {protocol}. `*` marks the compute-quality Pareto frontier (sample FLOPs vs metric).\n\n"
    md += df.to_markdown(index=False, floatfmt=".4g") + "\n"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd}"
            "</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Protocol: {html.escape(protocol)}. "
            "<code>*</code> marks the compute-quality Pareto frontier.</p>"
            + df.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0) + "</body></html>")
    dest = Path(dest)
    paths = [dest / f"{name}.md", dest / f"{name}.html"]
    for path, text in zip(paths, (md, page)):
        atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text))
    return paths
