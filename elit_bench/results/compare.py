"""Does a rerun reproduce a result? Two sets of records side by side (docs/reproducibility.md).

    elit-bench compare results/quickstart/records runs/quickstart/smoke

Records are matched by (suite, run id, eval id, metric): the run id is the hash of what was trained and the
eval id of how it was evaluated, so a match means "the same command". For every match the table says
whether B's value equals A's to the last stored digit and whether it lies inside A's 95% interval. Where
both records keep the number's per-sample values (debiased Frechet distances, accuracies), it also gives
the 95% interval of B - A (`records.difference_of`: paired, since a rerun draws the same noise seeds and
scores against the same reference) and whether they differ, which then decides: a rerun whose samples
moved agrees when that interval holds 0, whether or not B's value lies inside A's own interval. A value
without per-sample values is judged by A's interval, one without an interval must be equal up to
REDUCTION_RTOL. Every number present on one side only is listed, and fails the comparison (a rerun that
lost a run or an evaluation does not reproduce); `--allow-subset` accepts B holding part of A, on purpose.
Records of different suites are not compared at all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from elit_bench.errors import UserError
from elit_bench.results.records import cell_of, difference_of, read_record, records_frame

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
        records.append({**read_record(p, ADVICE), "record_path": str(p)})  # its per-sample values lie beside it
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
    both = fa.merge(fb[KEYS + ["value", "record_path"]], on=KEYS, suffixes=("_a", "_b"))
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
    # equal numbers need no bootstrap: a reproduced rerun costs nothing
    diffs = [None if equal else paired_difference(row) for equal, (_, row) in zip(both["identical"] | close,
                                                                                  both.iterrows())]
    both["diff_low"], both["diff_high"] = ([math.nan if d is None else d[k] for d in diffs] for k in ("low", "high"))
    both["pairing"] = [None if d is None else d["pairing"] for d in diffs]
    tested = both["pairing"].notna()
    both["differ"] = tested & ((both["diff_low"] > 0) | (both["diff_high"] < 0))
    both["agrees"] = both["identical"] | close | (tested & ~both["differ"]) | (~tested & both["within"])
    table = both[["run", "eval", "metric", "value_a", "low", "high", "value_b", "difference", "diff_low", "diff_high",
                  "pairing", "identical", "within", "differ", "agrees"]].reset_index(drop=True)
    only = [x.merge(y[KEYS], on=KEYS, how="left", indicator=True).query("_merge == 'left_only'")[
        ["run", "eval", "metric"]].reset_index(drop=True) for x, y in ((fa, fb), (fb, fa))]
    return table, only[0], only[1]


def paired_difference(row) -> dict | None:
    """`difference_of` B's record and A's (a row of `match_records`' merge), None unless both keep the metric's
    per-sample values."""
    a, b = (cell_of([row[f"record_path_{side}"]], row["metric"]) for side in "ab")
    if a is None or b is None:
        return None
    side_a = {"metric": row["metric"], "value": row["value_a"], "low": row["low"], "high": row["high"],
              "cell": a[0], "arm": a[1]}
    side_b = {"metric": row["metric"], "value": row["value_b"], "low": math.nan, "high": math.nan,
              "cell": b[0], "arm": b[1]}
    return difference_of(side_b, side_a)


def compare_records(a, b) -> pd.DataFrame:
    """One row per (run id, eval id, metric) found in both: A's value and interval, B's value, the difference,
    `identical` (equal floats), `within` (B inside A's interval; a value without interval must be equal up to
    REDUCTION_RTOL), the 95% interval of B - A from per-sample values (`diff_low`, `diff_high`, `pairing`; NaN /
    None where either record keeps none, or the two are equal), `differ` (that interval excludes 0) and
    `agrees`: equal (up to REDUCTION_RTOL), else not `differ` where tested, else `within`."""
    return match_records(a, b, allow_subset=True)[0]


def summary(table: pd.DataFrame, only_a: pd.DataFrame | None = None, only_b: pd.DataFrame | None = None) -> str:
    n = len(table)
    text = (f"{n} number(s) compared: {int(table['identical'].sum())} identical, "
            f"{int(table['within'].sum())} within A's 95% interval, {int((~table['within']).sum())} outside")
    tested = int(table["pairing"].notna().sum())
    if tested:  # then "outside" no longer decides alone
        text += (f"; {tested} tested on per-sample values: {int(table['differ'].sum())} differ (the 95% interval "
                 f"of B - A excludes 0); {int((~table['agrees']).sum())} disagree in all")
    for name, only in (("A", only_a), ("B", only_b)):
        if only is not None and len(only):
            text += f"; {len(only)} only in {name}"
    return text


def register(sub) -> None:
    p = sub.add_parser("compare", help="does a rerun reproduce committed records? values side by side, identical "
                                       "/ within the first one's intervals / the interval of their difference "
                                       "(exit 1 if any disagrees)")
    p.add_argument("a", help="the reference records (e.g. results/quickstart/records)")
    p.add_argument("b", help="the rerun's records (e.g. runs/quickstart/smoke)")
    p.add_argument("--allow-subset", action="store_true",
                   help="B may lack some of A's records (e.g. a rerun of part of a suite); still listed")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    """Exit 1 when a number disagrees (`compare_records`' `agrees`), B has a number A has not, or (unless
    --allow-subset) A has one B has not."""
    table, only_a, only_b = match_records(args.a, args.b, args.allow_subset)
    print(table.to_markdown(index=False, floatfmt=".6g"))
    for name, other, only in (("A", "B", only_a), ("B", "A", only_b)):
        if len(only):
            print(f"\nonly in {name} ({len(only)} number(s) {other} lacks):")
            print(only.to_markdown(index=False))
    print(summary(table, only_a, only_b))
    missing = len(only_b) or (len(only_a) and not args.allow_subset)
    return 0 if bool(table["agrees"].all()) and not missing else 1
