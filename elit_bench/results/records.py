"""Result records -> pandas tables, and the published numbers they are compared with.

`records_frame` gives one row per (record, metric) with the record's 95%
interval; `aggregate_seeds` folds the records of one run and evaluation that
differ only in their training seed into one row: the mean over seeds, their
std, a t interval of the mean and every seed's own value and interval, so
seed-to-seed spread travels with every number a table, figure or leaderboard
shows. `format_estimate` writes such a row as text.

Every record is checked on load (`read_record`): valid JSON is not enough, it
must hold the keys that identify and describe a number (`RecordSchema`), else
one line names the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from elit_bench.baselines import baseline_file
from elit_bench.errors import UserError
from elit_bench.metrics.floor import REAL_DATA_LABEL
from elit_bench.metrics.intervals import t_bounds

# our record's metric key for each published metric name
METRIC_KEYS = {"is": "is_mean"}
RECORD_KEYS = ["suite", "scale", "run", "eval", "metric"]  # what identifies a number, up to the seed
NAN = float("nan")


class _Provenance(BaseModel):
    model_config = ConfigDict(extra="allow")

    code_version: str | None = None
    train_config: dict | None = None
    compute: dict | None = None


class RecordSchema(BaseModel):
    """The keys a result record must have for tables, leaderboards and comparisons (others are kept as they are)."""

    model_config = ConfigDict(extra="allow", strict=True)

    suite: str
    scale: str
    run_id: str
    run_label: str
    eval_id: str
    eval_label: str
    model: str
    metrics: dict[str, Any]
    provenance: _Provenance
    intervals: dict[str, dict | None] | None = None
    features: dict[str, dict] | None = None  # sample features beside the record: {metric: {file, sha256, ...}}
    training: dict | None = None  # the training curve in brief (suites.runner.training_summary)
    sample: dict | None = None
    flops: dict | None = None
    data: dict | None = None
    num_samples: int | None = None
    train_step: int | None = None
    paper_row: str | None = None
    paper_setting: str | None = None
    paper_guidance: str | None = None
    series: str | None = None


def read_record(path, advice: str = "delete it and rerun the suite") -> dict:
    """A record file, checked against `RecordSchema`; one-line UserError naming the file and the first problem."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # UnicodeDecodeError is a ValueError too
        raise UserError(f"record {str(path)!r} is not valid JSON ({exc}); {advice}") from None
    if not isinstance(record, dict):
        raise UserError(f"record {str(path)!r} holds {json.dumps(record)[:40]}, not a JSON object; {advice}")
    try:
        RecordSchema.model_validate(record)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        problem = "missing" if err["type"] == "missing" else err["msg"][0].lower() + err["msg"][1:]
        raise UserError(f"record {str(path)!r} is malformed: {where}: {problem}; {advice}") from None
    return record


def load_records(out, suite: str | None = None, scale: str | None = None) -> list[dict]:
    """Every record under OUT/<suite>/<scale>/*/records/*.json (any suite / scale when None), checked (`read_record`).

    Each record gets `record_path`, where it was read from (its samples are beside it).
    """
    pattern = f"{suite or '*'}/{scale or '*'}/*/records/*.json"
    return [{**read_record(path), "record_path": str(path)} for path in sorted(Path(out).glob(pattern))]


def record_data(record: dict) -> dict:
    """The data a record's samples imitate: {"name", "resolution"} (empty for measurements without data)."""
    return record.get("data") or (record["provenance"].get("train_config") or {}).get("data") or {}


