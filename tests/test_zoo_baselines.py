"""baselines/elastic_zoo.csv: the published numbers of the elastic-compute zoo, read as data and checked
against the harness where they convert (FLOPs units, TaylorSeer's schedule)."""

import csv
import re

import pytest
import torch

from elit_bench.baselines import baseline_file
from elit_bench.flops import forward_flops
from elit_bench.flow.taylorseer import TaylorSeer
from elit_bench.models import create_model

COLUMNS = ["method", "model", "setting", "metric", "value", "gflops_published", "gflops_harness", "speedup",
           "samples", "protocol", "beside_ours", "source"]


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with open(baseline_file("elastic_zoo.csv"), newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def test_every_row_has_a_number_a_protocol_and_a_source(rows):
    assert {r["method"] for r in rows} == {"baseline", "DyDiT", "TREAD", "TaylorSeer", "ToMe"}
    for r in rows:
        assert float(r["value"]) > 0 and r["metric"] in {"fid", "seconds_per_image"}, r
        assert r["protocol"] and r["beside_ours"] and r["source"], r
        for key in ("gflops_published", "gflops_harness", "speedup", "samples"):
            assert r[key] == "" or float(r[key]) > 0, (key, r)


def test_harness_gflops_are_twice_the_published_macs(rows):
    converted = [r for r in rows if r["gflops_harness"]]
    assert len(converted) == 3  # DyDiT's table: DiT-XL/2 and the two lambdas
    for r in converted:
        assert float(r["gflops_harness"]) == pytest.approx(2 * float(r["gflops_published"]), abs=0.006)


def test_dydit_published_gflops_are_macs_of_our_dit_forward(rows):
    # catches: reading DyDiT's "GFLOPs" as FLOPs (our DiT-XL/2 forward would be half of it)
    (dit,) = [r for r in rows if r["method"] == "baseline" and r["gflops_published"]]
    with torch.device("meta"):
        model = create_model(dit["model"], resolution=256)
    assert forward_flops(model) / 1e9 == pytest.approx(float(dit["gflops_harness"]), rel=0.005)


def test_taylorseer_speedups_are_our_schedule(rows):
    """The published FLOPs speed-ups over 50 steps are 50 / full evaluations of the harness's schedule (to the
    forecast passes' small cost), so the interval in each row is the one the published number belongs to."""
    cached = [r for r in rows if r["method"] == "TaylorSeer" and "interval" in r["setting"]]
    assert len(cached) == 3
    for r in cached:
        interval = int(re.search(r"interval (\d+)", r["setting"]).group(1))
        full = sum(TaylorSeer(order=2, interval=interval).full(50))
        assert 50 / full == pytest.approx(float(r["speedup"]), rel=0.01), r["setting"]
