"""Result records -> pandas tables, and the published numbers they are compared with."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from elit_bench.baselines import baseline_file
from elit_bench.errors import UserError

# our record's metric key for each published metric name
METRIC_KEYS = {"is": "is_mean"}


def load_records(out, suite: str | None = None, scale: str | None = None) -> list[dict]:
    """Every record under OUT/<suite>/<scale>/*/records/*.json (any suite / scale when None)."""
    root = Path(out)
    pattern = f"{suite or '*'}/{scale or '*'}/*/records/*.json"
    records = []
    for path in sorted(root.glob(pattern)):
        try:
            records.append(json.loads(path.read_text()))
        except ValueError as exc:
            raise UserError(f"record {str(path)!r} is not valid JSON ({exc}); delete it and rerun the suite") from exc
    return records


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (record, metric): run, eval, metric, value and the compute figures beside it."""
    rows = []
    for r in records:
        for metric, value in (r.get("metrics") or {}).items():
            if not isinstance(value, (int, float)):
                continue
            sample, flops = r.get("sample") or {}, r.get("flops") or {}
            compute = r["provenance"].get("compute") or {}
            rows.append({
                "suite": r["suite"], "scale": r["scale"], "run": r["run_label"], "paper_row": r.get("paper_row"),
                "paper_setting": r.get("paper_setting"), "eval": r["eval_label"],
                "paper_guidance": r.get("paper_guidance") or "", "series": r.get("series") or r["run_label"],
                "metric": metric, "value": float(value), "model": r["model"], "num_samples": r.get("num_samples"),
                "budget": sample.get("budget", compute.get("budget")), "guidance": sample.get("guidance"),
                "scale_l": sample.get("scale"), "steps": sample.get("steps"),
                "resolution": compute.get("resolution"),
                "sample_gflops": flops.get("sample_flops_per_sample", float("nan")) / 1e9,
                "train_tflops_per_iter": flops.get("train_tflops_per_iter", float("nan")),
                "train_step": r.get("train_step"),
            })
    return pd.DataFrame(rows)


def published(table: str, setting: str | None = None) -> pd.DataFrame:
    """Published rows of one paper table (baselines/published_results.csv), metric names as in our records."""
    df = pd.read_csv(baseline_file("published_results.csv"), dtype={"guidance": str}, keep_default_na=False)
    df = df[df["table"] == table]
    if setting:
        df = df[df["setting"] == setting]
    df = df.assign(metric=df["metric"].map(lambda m: METRIC_KEYS.get(m, m)),
                   value=pd.to_numeric(df["value"], errors="coerce"))
    return df