def grid_path(record: dict) -> Path | None:
    """The grid.png of a record's sample set (evals/<eval id>/step-<N>/ or evals/<eval id>/ beside records/), None
    for a record not read from disk."""
    if "record_path" not in record:
        return None
    evals = Path(record["record_path"]).parents[1] / "evals" / record["eval_id"]
    step = evals / f"step-{record.get('train_step')}"  # a suite run's set: one per checkpoint step
    return (step if step.is_dir() else evals) / "grid.png"


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (record, metric): run, eval, seed, metric, value, its interval and the compute figures beside it."""
    rows = []
    for r in records:
        bounds = r.get("intervals") or {}
        sample, flops, data = r.get("sample") or {}, r.get("flops") or {}, record_data(r)
        compute = r["provenance"].get("compute") or {}
        seed = (r["provenance"].get("train_config") or {}).get("seed")
        for metric, value in (r.get("metrics") or {}).items():
            if not isinstance(value, (int, float)):
                continue
            interval = bounds.get(metric) or {}
            rows.append({
                "suite": r["suite"], "scale": r["scale"], "run": r["run_label"], "paper_row": r.get("paper_row"),
                "paper_setting": r.get("paper_setting"), "eval": r["eval_label"],
                "paper_guidance": r.get("paper_guidance") or "", "series": r.get("series") or r["run_label"],
                "metric": metric, "value": float(value), "low": interval.get("low", NAN),
                "high": interval.get("high", NAN), "method": interval.get("method"),
                "seed": seed, "run_id": r["run_id"], "eval_id": r["eval_id"], "model": r["model"],
                "num_samples": r.get("num_samples"), "data": data.get("name"), "data_resolution": data.get("resolution"),
                "budget": sample.get("budget", compute.get("budget")), "guidance": sample.get("guidance"),
                "scale_l": sample.get("scale"), "steps": sample.get("steps"),
                "resolution": compute.get("resolution"),
                "sample_gflops": flops.get("sample_flops_per_sample", NAN) / 1e9,
                "train_tflops_per_iter": flops.get("train_tflops_per_iter", NAN),
                "train_step": r.get("train_step"), "grid": grid_path(r),
                "code": r["provenance"].get("code_version"), "real_data": r["run_label"] == REAL_DATA_LABEL,
            })
    return pd.DataFrame(rows)


def aggregate_seeds(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (suite, scale, run, eval, metric) over the training seeds of its records.

    value: the mean over seeds; std: their sample std (NaN for one seed); seeds: how many;
    low / high: the record's own interval for one seed, a t interval of the mean over seeds
    otherwise (method "t-over-seeds"); per_seed: [(seed, value, low, high)] in seed order;
    grids: [(seed, its grid.png)]. A seed recorded twice counts once (the first record).
    Other columns are taken from the first seed.
    """
    if frame.empty:
        return frame.assign(std=[], seeds=[], per_seed=[], grids=[])
    frame = frame.drop_duplicates(RECORD_KEYS + ["seed"]).sort_values("seed", kind="stable", na_position="first")
    rows = []
    for _, group in frame.groupby(RECORD_KEYS, sort=False, dropna=False):
        row = group.iloc[0].to_dict()
        values = group["value"].to_numpy(dtype=float)
        row["per_seed"] = list(zip(group["seed"], values, group["low"], group["high"]))
        row["grids"] = [(seed, g) for seed, g in zip(group["seed"], group["grid"]) if g is not None]
        row["seeds"] = len(values)
        row["std"] = float(values.std(ddof=1)) if len(values) > 1 else NAN
        if len(values) > 1:
            row["value"] = float(values.mean())
            row["low"], row["high"] = t_bounds(values)
            row["method"] = "t-over-seeds"
        rows.append(row)
    return pd.DataFrame(rows).drop(columns=["grid"])


def interval_of(row) -> tuple[float, float]:
    """(low, high) of a row; a value without an interval is a point."""
    if math.isnan(row["low"]) or math.isnan(row["high"]):
        return row["value"], row["value"]
    return row["low"], row["high"]


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return max(a[0], b[0]) <= min(a[1], b[1])


def format_interval(value: float, low: float, high: float) -> str:
    """"v ± h" for an interval centred on v, "v [low, high]" otherwise (a Frechet interval sits below the
    biased plug-in value), "v" without one."""
    if math.isnan(value):
        return "-"
    if math.isnan(low) or math.isnan(high):
        return f"{value:.4g}"
    half = (high - low) / 2
    if abs(value - (low + half)) <= 0.01 * half:
        return f"{value:.4g} ± {half:.2g}"
    return f"{value:.4g} [{low:.4g}, {high:.4g}]"


def format_estimate(row) -> str:
    """One seed: `format_interval`. Several: "mean ± std (sd, k seeds: each seed's value and interval)"."""
    if row["seeds"] <= 1:
        return format_interval(row["value"], row["low"], row["high"])
    each = "; ".join(format_interval(v, lo, hi) for _, v, lo, hi in row["per_seed"])
    return f"{row['value']:.4g} ± {row['std']:.2g} (sd, {row['seeds']} seeds: {each})"


def published(table: str, setting: str | None = None) -> pd.DataFrame:
    """Published rows of one paper table (baselines/published_results.csv), metric names as in our records."""
    df = pd.read_csv(baseline_file("published_results.csv"), dtype={"guidance": str}, keep_default_na=False)
    df = df[df["table"] == table]
    if setting:
        df = df[df["setting"] == setting]
    df = df.assign(metric=df["metric"].map(lambda m: METRIC_KEYS.get(m, m)),
                   value=pd.to_numeric(df["value"], errors="coerce"))
    return df
