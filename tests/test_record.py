"""The typed result record: every committed record loads, records round-trip byte for byte, bad ones are named."""

import json
from pathlib import Path

import pytest

from elit_bench.errors import UserError
from elit_bench.record import SCHEMA_VERSION, Record
from elit_bench.results.records import read_record, records_frame

RESULTS = Path(__file__).resolve().parents[1] / "results"
COMMITTED = sorted(RESULTS.glob("**/records/*.json"))


def test_every_committed_record_loads_at_its_version_and_keeps_its_values():
    assert len(COMMITTED) >= 40  # quickstart and claims (version 1), the zoo and table4-t2i (version 2)
    assert {json.loads(p.read_text()).get("schema_version", 1) for p in COMMITTED} == {1, 2}
    for path in COMMITTED:
        raw = json.loads(path.read_text())
        record = Record.read(path)
        assert record.schema_version == raw.get("schema_version", 1)  # records written before versions are 1
        again = json.loads(record.to_json())
        assert {k: again[k] for k in raw} == raw, path  # every key as written; the keys it lacked are null
        assert Record.from_json(record.to_json()).to_json() == record.to_json()


def written_record(**over) -> Record:
    """A record as `suites.runner.evaluate` builds one (numbers as the metrics give them)."""
    fields = dict(
        suite="quickstart", scale="smoke", run_id="dit-9fd38925e7", run_label="DiT", eval_id="cfg-79cca94d",
        eval_label="CFG", model="DiT-S/4", train_step=800, metrics={"digits_fd": 90.05207448356123, "digits_acc": 1.0},
        intervals={"digits_fd": {"low": 27.2, "high": 92.7, "level": 0.95, "method": "bootstrap-basic",
                                 "replicates": [121.429, 101.56]}, "digits_acc": None},
        features={"digits_fd": {"file": "cfg-79cca94d.digits_fd.features.npy", "sha256": "ab" * 32}},
        training={"loss": {"steps": [790, 800], "values": [0.5, 0.49]}, "nonfinite_steps": 0},
        num_samples=512, sample={"steps": 8, "guidance": "cfg", "scale": 0.3, "seeds": "0-511"},
        flops={"sample_flops_per_sample": 1.5e9, "flops_vs_cfg": None},
        provenance={"code_version": "abc", "config_hash": "9fd38925e7", "train_config": {"seed": 0, "steps": 800},
                    "eval": {"label": "CFG", "sample": {"guidance": "cfg"}}},
        time="2026-11-25T10:00:00")
    return Record(**{**fields, **over})


def test_a_written_record_round_trips_byte_for_byte(tmp_path):
    record = written_record()
    path = record.write(tmp_path / "records" / "cfg.json")
    text = path.read_text()
    assert Record.from_json(text).to_json() == text
    raw = json.loads(text)
    assert list(raw)[0] == "schema_version" and raw["schema_version"] == SCHEMA_VERSION
    assert list(raw["provenance"]) == ["code_version", "config_hash", "train_config", "eval"]  # the writer's order
    assert read_record(path) == raw
    # a measurement's record: the fields that do not apply are written as null, and read back the same
    compute = written_record(train_step=None, intervals=None, features=None, training=None, num_samples=None,
                             sample={}, flops={}, provenance={"code_version": "abc", "compute": {"kind": "latency"}})
    assert Record.from_json(compute.to_json()) == compute


@pytest.mark.parametrize("text, match", [
    ("{", "is not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"suite": "s"}), "scale: missing"),
    (json.dumps({"schema_version": SCHEMA_VERSION + 1}), "upgrade elit_bench"),
])
def test_a_bad_record_is_one_line_naming_the_file(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UserError, match=match) as err:
        read_record(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="cannot be read"):
        Record.read(tmp_path / "missing.json")


def test_a_wrongly_typed_field_is_refused(tmp_path):
    bad = json.loads(written_record().to_json())
    bad["num_samples"] = "512"
    with pytest.raises(UserError, match="num_samples"):
        Record.from_json(json.dumps(bad))
    bad = json.loads(written_record().to_json())
    bad["provenance"]["train_config"] = "seed 0"
    with pytest.raises(UserError, match="provenance"):
        Record.from_json(json.dumps(bad))


def test_records_frame_reads_records_and_their_dicts_alike():
    record = written_record()
    a, b = records_frame([record]), records_frame([record.to_dict()])
    assert a.equals(b) and set(a["metric"]) == {"digits_fd", "digits_acc"}
    row = a.set_index("metric").loc["digits_fd"]
    assert (row["seed"], row["low"], row["steps"], row["data"]) == (0, 27.2, 8, None)


def test_the_committed_quickstart_report_regenerates_identically(tmp_path):
    """`elit-bench table` on the committed records writes the committed table, byte for byte."""
    import shutil

    from elit_bench.cli import main

    runs = tmp_path / "runs"
    shutil.copytree(RESULTS / "quickstart" / "smoke", runs / "quickstart" / "smoke",
                    ignore=shutil.ignore_patterns("report"))
    shutil.copytree(RESULTS / "_shared", runs / "_shared")
    assert main(["table", "quickstart", "--out", str(runs), "--scale", "smoke"]) == 0
    for name in ("table.md", "table.tex"):
        made = (runs / "quickstart" / "smoke" / "report" / name).read_text()
        assert made == (RESULTS / "quickstart" / "smoke" / "report" / name).read_text(), name
