"""DPG-Bench outside the harness: an evaluation's samples exported as its 2x2 grids, its scorer's output read back
into the record with intervals, and everything that does not match refused with the record untouched.

The scorer's output is written here the way ELLA's dpg_bench/compute_dpg_bench.py writes it (`scorer_output`):
a line per image (tile scores with the parent rule, their mean), a summary whose category scores come from each
image's last tile before the parent rule, and a detail line per question and tile."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from elit_bench.cli import main
from elit_bench.data.text import encode_prompts, save_prompts
from elit_bench.errors import UserError
from elit_bench.metrics.compute import METRICS, compute_metrics
from elit_bench.record import Record
from elit_bench.results.dpg import KEYS, export_dpg, import_dpg

R = 8  # sample side
ITEMS = ["partiprompts7", "whoops3"]
# dpg_bench.csv: (item, question id, dependency, tuple, question); the scorer skips the file's first row
QUESTIONS = [
    ("partiprompts7", 1, "0", "global - (photo)", "Is this a photo?"),
    ("partiprompts7", 2, "0", "entity - whole (car)", "Is there a car?"),
    ("partiprompts7", 3, "2", "attribute - color (car, red)", "Is the car red?"),
    ("partiprompts7", 4, "2", "other - count (car, ==1)", "Is there one car, or more?"),
    ("whoops3", 1, "0", "entity - whole (dogs)", "Are there dogs?"),
    ("whoops3", 2, "1", "relation - spatial (dog, dog, next to)", "Is a dog next to another dog?"),
    ("whoops3", 3, "0", "global - (photo)", "Is this a photo, taken outdoors?"),
]
# the VQA model's answers per item and tile (question ids 2.. of partiprompts7, 1.. of whoops3)
ANSWERS = {"partiprompts7": [("yes", "yes", "yes")] * 3 + [("yes", "no", "yes")],
           "whoops3": [("yes", "yes", "yes"), ("no", "yes", "yes"), ("no", "no", "no"), ("no", "yes", "no")]}
# by hand: tiles (with the parent rule) partiprompts7 1, 1, 1, 2/3 -> 11/12; whoops3 1, 1/3, 0, 0 -> 1/3;
# average (11/12 + 1/3) / 2 = 62.5%; categories from the last tiles' raw answers: entity 1/2, attribute 0/1,
# other 1/1, relation 1/1 (its parent was answered no: raw), global 0/1
EXPECTED = {"dpg_avg": 62.5, "dpg_entity": 50.0, "dpg_relation": 100.0, "dpg_attribute": 0.0, "dpg_other": 100.0,
            "dpg_global": 0.0}


def write_csv(path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
                    "category_detailed", "tuple", "question_natural_language"])
        for item, qid, dep, tup, question in QUESTIONS:
            broad, _, detailed = tup.split("(")[0].partition(" - ")
            w.writerow([item, "prompt", "kw", qid, dep, broad.strip(), detailed.strip(), tup, question])
    return path


def scorer_output(image_dir, res_path, resolution=R, drop=()):
    """What the scorer writes for ANSWERS: res_path (results) and res_path's _detail.txt."""
    asked = {}
    for item, qid, dep, tup, question in QUESTIONS[1:]:  # the scorer skips the first row
        asked.setdefault(item, []).append((qid, [int(d) for d in dep.split(",")], tup, question))
    lines, detail, per_image, categories = [], [], [], {}
    for item, tiles in ANSWERS.items():
        if item in drop:  # an image the scorer failed on: no line
            continue
        path, scores = f"{image_dir}/{item}.png", []
        for t, answers in enumerate(tiles):
            crop = ((t % 2) * resolution, (t // 2) * resolution, (t % 2 + 1) * resolution, (t // 2 + 1) * resolution)
            score = {}
            for (qid, _, _, question), answer in zip(asked[item], answers):
                detail.append(f"{path}, {crop}, {question}, {answer}")
                score[qid] = float(answer == "yes")
            raw = dict(score)
            for qid, deps, _, _ in asked[item]:
                if any(d != 0 and score[d] == 0 for d in deps):
                    score[qid] = 0
            scores.append(sum(score.values()) / len(score))
        per_image.append(sum(scores) / len(scores))
        lines.append(f"{path}, {', '.join(str(s) for s in scores)}, {per_image[-1]}")
        for qid, _, tup, _ in asked[item]:
            categories.setdefault(tup.split("(")[0].strip(), []).append(raw[qid])
    level1 = {}
    for name, values in categories.items():
        level1.setdefault(name.split("-")[0].strip(), []).extend(values)
    summary = ("Model: images\nL1 category scores:\n"
               + "".join(f"\t{k}: {np.mean(v) * 100}\n" for k, v in level1.items())
               + "L2 category scores:\n" + "".join(f"\t{k}: {np.mean(categories[k]) * 100}\n" for k in sorted(categories))
               + f"Image path: {image_dir}\nSave results to: {res_path}\nDPG-Bench score: {np.mean(per_image) * 100}")
    res_path.write_text("\n".join(lines) + "\n" + summary + "\n")
    res_path.with_name(res_path.name.replace(".txt", "_detail.txt")).write_text("\n".join(detail) + "\n")
    return res_path


@pytest.fixture
def evaluation(tmp_path):
    """A suite output folder with one text-to-image evaluation (2 prompts, 5 samples each, ids cycled), the
    encode-text directory of its prompts with items.json, and DPG-Bench's question file."""
    run = tmp_path / "out" / "t2i" / "paper" / "run1"
    samples = np.random.default_rng(0).integers(0, 256, (10, R, R, 3), dtype=np.uint8)
    (run / "evals" / "ev1" / "step-10").mkdir(parents=True)
    np.savez(run / "evals" / "ev1" / "step-10" / "samples.npz", samples, np.arange(10) % 2)
    record = Record(suite="t2i", scale="paper", run_id="run1", run_label="ELIT", eval_id="ev1", eval_label="CFG",
                    model="ELIT-MMDiT-S/4", train_step=10, metrics={"t2i_adherence": 0.5},
                    intervals={"t2i_adherence": {"low": 0.4, "high": 0.6}},
                    provenance={"code_version": "x", "pending_metrics": ["dpg"]})
    record_path = record.write(run / "records" / "ev1.json")
    prompts = save_prompts(tmp_path / "prompts", encode_prompts(["a red car", "two dogs"]))
    (prompts / "items.json").write_text(json.dumps(ITEMS))
    return {"record": record_path, "samples": samples, "prompts": prompts, "csv": write_csv(tmp_path / "dpg.csv"),
            "out": tmp_path / "out", "export": tmp_path / "export"}


def test_export_writes_each_prompts_first_four_samples_as_the_scorers_grid(evaluation):
    # catches: tiles out of the scorer's crop order, samples of another prompt or not the first four in seed
    # order, a manifest that does not name what was exported
    (folder,) = export_dpg(evaluation["out"], evaluation["prompts"], evaluation["export"])
    assert folder == evaluation["export"] / "run1" / "ev1"
    for item, prompt in zip(ITEMS, (0, 1)):
        grid = np.asarray(Image.open(folder / "images" / f"{item}.png"))
        assert grid.shape == (2 * R, 2 * R, 3)
        crops = [grid[y:y + R, x:x + R] for x, y in ((0, 0), (R, 0), (0, R), (R, R))]  # the scorer's crops
        for crop, index in zip(crops, (prompt, prompt + 2, prompt + 4, prompt + 6)):
            np.testing.assert_array_equal(crop, evaluation["samples"][index])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["items"] == ITEMS and manifest["resolution"] == R and manifest["run_id"] == "run1"
    assert manifest["sample_indices"] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert manifest["record"] == str(evaluation["record"].resolve()) and len(manifest["samples_sha256"]) == 64


def test_import_adds_the_six_scores_with_intervals_and_keeps_the_rest(evaluation):
    # catches: a misparsed results file, category scores from the wrong tile or after the parent rule, missing
    # intervals, other record fields changed, the pending mark left behind
    (folder,) = export_dpg(evaluation["record"], evaluation["prompts"], evaluation["export"])
    scores = scorer_output(folder / "images", folder / "images" / "dpg-bench_20240101-000000_results.txt")
    before = Record.read(evaluation["record"])
    after = import_dpg(scores, evaluation["record"], evaluation["csv"])
    assert Record.read(evaluation["record"]) == after
    for key in KEYS:
        assert after.metrics[key] == pytest.approx(EXPECTED[key], abs=1e-9)
        bound = after.intervals[key]
        assert bound["low"] <= after.metrics[key] <= bound["high"] and bound["method"] == "bootstrap-items"
        assert 0 <= bound["low"] and bound["high"] <= 100 and bound["n"] == 2
    assert after.intervals["dpg_avg"]["high"] > after.intervals["dpg_avg"]["low"]  # two items that differ
    assert after.metrics["t2i_adherence"] == 0.5 and after.intervals["t2i_adherence"] == {"low": 0.4, "high": 0.6}
    same = ("suite", "scale", "run_id", "eval_id", "model", "train_step", "sample", "flops", "time")
    assert all(getattr(after, k) == getattr(before, k) for k in same)
    dpg = after.provenance["dpg_bench"]
    assert "pending_metrics" not in after.provenance and after.provenance["code_version"] == "x"
    assert dpg["items"] == 2 and dpg["resolution"] == R and dpg["samples_verified"] is True
    assert dpg["manifest"] == str((folder / "manifest.json").resolve()) and len(dpg["results_sha256"]) == 64
    assert set(METRICS["dpg"].keys) == set(KEYS) and METRICS["dpg"].kind == "external"


@pytest.mark.parametrize("damage", ["missing item", "printed score", "no summary", "resolution", "csv"])
def test_import_refuses_output_that_does_not_match_and_leaves_the_record(evaluation, damage):
    # catches: a scorer that skipped an image, numbers edited or from another run, an unfinished run, crops of
    # another size, questions of another file: each would put a wrong number in the record
    (folder,) = export_dpg(evaluation["record"], evaluation["prompts"], evaluation["export"])
    res = folder / "scores.txt"
    scorer_output(folder / "images", res, resolution=2 * R if damage == "resolution" else R,
                  drop=("whoops3",) if damage == "missing item" else ())
    text = res.read_text()
    if damage == "printed score":
        res.write_text(text.replace("DPG-Bench score: 62.5", "DPG-Bench score: 65.0"))
    elif damage == "no summary":
        res.write_text(text.split("Model:")[0])
    elif damage == "csv":
        evaluation["csv"].write_text(evaluation["csv"].read_text().replace("Is the car red?", "Is the car blue?"))
    before = evaluation["record"].read_bytes()
    message = {"missing item": "1 unscored", "printed score": "prints dpg_avg 65.0", "no summary": "did not finish",
               "resolution": "rerun DPG-Bench with resolution 8", "csv": "does not list"}[damage]
    with pytest.raises(UserError, match=message):
        import_dpg(res, evaluation["record"], evaluation["csv"])
    assert evaluation["record"].read_bytes() == before


def test_export_refuses_prompts_without_four_samples_and_writes_nothing(evaluation):
    # catches: a grid padded or shortened silently when the suite drew too few samples of a prompt
    npz = evaluation["record"].parents[1] / "evals" / "ev1" / "step-10" / "samples.npz"
    np.savez(npz, evaluation["samples"][:7], np.arange(7) % 2)  # prompt 1: 3 samples
    with pytest.raises(UserError, match=r"prompt 1 has 3 samples.*num_samples = 4 x 2 prompts = 8"):
        export_dpg(evaluation["record"], evaluation["prompts"], evaluation["export"])
    assert not evaluation["export"].exists()
    (evaluation["prompts"] / "items.json").write_text(json.dumps(["only-one"]))
    with pytest.raises(UserError, match="names 1 items for the 2 prompts"):
        export_dpg(evaluation["record"], evaluation["prompts"], evaluation["export"])


def test_the_harness_refuses_to_compute_dpg_itself():
    # catches: an external metric silently computed as something else (or skipped) by `elit-bench metrics`
    with pytest.raises(UserError, match="scored outside the harness"):
        compute_metrics(np.zeros((4, R, R, 3), np.uint8), None, "dpg")


def test_cli_exports_and_imports_end_to_end(evaluation, capsys):
    # catches: commands not registered, bad input not one line with exit 2, a failed import that writes
    assert main(["dpg", "export", str(evaluation["out"]), "--prompts", str(evaluation["prompts"]),
                 "--out", str(evaluation["export"])]) == 0
    images = evaluation["export"] / "run1" / "ev1" / "images"
    assert f"dist_eval.sh {images} {R}" in capsys.readouterr().out
    assert main(["dpg", "export", str(evaluation["out"]), "--prompts", str(evaluation["prompts"]),
                 "--out", str(evaluation["export"])]) == 2  # exported already
    err = capsys.readouterr().err
    assert "exists already" in err and err.count("\n") == 1
    res = scorer_output(images, images / "dpg-bench_x_results.txt")
    before = evaluation["record"].read_bytes()
    assert main(["dpg", "import", str(res), "--record", str(evaluation["record"]), "--csv",
                 str(evaluation["csv"]), "--manifest", str(evaluation["out"] / "nothing.json")]) == 2
    assert evaluation["record"].read_bytes() == before
    capsys.readouterr()
    assert main(["dpg", "import", str(res), "--record", str(evaluation["record"]), "--csv",
                 str(evaluation["csv"])]) == 0
    assert "dpg_avg 62.50" in capsys.readouterr().out
    assert json.loads(evaluation["record"].read_text())["metrics"]["dpg_entity"] == pytest.approx(50.0)


def test_a_suite_that_lists_dpg_runs_and_leaves_it_pending(tmp_path):
    # catches: the runner handing an external metric to the evaluator (the run fails), or dropping it silently
    from elit_bench.results.records import load_records

    suite = tmp_path / "t2i-dpg.yaml"
    suite.write_text("""name: t2i-dpg
base:
  train: {model: MMDiT-S/4, data: digits-t2i, resolution: 16, batch: 8, steps: 1, ckpt_every: 1, log_every: 1,
          progress: false, model_kwargs: {hidden_size: 32, depth: 2, num_heads: 2}}
  sample: {steps: 1, batch: 16}
  metrics: {names: [t2i_adherence, dpg], num_samples: 16, real: null}
runs: [{label: teacher}]
evals: [{label: none, sample: {guidance: none}}]
scales: {smoke: {}}
""")
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    (record,) = load_records(tmp_path / "out", "t2i-dpg", "smoke")
    assert "t2i_adherence" in record["metrics"] and not set(KEYS) & set(record["metrics"])
    assert record["provenance"]["pending_metrics"] == ["dpg"]
