"""Does a rerun reproduce a result? Two sets of records side by side (docs/reproducibility.md).

    elit-bench compare results/quickstart/records runs/quickstart/smoke

Records are matched by (suite, run id, eval id, metric): the run id is the hash of what was trained and the
eval id of how it was evaluated, so a match means "the same command". For every match the table says
whether B's value equals A's to the last stored digit and whether it lies inside A's 95% interval. Every
number present on one side only is listed, and fails the comparison (a rerun that lost a run or an
evaluation does not reproduce); `--allow-subset` accepts B holding part of A, on purpose. Records of
different suites are not compared at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from elit_bench.errors import UserError
from elit_bench.results.records import read_record, records_frame

KEYS = ["suite", "run_id", "eval_id", "metric"]
ADVICE = "delete it or rerun the evaluation that wrote it"
REDUCTION_RTOL = 1e-9


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
        if p.parent.name != "records":  # a folder of loose JSON files: those that name a run and an evaluation
            try:
                record = json.loads(p.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise UserError(f"{str(p)!r} is not valid JSON ({exc})") from None
            if not (isinstance(record, dict) and {"run_id", "eval_id"} <= set(record)):
                continue
        records.append(read_record(p, ADVICE))
    if not records:
        raise UserError(f"no result records under {str(root)!r}")
    return records


def match_records(a, b, allow_subset: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(`compare_records`' table, the numbers only A has, those only B has: run, eval, metric).

    Records of different suites are refused (their real-data floors would match): B must hold A's suites, or
    with `allow_subset` some of them.
    """
    fa, fb = (records_frame(read_records(p)).drop_duplicates(KEYS, keep="last") for p in (a, b))
    sa, sb = set(fa["suite"]), set(fb["suite"])
    if not sb <= sa or (sa != sb and not allow_subset) or not sb:
        raise UserError(f"{str(a)!r} holds records of suite(s) {', '.join(sorted(sa))} but {str(b)!r} of "
                        f"{', '.join(sorted(sb)) or 'none'}: compare records of the same suite")
    both = fa.merge(fb[KEYS + ["value"]], on=KEYS, suffixes=("_a", "_b"))
    if both.empty:
        raise UserError(f"no record of {str(a)!r} has a counterpart in {str(b)!r}: compare runs of the same "
                        "suite, config and evaluation (run and eval ids match)")
    both["difference"] = both["value_b"] - both["value_a"]
    both["identical"] = both["value_a"] == both["value_b"]
    has = ~(both["low"].isna() | both["high"].isna())
    # a value without an interval (FD@N, FLOPs) must be equal, up to float64 reduction order (1e-9 relative:
    # thread counts move a Frechet distance's 11th digit, docs/reproducibility.md)
    close = np.isclose(both["value_b"], both["value_a"], rtol=REDUCTION_RTOL, atol=0.0)
    both["within"] = both["identical"] | (has & (both["value_b"] >= both["low"]) & (both["value_b"] <= both["high"])) \
        | (~has & close)
    table = both[["run", "eval", "metric", "value_a", "low", "high", "value_b", "difference", "identical",
                  "within"]].reset_index(drop=True)
    only = [x.merge(y[KEYS], on=KEYS, how="left", indicator=True).query("_merge == 'left_only'")[
        ["run", "eval", "metric"]].reset_index(drop=True) for x, y in ((fa, fb), (fb, fa))]
    return table, only[0], only[1]


def compare_records(a, b) -> pd.DataFrame:
    """One row per (run id, eval id, metric) found in both: A's value and interval, B's value, the difference,
    `identical` (equal floats) and `within` (B inside A's interval; a value without interval must be equal up to
    REDUCTION_RTOL)."""
    return match_records(a, b, allow_subset=True)[0]


def summary(table: pd.DataFrame, only_a: pd.DataFrame | None = None, only_b: pd.DataFrame | None = None) -> str:
    n = len(table)
    text = (f"{n} number(s) compared: {int(table['identical'].sum())} identical, "
            f"{int(table['within'].sum())} within A's 95% interval, {int((~table['within']).sum())} outside")
    for name, only in (("A", only_a), ("B", only_b)):
        if only is not None and len(only):
            text += f"; {len(only)} only in {name}"
    return text


def register(sub) -> None:
    p = sub.add_parser("compare", help="does a rerun reproduce committed records? values side by side, "
                                       "identical / within the first one's intervals (exit 1 if any lies outside)")
    p.add_argument("a", help="the reference records (e.g. results/quickstart/records)")
    p.add_argument("b", help="the rerun's records (e.g. runs/quickstart/smoke)")
    p.add_argument("--allow-subset", action="store_true",
                   help="B may lack some of A's records (e.g. a rerun of part of a suite); still listed")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    """Exit 1 when a number lies outside A's interval, B has a number A has not, or (unless --allow-subset) A has
    one B has not."""
    table, only_a, only_b = match_records(args.a, args.b, args.allow_subset)
    print(table.to_markdown(index=False, floatfmt=".6g"))
    for name, other, only in (("A", "B", only_a), ("B", "A", only_b)):
        if len(only):
            print(f"\nonly in {name} ({len(only)} number(s) {other} lacks):")
            print(only.to_markdown(index=False))
    print(summary(table, only_a, only_b))
    missing = len(only_b) or (len(only_a) and not args.allow_subset)
    return 0 if bool(table["within"].all()) and not missing else 1
