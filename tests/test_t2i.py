"""Text-to-image on the compositional digits: the prompts and their canvases, prompt adherence, an MM-DiT trained
on prompt ids, and the table4-t2i recipe (teacher, then ELIT distilled from it) through the suite runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from elit_bench.data import build_dataset, compositional, describe_data, model_input_kwargs, prompt_table
from elit_bench.errors import UserError
from elit_bench.metrics import adherence
from elit_bench.metrics.compute import compute_metrics
from elit_bench.metrics.sources import ArraySamples
from elit_bench.suites.floor import digits_set


@pytest.fixture(scope="module")
def heldout():
    return digits_set(32, "heldout", compositional.NAME)


# ---------------------------------------------------------------- prompts and canvases
def test_prompts_cover_the_categories_and_canvases_put_digits_where_the_prompt_says():
    # catches: a prompt list that drifts (ids are labels in every record), digits pasted outside their cells
    counts = {c: sum(p.category == c for p in compositional.PROMPTS) for c in compositional.CATEGORIES}
    assert counts == {"single": 10, "position": 20, "counting": 20}
    assert compositional.PROMPTS[13].text == "a 3 left of a 6" and compositional.PROMPTS[31].text == "two 1s"
    images, ids = compositional.compositional_uint8(32, per_prompt=2)
    assert images.shape == (100, 32, 32) and ids.tolist() == np.repeat(np.arange(50), 2).tolist()
    ink = {cell: images[:, t:t + s, c:c + s].float().mean(dim=(1, 2)) / 255
           for cell in compositional.CELLS for t, c, s in [compositional.cell_box(cell, 32)]}
    single = ids < 10
    assert (ink["centre"][single] > 0.15).all() and (ink["top_left"][single] < ink["centre"][single]).all()
    above = (ids >= 20) & (ids < 30)
    assert (ink["top"][above] > 0.1).all() and (ink["bottom"][above] > 0.1).all()
    two, three = (ids >= 30) & (ids < 40), ids >= 40
    inked = torch.stack([ink[c] > 0.1 for c in compositional.CORNERS], dim=1).sum(dim=1)
    assert (inked[two] == 2).all() and (inked[three] == 3).all()
    with pytest.raises(UserError, match="multiple of 4"):
        compositional.compositional_uint8(30)


def test_the_data_set_and_its_prompt_table_shape_a_text_model():
    # catches: prompt ids that do not index the table, the empty prompt not last / not padding
    description = describe_data(compositional.NAME)
    kwargs = model_input_kwargs(description)
    table = prompt_table(description)
    assert kwargs == {"input_size": 32, "in_channels": 1, "num_classes": 50, "text_tokens": table.tokens.shape[1],
                      "text_dim": table.tokens.shape[2]}
    assert table.tokens.shape[0] == 51 and not table.mask[-1].any() and table.mask[:-1].any(dim=1).all()
    x, y = build_dataset(description).load(np.arange(0, 5000, 1000))
    assert x.shape == (5, 1, 32, 32) and x.min() == -1 and y.tolist() == [0, 10, 20, 30, 40]
    assert prompt_table(describe_data("digits", 16)) is None


# ---------------------------------------------------------------- adherence
def test_real_canvases_adhere_and_shuffled_prompts_do_not(heldout):
    # catches: cells read in the wrong place, a rule that accepts anything (shuffled) or rejects real digits
    real = compute_metrics(heldout, None, "t2i_adherence", use_cache=False)
    assert real["t2i_adherence"] >= 0.97 and min(real[f"t2i_adherence_{c}"] for c in compositional.CATEGORIES) >= 0.95
    low, high = real["intervals"]["t2i_adherence"]["low"], real["intervals"]["t2i_adherence"]["high"]
    assert low <= real["t2i_adherence"] <= high and real["intervals"]["t2i_adherence"]["n"] == len(heldout.labels)
    shuffled = np.random.default_rng(0).permutation(heldout.labels)
    wrong = compute_metrics(ArraySamples(heldout.array, shuffled), None, "t2i_adherence", use_cache=False)
    assert wrong["t2i_adherence"] < 0.15


def reading(cells: dict[str, int]) -> np.ndarray:
    """DigitsCells-like features (1, 99) for cells holding the given digits (others blank)."""
    out = np.zeros((len(compositional.CELLS), adherence.CLASSES + 1), dtype=np.float32)
    for cell, digit in cells.items():
        i = adherence.CELL_INDEX[cell]
        out[i, digit], out[i, -1] = 5.0, 0.3
    return out.reshape(1, -1)


@pytest.mark.parametrize("prompt, cells, ok", [
    ("a 3", {"centre": 3}, True),
    ("a 3", {"centre": 8}, False),
    ("a 3 left of a 6", {"left": 3, "right": 6}, True),
    ("a 3 left of a 6", {"left": 6, "right": 3}, False),  # swapped: the relation is what is checked
    ("two 1s", {"top_left": 1, "bottom_right": 1}, True),
    ("two 1s", {"top_left": 1, "bottom_right": 1, "top_right": 1}, False),  # three is not two
    ("three 4s", {"top_left": 4, "bottom_right": 4, "top_right": 7}, False),
])
def test_each_category_checks_what_its_prompt_asks(prompt, cells, ok):
    pid = [p.text for p in compositional.PROMPTS].index(prompt)
    assert adherence.satisfied(reading(cells), np.array([pid]))[0] == ok


def test_adherence_refuses_samples_without_prompt_ids(heldout):
    with pytest.raises(UserError, match="prompt id"):
        compute_metrics(ArraySamples(heldout.array[:8]), None, "t2i_adherence", use_cache=False)
    with pytest.raises(UserError, match="prompt id in 0..49"):
        adherence.satisfied(np.zeros((1, 99)), np.array([50]))


# ---------------------------------------------------------------- the recipe through the runner
T2I_SUITE = """name: t2i-tiny
base:
  train: {data: digits-t2i, resolution: 16, batch: 8, steps: 2, ckpt_every: 2, log_every: 1, progress: false,
          model_kwargs: {hidden_size: 32, depth: 3, num_heads: 2}}
  sample: {steps: 2, batch: 16}
  metrics: {names: [t2i_adherence, digits_fd], num_samples: 16, real: digits}
