"""`elit-bench compare`: does a rerun reproduce committed records (identical, within their intervals)?

The property itself (same command, same machine -> identical records) is measured on full quickstart runs
and documented in docs/reproducibility.md; here the comparison that reports it is checked.
"""

from __future__ import annotations

import json

import pytest

from elit_bench.cli import main
from elit_bench.errors import UserError
from elit_bench.results.compare import compare_records


def record(run_id, value, low, high, metric="digits_fd"):
    return {"suite": "s", "scale": "smoke", "run_id": run_id, "run_label": run_id.upper(), "eval_id": "e1",
            "eval_label": "E", "model": "DiT-S/4", "metrics": {metric: value},
            "intervals": {metric: {"low": low, "high": high, "level": 0.95, "method": "bootstrap-basic"}},
            "provenance": {"train_config": {"seed": 0}}}


def write(root, records):
    for r in records:
        path = root / r["run_id"] / "records" / f"{r['eval_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
    return root


def test_identical_within_and_outside_are_told_apart(tmp_path, capsys):
    a = write(tmp_path / "a", [record("x", 60.0, 10.0, 58.0), record("y", 70.0, 20.0, 66.0),
                               record("z", 80.0, 30.0, 75.0), record("only-a", 1.0, 0.0, 2.0)])
    b = write(tmp_path / "b", [record("x", 60.0, 1.0, 2.0), record("y", 50.0, 0.0, 0.0),
                               record("z", 76.0, 0.0, 0.0)])
    table = compare_records(a, b).set_index("run")
    assert list(table.index) == ["X", "Y", "Z"]  # matched by run id and eval id; only-a has no counterpart
    assert table.loc["X", ["identical", "within"]].tolist() == [True, True]  # equal, though outside A's interval
    assert table.loc["Y", ["identical", "within"]].tolist() == [False, True]
    assert table.loc["Y", "difference"] == -20.0
    assert table.loc["Z", ["identical", "within"]].tolist() == [False, False]  # 76 > A's high 75
    assert main(["compare", str(a), str(b)]) == 1
    assert "3 number(s) compared: 1 identical, 2 within A's 95% interval, 1 outside; 1 only in A" \
        in capsys.readouterr().out
    c = str(write(tmp_path / "c", [record("y", 21.0, 0.0, 0.0)]))
    assert main(["compare", str(a), c]) == 1  # B lacks x, z and only-a
    assert main(["compare", str(a), c, "--allow-subset"]) == 0


def test_nothing_to_compare_is_a_clear_error(tmp_path, capsys):
    a = write(tmp_path / "a", [record("x", 60.0, 10.0, 58.0)])
    with pytest.raises(UserError, match="no record of .* has a counterpart"):
        compare_records(a, write(tmp_path / "b", [record("other", 60.0, 10.0, 58.0)]))
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "is not a folder of records" in capsys.readouterr().err


def test_records_say_what_decides_their_floats():
    # catches: a record that cannot tell a thread-count or instruction-set difference from a code change
    import torch

    from elit_bench.provenance import provenance

    numerics = provenance()["numerics"]
    assert numerics["torch_threads"] == torch.get_num_threads()
    assert numerics["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert numerics["cpu"]
