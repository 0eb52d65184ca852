"""Does a rerun reproduce a result? Two sets of records side by side (docs/reproducibility.md).

    elit-bench compare results/quickstart/records runs/quickstart/smoke

Records are matched by (run id, eval id, metric): the run id is the hash of what was trained and the
eval id of how it was evaluated, so a match means "the same command". For every match the table says
whether B's value equals A's to the last stored digit and whether it lies inside A's 95% interval.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from elit_bench.errors import UserError
from elit_bench.results.records import records_frame

KEYS = ["run_id", "eval_id", "metric"]


def read_records(path) -> list[dict]:
    """Every record JSON under `path` (a records/ folder, a suite's run folder, or any folder above them)."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{str(root)!r} is not a folder of records (e.g. results/quickstart/records or "
                        "runs/quickstart/smoke)")
    files = sorted(p for p in root.rglob("*.json") if p.parent.name == "records")
    files = files or sorted(root.glob("*/*.json")) + sorted(root.glob("*.json"))
    records = []
    for p in files:
        try:
            record = json.loads(p.read_text())
        except ValueError as exc:
            raise UserError(f"record {str(p)!r} is not valid JSON ({exc})") from exc
        if isinstance(record, dict) and {"run_id", "eval_id", "metrics", "provenance"} <= set(record):
            records.append(record)
    if not records:
        raise UserError(f"no result records under {str(root)!r}")
    return records


def compare_records(a, b) -> pd.DataFrame:
    """One row per (run id, eval id, metric) found in both: A's value and interval, B's value, the difference,
    `identical` (equal floats) and `within` (B inside A's interval; a value without interval must be equal)."""
    fa, fb = (records_frame(read_records(p)).drop_duplicates(KEYS, keep="last") for p in (a, b))
    both = fa.merge(fb[KEYS + ["value"]], on=KEYS, suffixes=("_a", "_b"))
    if both.empty:
        raise UserError(f"no record of {str(a)!r} has a counterpart in {str(b)!r}: compare runs of the same "
                        "suite, config and evaluation (run and eval ids match)")
    both["difference"] = both["value_b"] - both["value_a"]
    both["identical"] = both["value_a"] == both["value_b"]
    has = ~(both["low"].isna() | both["high"].isna())
    both["within"] = both["identical"] | (has & (both["value_b"] >= both["low"]) & (both["value_b"] <= both["high"]))
    return both[["run", "eval", "metric", "value_a", "low", "high", "value_b", "difference", "identical",
                 "within"]].reset_index(drop=True)


def summary(table: pd.DataFrame) -> str:
    n = len(table)
    return (f"{n} number(s) compared: {int(table['identical'].sum())} identical, "
            f"{int(table['within'].sum())} within A's 95% interval, {int((~table['within']).sum())} outside")


def register(sub) -> None:
    p = sub.add_parser("compare", help="does a rerun reproduce committed records? values side by side, "
                                       "identical / within the first one's intervals (exit 1 if any lies outside)")
    p.add_argument("a", help="the reference records (e.g. results/quickstart/records)")
    p.add_argument("b", help="the rerun's records (e.g. runs/quickstart/smoke)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    table = compare_records(args.a, args.b)
    print(table.to_markdown(index=False, floatfmt=".6g"))
    print(summary(table))
    return 0 if bool(table["within"].all()) else 1