runs:
  - {label: teacher, train: {model: MMDiT-S/4}}
  - {label: elit, train: {model: ELIT-MMDiT-S/4, init: {run: teacher}, teacher: {run: teacher}, distill_weight: 5,
                          multi_budget: true, model_kwargs: {group_size: 2}}}
evals:
  - {label: CFG, sample: {guidance: cfg, scale: 1.0}, only: [teacher]}
  - {label: "{budget} CCFG", matrix: {sample.budget: ["100%", "25%"]}, sample: {guidance: ccfg, scale: 1.0,
     guide_budget: "25%"}, only: [elit]}
scales: {smoke: {}}
"""


def test_a_teacher_and_its_distilled_elit_are_scored_for_adherence(tmp_path):
    # catches: the prompt table not loaded into the trained model, distill_weight lost with a teacher run,
    # adherence missing from records or the real-data row, CCFG with prompt ids
    from elit_bench.cli import main
    from elit_bench.results.records import load_records
    from elit_bench.suites.spec import load_suite

    path = tmp_path / "t2i-tiny.yaml"
    path.write_text(T2I_SUITE)
    teacher, elit = load_suite(str(path)).runs("smoke")
    assert elit.teacher_run == teacher.id and elit.with_teacher == {"distill_weight": 5}
    other = load_suite(str(path)).runs("smoke")[1]
    assert other.id == elit.id  # the id is stable, and (below) depends on the weight
    path.write_text(T2I_SUITE.replace("distill_weight: 5", "distill_weight: 7"))
    assert load_suite(str(path)).runs("smoke")[1].id != elit.id
    path.write_text(T2I_SUITE)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    resolved = json.loads((out / "t2i-tiny" / "smoke" / elit.id / "run.json").read_text())["resolved"]
    assert resolved["distill_weight"] == 5 and resolved["teacher"].endswith(f"{teacher.id}/train/checkpoints/last.pt")
    ckpt = torch.load(resolved["teacher"], map_location="cpu", weights_only=True)
    table = prompt_table(describe_data(compositional.NAME, 16))
    assert torch.equal(ckpt["model"]["text_embedder.prompts"], table.tokens)
    records = load_records(out, "t2i-tiny", "smoke")
    by_label = {(r["run_label"], r["eval_label"]): r for r in records}
    assert set(by_label) == {("teacher", "CFG"), ("elit", "100% CCFG"), ("elit", "25% CCFG"),
                             ("real data", "16 canvases, 16 px")}
    for record in records:
        keys = ["t2i_adherence", *(f"t2i_adherence_{c}" for c in compositional.CATEGORIES if
                                   f"t2i_adherence_{c}" in record["metrics"])]
        assert len(keys) >= 2 and all(k in record["intervals"] for k in keys)
    assert by_label[("real data", "16 canvases, 16 px")]["metrics"]["t2i_adherence"] >= 0.8
    assert by_label[("elit", "25% CCFG")]["flops"]["sample_flops_per_sample"] < \
        by_label[("elit", "100% CCFG")]["flops"]["sample_flops_per_sample"]


def test_fine_tuning_keeps_the_data_sets_prompts_over_the_init_checkpoints(tmp_path):
    # catches: train.init loading the checkpoint's own prompt table (a converted Qwen-Image's is empty) over the
    # data's, so every prompt id would train as the empty prompt
    from elit_bench.checkpoint import save_checkpoint
    from elit_bench.distributed import Dist
    from elit_bench.models import create_model
    from elit_bench.models.mmdit import prompt_embedder
    from elit_bench.training.config import resolve_config
    from elit_bench.training.trainer import Trainer

    kwargs = {"hidden_size": 32, "depth": 2, "num_heads": 2}
    source = create_model("MMDiT-S/4", **kwargs, **model_input_kwargs(describe_data("digits-t2i", 32)))
    empty = prompt_embedder(source)
    empty.set_prompts(torch.zeros_like(empty.prompts), torch.zeros_like(empty.prompt_mask))
    save_checkpoint(tmp_path / "init.pt", {"model": source.state_dict()})
    cfg = resolve_config({"model": "MMDiT-S/4", "model_kwargs": kwargs, "data": "digits-t2i", "resolution": 32,
                          "batch": 4, "steps": 1, "progress": False, "out": str(tmp_path / "run"),
                          "init": str(tmp_path / "init.pt")})
    table = prompt_embedder(Trainer(cfg, Dist()).model)
    wanted = prompt_table(describe_data("digits-t2i", 32))
    assert torch.equal(table.prompts, wanted.tokens) and torch.equal(table.prompt_mask, wanted.mask)
