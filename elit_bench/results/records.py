"""Result records -> pandas tables, and the published numbers they are compared with.

`records_frame` gives one row per (record, metric) with the record's 95%
interval; `aggregate_seeds` folds the records of one run and evaluation that
differ only in their training seed into one row: the mean over seeds, their
sd, the 95% interval of the mean (over seeds and samples, from the per-sample
values records keep) and every seed's own value and interval, so seed-to-seed
spread travels with every number a table, figure or leaderboard shows.
`format_estimate` writes such a row as text; `difference_of` gives the
interval of the difference of two such rows, on which every comparison of
two cells (leaderboard ties, Pareto dominance, `compare`) decides.

Every record is checked on load (`read_record`): valid JSON is not enough, it
must hold the keys that identify and describe a number (`elit_bench.record.Record`),
else one line names the file.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from elit_bench.baselines import baseline_file
from elit_bench.checkpoint import file_sha256
from elit_bench.errors import UserError
from elit_bench.metrics.compute import DEBIASED, METRICS, PER_SAMPLE_MEAN, record_key
from elit_bench.metrics.intervals import t_bounds
from elit_bench.metrics.paired import Arm, cell_interval, difference_interval
from elit_bench.record import ADVICE, Record
from elit_bench.suites.floor import REAL_DATA_LABEL

RECORD_KEYS = ["suite", "scale", "run", "eval", "metric"]  # what identifies a number, up to the seed
NAN = float("nan")


def read_record(path, advice: str = ADVICE) -> dict:
    """A record file as a dict, checked (`Record.read`); one-line UserError naming the file and the first problem."""
    return Record.read(path, advice).to_dict()


def load_records(out, suite: str | None = None, scale: str | None = None) -> list[dict]:
    """Every record under OUT/<suite>/<scale>/*/records/*.json (any suite / scale when None), checked (`read_record`).

    Each record gets `record_path`, where it was read from (its samples are beside it).
    """
    pattern = f"{suite or '*'}/{scale or '*'}/*/records/*.json"
    return [{**read_record(path), "record_path": str(path)} for path in sorted(Path(out).glob(pattern))]


def _per_sample(metric: str) -> tuple[str, str] | None:
    """(the `record["features"]` entry, the `metrics.paired` statistic) behind a record's metric key, None for a
    metric whose value per-sample values do not estimate: "digits_fd_debiased" -> ("digits_fd", "frechet"),
    "digits_acc" -> ("digits_acc", "mean"); the plug-in value at N ("digits_fd") is not their statistic."""
    for name, spec in METRICS.items():
        if spec.kind == "frechet" and metric == name + DEBIASED:
            return name, "frechet"
        if spec.kind in PER_SAMPLE_MEAN and metric == spec.keys[0]:
            return name, "mean"
    return None


def estimated_key(metric: str) -> str:
    """The record key a claim or plan about `metric` compares: a Frechet metric's debiased estimate
    ("digits_fd" -> "digits_fd_debiased"), any other metric's own value."""
    spec = METRICS.get(metric)
    return metric + DEBIASED if spec is not None and spec.kind == "frechet" else metric


def cell_arm(records: list[dict], metric: str, at: str) -> tuple[Arm, np.ndarray | None]:
    """`arm_of` the cell's records for `metric` (a metric name or record key), or a UserError naming `at` where a
    record keeps no per-sample values (records written before they were kept: rerun the suite)."""
    try:
        found = arm_of(records, estimated_key(metric))
    except UserError as exc:  # a missing or damaged file: name the comparison that needed it
        raise UserError(f"{at}: {exc}") from None
    if found is None:
        paths = ", ".join(str(r.get("record_path", r.get("eval_id"))) for r in records) or "none"
        raise UserError(f"{at}: a record of ({paths}) keeps no per-sample values for {metric!r}; comparisons are "
                        "made on per-sample values only: rerun the suite with this version to write them")
    return found


def statistic_of(metric: str) -> str | None:
    """The `metrics.paired` statistic of a record's metric key ("frechet", "mean"), None where it has none."""
    return (_per_sample(metric) or (None, None))[1]


@functools.lru_cache(maxsize=256)
def _sidecar(path: str, sha256: str, record: str) -> np.ndarray:
    """The array of a sidecar file, its SHA-256 checked (cached: every record of a suite shares its reference;
    callers read it, never write to it)."""
    advice = f"rerun the evaluation that wrote {record!r}"
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise UserError(f"per-sample file {path!r} cannot be read ({exc.strerror}); {advice}") from None
    if digest != sha256:
        raise UserError(f"per-sample file {path!r} does not match the SHA-256 its record names; {advice}")
    return np.load(path, allow_pickle=False)  # the bytes the record names: a valid .npy


def arm_of(records: list[dict], metric: str) -> tuple[Arm, np.ndarray | None] | None:
    """The per-sample values of one cell for `metrics.paired`: (Arm, reference (M, D) or None), or None when a
    record keeps none for `metric` (records older than their sidecars, the plug-in value at N, FLOPs).

    records: the cell's records (one per training seed; a seed recorded twice counts once, the first, as in
    `aggregate_seeds`), read from disk (`record_path`: the sidecars lie beside them). Arm.values[seed]: (N, D)
    features of a Frechet metric's debiased estimate, (N, 1) 0/1 values of an accuracy; Arm.noise[seed]: the
    set's noise seeds (`sample.seeds`; equal specs pair), None for a set without (the real-data floor, seed 0).
    The reference is that of a Frechet metric, the same file for every seed. Each file's SHA-256 is checked: a
    missing or damaged file is a UserError naming it.
    """
    found = _per_sample(metric)
    entries = [(r.get("features") or {}).get(found[0]) for r in records] if found else [None]
    if any(e is None or "record_path" not in r for e, r in zip(entries, records)) or not records:
        return None
    values, noise, references = {}, {}, set()
    for record, entry in zip(records, entries):
        seed = (record["provenance"].get("train_config") or {}).get("seed") or 0
        if seed in values:
            continue
        folder = Path(record["record_path"]).parent
        values[seed] = _sidecar(str(folder / entry["file"]), entry["sha256"], record["record_path"])
        noise[seed] = (record.get("sample") or {}).get("seeds")
        if found[1] == "frechet":
            ref = entry.get("reference")
            if ref is None:
                raise UserError(f"record {record['record_path']!r} keeps {found[0]} features without their reference; "
                                "rerun the evaluation")
            references.add((str((folder / ref["file"]).resolve()), ref["sha256"], record["record_path"]))
    if len({sha for _, sha, _ in references}) > 1:
        raise UserError(f"the records of one cell score {metric} against different references "
                        f"({', '.join(sorted(r for _, _, r in references))}): they are not one cell")
    reference = _sidecar(*min(references)) if references else None
    return Arm(values=values, noise=noise), reference


def grid_path(record_path: str, record: Record) -> Path:
    """The grid.png of a record's sample set: evals/<eval id>/step-<N>/ (a suite run's set, one per checkpoint step)
    or evals/<eval id>/ beside the record's records/ folder."""
    evals = Path(record_path).parents[1] / "evals" / record.eval_id
    step = evals / f"step-{record.train_step}"
    return (step if step.is_dir() else evals) / "grid.png"


def records_frame(records: list[dict | Record]) -> pd.DataFrame:
    """One row per (record, metric): run, eval, seed, metric, value, its interval and the compute figures beside it.

    records: `Record`s or their dicts (`load_records`: with `record_path`, where the record was read from)."""
    rows = []
    for r in records:
        rec = r if isinstance(r, Record) else Record.model_validate(r)
        path = (rec.model_extra or {}).get("record_path")
        bounds, sample, flops, data = rec.intervals or {}, rec.sample or {}, rec.flops or {}, rec.data_description
        compute = rec.provenance.get("compute") or {}
        for metric, value in rec.metrics.items():
            if not isinstance(value, (int, float)):
                continue
            interval = bounds.get(metric) or {}
            rows.append({
                "suite": rec.suite, "scale": rec.scale, "run": rec.run_label, "paper_row": rec.paper_row,
                "paper_setting": rec.paper_setting, "eval": rec.eval_label,
                "paper_guidance": rec.paper_guidance or "", "series": rec.series or rec.run_label,
                "metric": metric, "value": float(value), "low": interval.get("low", NAN),
                "high": interval.get("high", NAN), "method": interval.get("method"),
                "seed": rec.seed, "run_id": rec.run_id, "eval_id": rec.eval_id, "model": rec.model,
                "num_samples": rec.num_samples, "data": data.get("name"), "data_resolution": data.get("resolution"),
                "budget": sample.get("budget", compute.get("budget")), "guidance": sample.get("guidance"),
                "scale_l": sample.get("scale"), "steps": sample.get("steps"),
                "resolution": compute.get("resolution"),
                "sample_gflops": flops.get("sample_flops_per_sample", NAN) / 1e9,
                "train_tflops_per_iter": flops.get("train_tflops_per_iter", NAN),
                "train_step": rec.train_step, "grid": grid_path(path, rec) if path else None,
                "code": rec.provenance.get("code_version"), "real_data": rec.run_label == REAL_DATA_LABEL,
                "record_path": path,  # where its per-sample values lie (`aggregate_seeds`)
            })
    return pd.DataFrame(rows)


# intervals from per-sample values, by what they were computed from: tables, figures and leaderboards of one
# process ask for the same cells and differences again
_COMPUTED: dict = {}


def _memo(key, compute, *args):
    if key not in _COMPUTED:
        _COMPUTED[key] = compute(*args)
    return _COMPUTED[key]


def cell_of(paths: list, metric: str) -> tuple[tuple, tuple[Arm, np.ndarray | None]] | None:
    """(the cell's identity: record files and their modification times, `arm_of` its records) or None where a
    record was not read from disk or keeps no per-sample values of `metric`."""
    if statistic_of(metric) is None or not all(isinstance(p, str) for p in paths):
        return None
    records = [{**read_record(p, "rerun the evaluation"), "record_path": p} for p in paths]
    found = arm_of(records, metric)
    if found is None:
        return None
    return (metric, tuple((p, os.stat(p).st_mtime_ns) for p in paths)), found


def aggregate_seeds(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (suite, scale, run, eval, metric) over the training seeds of its records.

    value: the estimate over seeds; std: the sd of the seeds' values (NaN for one seed); seeds: how many;
    low / high: the record's own interval for one seed; for several, the 95% interval of the mean over seeds:
    where every record keeps per-sample values (`arm_of`), a hierarchical bootstrap over seeds and samples
    (`metrics.paired.cell_interval`, method "hierarchical-bootstrap"; value: its estimate), else a t interval
    of the seeds' values (method "t-over-seeds"; value: their mean), which omits the sampling noise the
    seeds' sets share. per_seed: [(seed, value, low, high)] in seed order; grids: [(seed, its grid.png)];
    cell: what the per-sample values were read from (None without them) and arm: (Arm, reference) for
    `difference_of`. A seed recorded twice counts once (the first record). Other columns are taken from the
    first seed.
    """
    if frame.empty:
        return frame.assign(std=[], seeds=[], per_seed=[], grids=[], cell=[], arm=[])
    frame = frame.drop_duplicates(RECORD_KEYS + ["seed"]).sort_values("seed", kind="stable", na_position="first")
    rows = []
    for _, group in frame.groupby(RECORD_KEYS, sort=False, dropna=False):
        row = group.iloc[0].to_dict()
        values = group["value"].to_numpy(dtype=float)
        row["per_seed"] = list(zip(group["seed"], values, group["low"], group["high"]))
        row["grids"] = [(seed, g) for seed, g in zip(group["seed"], group["grid"]) if g is not None]
        row["seeds"] = len(values)
        row["std"] = float(values.std(ddof=1)) if len(values) > 1 else NAN
        paths = group["record_path"].tolist() if "record_path" in group else [None]
        row["cell"], row["arm"] = cell_of(paths, row["metric"]) or (None, None)
        if len(values) > 1 and row["arm"] is not None:
            interval = _memo(("cell", row["cell"]), cell_interval, row["arm"][0], statistic_of(row["metric"]),
                             row["arm"][1])
            row["value"], row["low"], row["high"] = interval["estimate"], interval["low"], interval["high"]
            row["method"] = interval["method"]
        elif len(values) > 1:
            row["value"] = float(values.mean())
            row["low"], row["high"] = t_bounds(values)
            row["method"] = "t-over-seeds"
        rows.append(row)
    return pd.DataFrame(rows).drop(columns=["grid"])


def interval_of(row, value: str = "value") -> tuple[float, float]:
    """(low, high) of a row; a value without an interval is a point."""
    if math.isnan(row["low"]) or math.isnan(row["high"]):
        return row[value], row[value]
    return row["low"], row["high"]


def difference_of(a, b, value: str = "value") -> dict:
    """The 95% interval of a's value minus b's: {"estimate", "low", "high", "method", "pairing"}.

    a, b: rows of one metric (`aggregate_seeds`; `value` names their value column). Where both keep per-sample
    values against one reference, `metrics.paired.difference_interval` (pairing "paired" where they share their
    training seeds and noise seeds: the same samples resampled on both sides; "unpaired" otherwise). Else the
    two intervals are taken as independent estimates (MOVER: each side's distance from its value to its bound,
    combined in quadrature; pairing "none"), conservative where the two sets in fact share noise; a value
    without an interval is exact.
    """
    statistic = statistic_of(a["metric"])
    if a.get("arm") is not None and b.get("arm") is not None and statistic == statistic_of(b["metric"]):
        (arm_a, ref_a), (arm_b, ref_b) = a["arm"], b["arm"]
        if (ref_a is None and ref_b is None) or (ref_a is not None and ref_b is not None and np.array_equal(ref_a, ref_b)):
            d = _memo(("difference", a["cell"], b["cell"]), difference_interval, arm_a, arm_b, statistic, ref_a)
            return {k: d[k] for k in ("estimate", "low", "high", "method", "pairing")}
    (low_a, high_a), (low_b, high_b) = interval_of(a, value), interval_of(b, value)
    va, vb = a[value], b[value]
    return {"estimate": va - vb, "low": va - vb - math.hypot(max(va - low_a, 0.0), max(high_b - vb, 0.0)),
            "high": va - vb + math.hypot(max(high_a - va, 0.0), max(vb - low_b, 0.0)),
            "method": "independent-mover", "pairing": "none"}


def better(a, b, higher_is_better: bool, value: str = "value") -> bool:
    """Whether a is better than b with the 95% interval of their difference (`difference_of`) excluding 0."""
    d = difference_of(a, b, value)
    return d["low"] > 0 if higher_is_better else d["high"] < 0


def format_interval(value: float, low: float, high: float) -> str:
    """"v ± h" for an interval centred on v (h: the half-width of its 95% interval), "v [low, high]" otherwise
    (e.g. a bootstrap interval of a distance, skewed), "v" without one."""
    if math.isnan(value):
        return "-"
    if math.isnan(low) or math.isnan(high):
        return f"{value:.4g}"
    half = (high - low) / 2
    if abs(value - (low + half)) <= 0.01 * half:
        return f"{value:.4g} ± {half:.2g}"
    return f"{value:.4g} [{low:.4g}, {high:.4g}]"


def seed_names(row) -> str:
    """The training seeds of a row: "0, 1, 2" ("-" for a record without one, e.g. the real-data floor)."""
    return ", ".join("-" if pd.isna(s) else str(int(s)) for s, *_ in row["per_seed"]) if row["per_seed"] else "-"


def format_estimate(row) -> str:
    """One seed: `format_interval`. Several: the estimate with its 95% interval (what it covers), the sd over
    seeds, labelled, and each seed's value and interval, named:
    "91.2 [76.1, 104.3] (95% over seeds and samples; sd 12 over 3 seeds; seed 0: 80.9 [..]; seed 1: ...)"."""
    if row["seeds"] <= 1:
        return format_interval(row["value"], row["low"], row["high"])
    covers = ("over seeds and samples" if row["method"] == "hierarchical-bootstrap"
              else "t over seeds, omits sampling noise")
    each = "; ".join(f"seed {'-' if pd.isna(s) else int(s)}: {format_interval(v, lo, hi)}"
                     for s, v, lo, hi in row["per_seed"])
    return (f"{format_interval(row['value'], row['low'], row['high'])} (95% {covers}; sd {row['std']:.2g} over "
            f"{row['seeds']} seeds; {each})")


def published(table: str, setting: str | None = None) -> pd.DataFrame:
    """Published rows of one paper table (baselines/published_results.csv), metric names as in our records."""
    df = pd.read_csv(baseline_file("published_results.csv"), dtype={"guidance": str}, keep_default_na=False)
    df = df[df["table"] == table]
    if setting:
        df = df[df["setting"] == setting]
    df = df.assign(metric=df["metric"].map(record_key),
                   value=pd.to_numeric(df["value"], errors="coerce"))
    return df
