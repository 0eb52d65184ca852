"""`elit-bench plan`: variance components recovered from synthetic pilot records of known components, the seeds
needed shrink as the effect grows, the wall time adds up, and bad input is one line."""

import hashlib
import zlib

import numpy as np
import pytest

from elit_bench.cli import main
from elit_bench.errors import UserError
from elit_bench.results.plan import plan_tests, render

N, SEEDS, SIGMA_B, SIGMA_E = 400, tuple(range(8)), 0.05, 0.4  # per-sample sd 0.4: a seed's mean has sd 0.02


def write_records(folder, run: str, offset: float, noise_offset: int = 0, sigma_b: float = SIGMA_B) -> list[dict]:
    """Records of one cell, one per training seed, keeping per-sample values (N, 1) beside them: seed s's values
    are offset + u_s + e_i, u_s ~ N(0, sigma_b^2) (model-level), e_i ~ N(0, SIGMA_E^2) drawn from noise block s
    (the same e for every run of seed s, so runs of one seed pair sample by sample)."""
    records = []
    for s in SEEDS:
        u = sigma_b * np.random.default_rng([zlib.crc32(run.encode()), s]).standard_normal()
        e = SIGMA_E * np.random.default_rng([noise_offset, s]).standard_normal((N, 1))
        path = folder / f"{run}-{s}.digits_acc.features.npy"
        np.save(path, (offset + u + e).astype(np.float32))
        records.append({"run_label": run, "eval_label": "e", "scale": "smoke",
                        "record_path": str(folder / f"{run}-{s}.json"),
                        "provenance": {"train_config": {"seed": s}}, "sample": {"seeds": f"block {s}, offset {noise_offset}"},
                        "features": {"digits_acc": {"file": path.name, "sha256": hashlib.sha256(
                            path.read_bytes()).hexdigest(), "shape": [N, 1]}}})
    return records


def claim_test(a: str, b: str, expect: str = "better", margin: float = 0.0) -> dict:
    return {"metric": "digits_acc", "a": {"run": a, "eval": "e"}, "b": {"run": b, "eval": "e"}, "expect": expect,
            "margin": margin}


def test_plan_recovers_components_and_needs_fewer_seeds_for_larger_effects(tmp_path):
    records = (write_records(tmp_path, "base", 0.5) + write_records(tmp_path, "near", 0.53) +
               write_records(tmp_path, "far", 0.6) + write_records(tmp_path, "other-noise", 0.53, noise_offset=9))
    plan = plan_tests([("near", claim_test("near", "base")), ("far", claim_test("far", "base")),
                       ("unpaired", claim_test("other-noise", "base"))], records, replicates=300,
                      run_seconds={"base": (100.0, 10.0), "near": (100.0, 10.0), "far": (50.0, 5.0)})
    near, far, unpaired = plan["plan"]
    assert plan["alpha_per_test"] == pytest.approx(0.05 / 3)
    # each arm: within-seed variance of a seed's mean SIGMA_E^2 / N, between-seed SIGMA_B^2
    for side in near["sides"].values():
        assert side["within_var"] == pytest.approx(SIGMA_E ** 2 / N, rel=0.3)
        assert 0.2 * SIGMA_B ** 2 < side["between_var"] < 3 * SIGMA_B ** 2
    # same seeds, same noise: the sampling noise cancels in the paired difference, the model-level effects
    # (independent across runs) add
    assert near["pairing"] == "paired" and near["within_var"] < 0.1 * SIGMA_E ** 2 / N
    assert 0.2 * 2 * SIGMA_B ** 2 < near["between_var"] < 3 * 2 * SIGMA_B ** 2
    assert unpaired["pairing"] == "unpaired"
    assert unpaired["within_var"] == pytest.approx(2 * SIGMA_E ** 2 / N, rel=0.3)
    assert near["effect"] == pytest.approx(0.03, abs=0.06) and far["effect"] > near["effect"] + 0.05
    n = str(N)
    assert far["seeds_needed"][n] < near["seeds_needed"][n]
    # model-level noise dominates: more samples per set barely help the paired test; the unpaired one gains
    assert near["seeds_needed"][str(4 * N)] >= 0.7 * near["seeds_needed"][n]
    assert unpaired["seeds_needed"][str(4 * N)] < unpaired["seeds_needed"][n]
    wall = plan["wall"][n]
    assert wall["seeds"]["base"] == max(p["seeds_needed"][n] for p in plan["plan"])
    assert wall["seconds"] == pytest.approx(sum(k * {"base": 110, "near": 110, "far": 55}.get(label, 0)
                                                for label, k in wall["seeds"].items()))
    text = render(plan)
    assert "near" in text and "Bonferroni" in text and f"seeds @ N={N}" in text


def test_plan_decides_either_way_and_equivalence():
    """A test whose effect lies on the wrong side of its boundary is planned toward `contradicted`; equivalence
    plans on the margin's distance from |effect|."""
    from elit_bench.results.plan import seeds_needed

    assert seeds_needed(1.0, 0.0, 2.8) == float("inf")
    assert seeds_needed(1.0, 1.0, 2.8) == 8  # ceil(2.8^2)
    assert seeds_needed(1.0, 2.0, 2.8) == 2  # never below two seeds


def test_plan_reverses_for_a_worse_arm(tmp_path):
    records = write_records(tmp_path, "base", 0.5) + write_records(tmp_path, "worse", 0.4)
    plan = plan_tests([("t", claim_test("worse", "base")), ("eq", claim_test("worse", "base", "equivalent", 0.5))], records,
                      replicates=100)
    worse, eq = plan["plan"]
    assert worse["effect"] < 0 and worse["toward"] == "contradicted"
    assert eq["toward"] == "supported" and eq["gap"] == pytest.approx(0.25 - abs(eq["effect"]), abs=0.03)


def test_plan_plans_the_tests_it_has_records_for_and_names_the_others(tmp_path):
    records = write_records(tmp_path, "base", 0.5) + write_records(tmp_path, "far", 0.6)
    plan = plan_tests([("t1", claim_test("far", "base")), ("t2", claim_test("missing", "base"))], records,
                      replicates=100)
    assert [p["test"] for p in plan["plan"]] == ["t1"] and plan["alpha_per_test"] == pytest.approx(0.05 / 2)
    assert [s["test"] for s in plan["skipped"]] == ["t2"] and "'missing'" in plan["skipped"][0]["reason"]
    assert "not planned: t2, b" not in render(plan) and "not planned: t2, a: no pilot records" in render(plan)


def test_plan_bad_input_is_one_line(tmp_path, capsys):
    assert main(["plan", "no-such-suite", "--out", str(tmp_path)]) == 2
    assert "unknown suite" in capsys.readouterr().err
    assert main(["plan", "claims", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no records" in err and err.count("\n") == 1
    assert main(["plan", "quickstart", "--out", str(tmp_path)]) == 2
    assert "no claims report" in capsys.readouterr().err
    records = write_records(tmp_path, "base", 0.5)
    with pytest.raises(UserError, match="no test of the claims report has pilot records.*no pilot records"):
        plan_tests([("t", claim_test("missing", "base"))], records)
    with pytest.raises(UserError, match="power"):
        plan_tests([("t", claim_test("base", "base"))], records, power=1.5)
