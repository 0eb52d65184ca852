"""DPG-Bench (Hu et al. 2024, "ELLA") is scored outside the harness: export a text-to-image evaluation's samples in
its input layout, and read its scores back into the evaluation's record (`elit-bench dpg export / import`).

DPG-Bench asks an mPLUG VQA model the yes/no questions of its dpg_bench.csv (columns item_id, tuple,
question_natural_language, ...) about the images of its 1065 prompts. Its scorer (ELLA's
dpg_bench/compute_dpg_bench.py, run as `bash dpg_bench/dist_eval.sh IMAGE_DIR R`) reads every file of IMAGE_DIR
as <item id>.png, 4 images of side R in a 2x2 grid that it crops at (0, 0), (R, 0), (0, R), (R, R) (left to
right, top to bottom), and writes into IMAGE_DIR

- dpg-bench_<time>_results.txt: a line per image, ``<image path>, <tile 1 score>, ..., <tile 4 score>, <their
  mean>`` (a tile's score: the share of its questions answered "yes", a question whose parent was answered
  "no" counting 0), then a summary::

      Model: <IMAGE_DIR's name>
      L1 category scores:
      \\t<category>: <score x 100>          (entity, attribute, relation, global, other)
      L2 category scores:
      \\t<category - sub>: <score x 100>
      Image path: ...
      Save results to: ...
      DPG-Bench score: <mean over images of their means, x 100>

- dpg-bench_<time>_results_detail.txt: a line per question and tile, ``<image path>, (x0, y0, x1, y1),
  <question>, <answer>``.

A category score is its share of "yes" over all questions of the category, pooled over images, from each
image's last tile and before the parent rule (the scorer's per-image routine returns the last crop's raw
answers); the overall score averages the four tiles with the parent rule. `import_dpg` takes both numbers as
the scorer printed them (the published ones are made that way) after recomputing them from the per-image
lines and the detail file, and bounds each with a 95% basic bootstrap interval over items (the statistic
recomputed on items drawn with replacement), so a DPG number has an interval like every harness number.

The export of one evaluation (`export_dpg`)::

    OUT/<run id>/<eval id>/images/<item id>.png   2R x 2R: the first 4 samples of the prompt, in seed order
    OUT/<run id>/<eval id>/manifest.json          record, samples sha256, prompts, item ids, resolution, ...

Item ids name the prompts of an `elit-bench encode-text` directory: a JSON list of strings, one per prompt in
the same order, from ``items.json`` in that directory or a file given with ``--items``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from elit_bench.checkpoint import check_output, file_sha256, read_text
from elit_bench.errors import UserError
from elit_bench.metrics import intervals
from elit_bench.metrics.compute import METRICS
from elit_bench.record import Record
from elit_bench.results.records import grid_path

METRIC = "dpg"  # its declaration: metrics.compute.METRICS["dpg"]
KEYS = METRICS[METRIC].keys  # dpg_avg, then one per DPG-Bench L1 category
CATEGORIES = tuple(k.removeprefix("dpg_") for k in KEYS[1:])  # entity, relation, attribute, other, global
SAMPLES_PER_PROMPT = 4  # the scorer's 2x2 grid
ITEMS_FILE = "items.json"
MANIFEST = "manifest.json"
FORMAT, VERSION = "elit-dpg-export", 1
IMAGES = "images"
ITEM_ID = re.compile(r"[A-Za-z0-9_-]+")  # the scorer names an image's item by its file name before the first "."
INTERVAL_METHOD = "bootstrap-items"
TOLERANCE = 1e-6  # recomputed vs printed scores (printed with full float precision)


# ---------------------------------------------------------------------------------------------------- export
def read_items(prompts_dir, items_file=None) -> list[str]:
    """The DPG-Bench item id of each prompt of the encode-text directory `prompts_dir`, from `items_file` or the
    directory's items.json (a JSON list of strings, one per prompt in the same order)."""
    from elit_bench.data.text import read_meta

    num_prompts = read_meta(prompts_dir)["num_prompts"]
    path = Path(items_file or Path(prompts_dir) / ITEMS_FILE).expanduser()
    if not path.is_file():
        raise UserError(f"no item ids: {str(path)!r} does not exist; write the DPG-Bench item id of each prompt, in "
                        f"prompt order, as a JSON list into {ITEMS_FILE} of the prompts directory or give --items")
    try:
        items = json.loads(read_text(path, "item ids file"))
    except ValueError as exc:
        raise UserError(f"item ids file {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise UserError(f"item ids file {str(path)!r} must hold a JSON list of strings (DPG-Bench item ids)")
    if len(items) != num_prompts:
        raise UserError(f"item ids file {str(path)!r} names {len(items)} items for the {num_prompts} prompts of "
                        f"{str(prompts_dir)!r}: give one item id per prompt, in prompt order")
    bad = [i for i in items if not ITEM_ID.fullmatch(i)]
    if bad:
        raise UserError(f"item id {bad[0]!r} in {str(path)!r} cannot name an image file: use letters, digits, "
                        "'_' and '-' (DPG-Bench's ids, e.g. 'partiprompts12')")
    twice = sorted(i for i, n in Counter(items).items() if n > 1)
    if twice:
        raise UserError(f"item id {twice[0]!r} is given twice in {str(path)!r}: each prompt needs its own item")
    return items


def _record_paths(source) -> tuple[list[Path], bool]:
    """(record files, whether `source` named one): a record .json, or every records/*.json under a folder."""
    source = Path(source).expanduser()
    if source.is_file():
        return [source], True
    if not source.is_dir():
        raise UserError(f"{str(source)!r} is neither a record file nor a folder of suite runs")
    paths = sorted(p for p in source.rglob("*.json") if p.parent.name == "records")
    if not paths:
        raise UserError(f"no records under {str(source)!r}: give a record file or an output folder of a suite run "
                        "(e.g. OUT/table4-t2i/paper)")
    return paths, False


def _prompt_samples(labels: np.ndarray | None, num_prompts: int, where: str) -> list[list[int]]:
    """Indices of the first SAMPLES_PER_PROMPT samples of each prompt id, in sample (seed) order."""
    if labels is None:
        raise UserError(f"{where} has no prompt ids (arr_1): it is not a text-to-image sample set")
    if labels.min() < 0 or labels.max() >= num_prompts:
        raise UserError(f"{where} has prompt ids {labels.min()}..{labels.max()} but the prompts directory holds "
                        f"{num_prompts} prompts: give the prompts the model was sampled with")
    counts = np.bincount(labels, minlength=num_prompts)
    if counts.min() < SAMPLES_PER_PROMPT:
        short = int(np.argmin(counts))
        raise UserError(f"{where}: prompt {short} has {counts[short]} samples, DPG-Bench needs "
                        f"{SAMPLES_PER_PROMPT} of every prompt; sample num_samples = {SAMPLES_PER_PROMPT} x "
                        f"{num_prompts} prompts = {SAMPLES_PER_PROMPT * num_prompts} with the prompt ids cycled "
                        "(random prompt ids cannot guarantee 4 each)")
    order = np.argsort(labels, kind="stable")  # stable: within a prompt, sample order
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return [order[s:s + SAMPLES_PER_PROMPT].tolist() for s in starts]


def export_dpg(source, prompts_dir, out, items_file=None) -> list[Path]:
    """Write each evaluation's samples in DPG-Bench's layout (module docstring); returns the export folders.

    source: a record file, or a folder (e.g. OUT/<suite>/<scale>) whose records with samples are all exported
    (records without a sample set, such as measurements, are skipped). Everything is checked before anything is
    written; an export folder that exists already is an error."""
    from PIL import Image

    from elit_bench.data.samples import NpzSamples

    prompts_dir = Path(prompts_dir).expanduser().resolve()
    items = read_items(prompts_dir, items_file)
    items_path = Path(items_file or prompts_dir / ITEMS_FILE).expanduser().resolve()
    out = check_output(out, "output").resolve()
    paths, named = _record_paths(source)
    jobs = []
    for path in paths:
        record = Record.read(path)
        samples_path = grid_path(str(path), record).with_name("samples.npz")
        if not samples_path.is_file():
            if named:
                raise UserError(f"record {str(path)!r} has no sample set ({samples_path} is missing); rerun its "
                                "evaluation")
            continue
        samples = NpzSamples(samples_path)
        shape = samples.sample_shape
        if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3:
            raise UserError(f"{samples_path} holds samples of shape {shape}; DPG-Bench scores square RGB images")
        indices = _prompt_samples(samples.labels, len(items), str(samples_path))
        target = out / record.run_id / record.eval_id
        if target.exists():
            raise UserError(f"{target} exists already; delete it or choose another --out")
        if any(target == job[3] for job in jobs):
            raise UserError(f"two records export to {target} (run {record.run_id}, eval {record.eval_id}); export "
                            "one suite scale at a time")
        jobs.append((path, record, samples, target, indices))
    if not jobs:
        raise UserError(f"no record under {str(source)!r} has a sample set to export")
    for path, record, samples, target, indices in jobs:
        manifest = {
            "format": FORMAT, "version": VERSION, "record": str(path.resolve()), "suite": record.suite,
            "scale": record.scale, "run_id": record.run_id, "eval_id": record.eval_id,
            "train_step": record.train_step, "samples": str(samples.path.resolve()),
            "samples_sha256": file_sha256(samples.path), "prompts": str(prompts_dir),
            "prompts_meta_sha256": file_sha256(prompts_dir / "meta.json"), "items_file": str(items_path),
            "resolution": samples.sample_shape[0], "samples_per_prompt": SAMPLES_PER_PROMPT, "images": IMAGES,
            "items": items, "sample_indices": indices}
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted export that had this process id
        (tmp / IMAGES).mkdir(parents=True)
        try:
            for item, rows in zip(items, indices):
                tiles = [next(samples.batches(i, i + 1, 1))[0] for i in rows]  # (R, R, 3) uint8 each
                grid = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
                Image.fromarray(grid).save(tmp / IMAGES / f"{item}.png")
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return [job[3] for job in jobs]


# ---------------------------------------------------------------------------------------------------- import
def _floats(text: str, where: str) -> list[float]:
    try:
        return [float(v) for v in text.split(", ")]
    except ValueError:
        raise UserError(f"{where} does not end in numbers; it is not DPG-Bench output (or it is damaged)") from None


IMAGE_LINE = re.compile(r"(?P<path>.+\.png), (?P<scores>[^,]+(?:, [^,]+)*)")
DETAIL_LINE = re.compile(r"(?P<path>.+\.png), \((?P<x0>\d+), (?P<y0>\d+), (?P<x1>\d+), (?P<y1>\d+)\), "
                         r"(?P<question>.*), (?P<answer>.*)")


def _item(image_path: str) -> str:
    """The scorer's key of an image: its file name before the first "."."""
    return os.path.basename(image_path).split(".")[0]


def parse_results(path: Path) -> tuple[dict[str, list[float]], dict[str, float], float]:
    """({item: [tile scores..., their mean]}, {L1 category: score x 100}, overall score x 100) of a results file."""
    lines = read_text(path, "DPG-Bench results file").splitlines()
    per_item: dict[str, list[float]] = {}
    l1: dict[str, float] = {}
    overall, section, summary = None, None, False
    for n, line in enumerate(lines, 1):
        where = f"line {n} of {str(path)!r}"
        if line.startswith("Model: "):
            summary = True
        elif line == "L1 category scores:":
            section = l1
        elif line == "L2 category scores:":
            section = {}  # the sub-categories: not records' numbers
        elif line.startswith("\t") and section is not None and ": " in line:
            name, value = line[1:].rsplit(": ", 1)
            section[name] = _floats(value, where)[0]
        elif line.startswith(("Image path: ", "Save results to: ")):
            section = None
        elif line.startswith("DPG-Bench score: "):
            overall = _floats(line.split(": ", 1)[1], where)[0]
        elif (m := IMAGE_LINE.fullmatch(line)) and not summary:
            item = _item(m["path"])
            if item in per_item:
                raise UserError(f"{where} scores item {item!r} a second time; rerun DPG-Bench into a new results file")
            per_item[item] = _floats(m["scores"], where)
        elif line.strip():
            raise UserError(f"{where} is not DPG-Bench output: {line[:60]!r}")
    if overall is None or not summary:
        raise UserError(f"{str(path)!r} has no DPG-Bench summary (its 'DPG-Bench score:' line): the scorer did not "
                        "finish; rerun it")
    return per_item, l1, overall


def parse_detail(path: Path, resolution: int) -> dict[str, dict[int, list[tuple[str, str]]]]:
    """{item: {tile: [(question, answer), ...] in the order asked}} of a detail file; tiles 0..3 left to right,
    top to bottom. The crops must be the export's `resolution`."""
    if not path.is_file():
        raise UserError(f"{str(path)!r} is missing: DPG-Bench writes it beside the results file (<results>_detail.txt); "
                        "keep both")
    out: dict[str, dict[int, list[tuple[str, str]]]] = {}
    for n, line in enumerate(read_text(path, "DPG-Bench detail file").splitlines(), 1):
        if not line.strip():
            continue
        m = DETAIL_LINE.fullmatch(line)
        if not m:
            raise UserError(f"line {n} of {str(path)!r} is not a DPG-Bench detail line: {line[:60]!r}")
        x0, y0, x1, y1 = (int(m[k]) for k in ("x0", "y0", "x1", "y1"))
        if x1 - x0 != resolution or y1 - y0 != resolution or x0 % resolution or y0 % resolution:
            raise UserError(f"line {n} of {str(path)!r} crops ({x0}, {y0}, {x1}, {y1}) but the export's images are "
                            f"{resolution} px: rerun DPG-Bench with resolution {resolution}")
        tile = (y0 // resolution) * 2 + x0 // resolution
        out.setdefault(_item(m["path"]), {}).setdefault(tile, []).append((m["question"], m["answer"]))
    return out


def read_questions(path: Path) -> dict[str, list[tuple[str, str]]]:
    """{item id: [(question, L1 category), ...] in file order} of DPG-Bench's dpg_bench.csv."""
    if not path.is_file():
        raise UserError(f"DPG-Bench question file {str(path)!r} does not exist; give ELLA's dpg_bench/dpg_bench.csv")
    rows = csv.DictReader(read_text(path, "DPG-Bench question file").splitlines())
    missing = {"item_id", "tuple", "question_natural_language"} - set(rows.fieldnames or ())
    if missing:
        raise UserError(f"{str(path)!r} lacks the column(s) {', '.join(sorted(missing))}: it is not dpg_bench.csv")
    out: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        # the scorer's category of a question: "attribute - color (car, red)" -> "attribute"
        category = row["tuple"].split("(")[0].strip().split("-")[0].strip()
        out.setdefault(row["item_id"], []).append((row["question_natural_language"], category))
    return out


def _category_counts(item: str, asked: list[tuple[str, str]], questions: list[tuple[str, str]],
                     where: str) -> np.ndarray:
    """(yes, asked) per category (2, C) of an item's answers; each question's category is the next question of the
    item in dpg_bench.csv with its text (the scorer skips the file's first question)."""
    out = np.zeros((2, len(CATEGORIES)))
    position = 0
    for question, answer in asked:
        while position < len(questions) and questions[position][0] != question:
            position += 1
        if position == len(questions):
            raise UserError(f"{where} asks item {item!r} {question[:60]!r}, which dpg_bench.csv does not list for it "
                            "(in that order): give the question file DPG-Bench was run with")
        category = questions[position][1]
        if category not in CATEGORIES:
            raise UserError(f"dpg_bench.csv puts {question[:60]!r} in category {category!r}; DPG-Bench's are "
                            f"{', '.join(CATEGORIES)}")
        out[:, CATEGORIES.index(category)] += (answer == "yes", 1)
        position += 1
    return out


def _check(value: float, recomputed: float, what: str, path: Path) -> None:
    close = abs(value - recomputed) <= TOLERANCE * max(1.0, abs(value))
    if not (math.isfinite(value) and math.isfinite(recomputed) and close):
        raise UserError(f"{str(path)!r} prints {what} {value} but its per-item lines give {recomputed:.10g}: the "
                        "results file is damaged or from another run; rerun DPG-Bench")


def item_bootstrap(yes: np.ndarray, asked: np.ndarray, replicates: int = intervals.BOOTSTRAP_REPLICATES,
                   seed: int = intervals.BOOTSTRAP_SEED, level: float = intervals.LEVEL) -> list[dict]:
    """Basic bootstrap intervals over items of pooled shares x 100: yes, asked (I, K) per item and statistic; the
    statistic is 100 sum(yes) / sum(asked), each replicate draws I items with replacement (the same draw for all K).
    A replicate without any question of a statistic does not count for it."""
    weights = intervals.draw_counts(len(yes), replicates, torch.Generator().manual_seed(seed)).numpy()  # (R, I)
    point = 100 * yes.sum(0) / asked.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = 100 * (weights @ yes) / (weights @ asked)  # (R, K)
    alpha = 1 - level
    out = []
    for k in range(yes.shape[1]):
        q_low, q_high = np.nanquantile(draws[:, k], [alpha / 2, 1 - alpha / 2])
        low, high = max(0.0, 2 * point[k] - q_high), min(100.0, 2 * point[k] - q_low)  # a share: within 0..100
        out.append(intervals.make_interval(low, high, INTERVAL_METHOD, level, draws[:, k][np.isfinite(draws[:, k])],
                                 n=len(yes), units="items", seed=seed))
    return out


def find_manifest(scores: Path, manifest=None) -> Path:
    """The export manifest of a results file: `manifest`, or manifest.json in the results file's folder or above
    it (dist_eval.sh writes the results into the images folder)."""
    if manifest is not None:
        found = Path(manifest).expanduser()
        if not found.is_file():
            raise UserError(f"manifest {str(found)!r} does not exist")
        return found
    for folder in (scores.parent, scores.parent.parent):
        if (folder / MANIFEST).is_file():
            return folder / MANIFEST
    raise UserError(f"no {MANIFEST} beside or above {str(scores)!r}: give the export's manifest with --manifest")


def import_dpg(scores, record_path, questions_csv, manifest=None) -> Record:
    """Add DPG-Bench's scores of one exported evaluation (its results file `scores`, the detail file beside it and
    the dpg_bench.csv it asked) to the record `record_path`: metrics `KEYS` (0-100, as the scorer printed them),
    their item-bootstrap intervals, and provenance["dpg_bench"]; everything else in the record stays as it was.
    A results file whose items or crops do not match the export, or whose numbers do not recompute, is refused
    and the record left untouched."""
    scores, record_path, questions_csv = (Path(p).expanduser() for p in (scores, record_path, questions_csv))
    if not scores.is_file():
        raise UserError(f"DPG-Bench results file {str(scores)!r} does not exist")
    manifest_path = find_manifest(scores, manifest)
    try:
        exported = json.loads(read_text(manifest_path, "manifest"))
    except ValueError as exc:
        raise UserError(f"manifest {str(manifest_path)!r} is not valid JSON ({exc}); export again") from None
    if not isinstance(exported, dict) or exported.get("format") != FORMAT or exported.get("version") != VERSION:
        raise UserError(f"{str(manifest_path)!r} is not an `elit-bench dpg export` manifest")
    record = Record.read(record_path)
    ident = {k: getattr(record, k) for k in ("suite", "scale", "run_id", "eval_id", "train_step")}
    if any(exported.get(k) != v for k, v in ident.items()):
        raise UserError(f"manifest {str(manifest_path)!r} exports run {exported.get('run_id')} eval "
                        f"{exported.get('eval_id')} (step {exported.get('train_step')}), not the record's run "
                        f"{record.run_id} eval {record.eval_id} (step {record.train_step}): give the matching record")
    samples = Path(exported["samples"])
    if samples.is_file() and file_sha256(samples) != exported["samples_sha256"]:
        raise UserError(f"{samples} changed since it was exported: the scores are of other samples; export again")

    items, resolution = exported["items"], exported["resolution"]
    per_item, l1, overall = parse_results(scores)
    missing, extra = sorted(set(items) - set(per_item)), sorted(set(per_item) - set(items))
    if missing or extra:
        raise UserError(f"{str(scores)!r} scores {len(per_item)} items, the export has {len(items)}"
                        + (f"; {len(missing)} unscored (e.g. {missing[0]!r}: DPG-Bench skips an image it fails "
                           "on, see its log)" if missing else "")
                        + (f"; {len(extra)} not exported (e.g. {extra[0]!r})" if extra else "")
                        + "; score exactly the exported images")
    for item in items:
        tiles = per_item[item][:-1]
        if len(tiles) != SAMPLES_PER_PROMPT:
            raise UserError(f"{str(scores)!r} scores {len(tiles)} tile(s) of item {item!r}, the export has "
                            f"{SAMPLES_PER_PROMPT}: rerun DPG-Bench with --pic-num {SAMPLES_PER_PROMPT}")
        _check(per_item[item][-1], sum(tiles) / len(tiles), f"item {item!r}'s mean", scores)
    if set(l1) != set(CATEGORIES):
        raise UserError(f"{str(scores)!r} has L1 categories {', '.join(sorted(l1)) or 'none'}; DPG-Bench's are "
                        f"{', '.join(CATEGORIES)}: give the results of a whole DPG-Bench run")

    detail_path = Path(str(scores).replace(".txt", "_detail.txt"))  # the scorer's own naming
    detail = parse_detail(detail_path, resolution)
    questions = read_questions(questions_csv)
    last = SAMPLES_PER_PROMPT - 1  # the tile the scorer's category scores come from
    counts = np.zeros((len(items), 2, len(CATEGORIES)))
    for i, item in enumerate(items):
        tiles = detail.get(item, {})
        if sorted(tiles) != list(range(SAMPLES_PER_PROMPT)):
            raise UserError(f"{str(detail_path)!r} answers tiles {sorted(tiles)} of item {item!r}, not all "
                            f"{SAMPLES_PER_PROMPT}: it belongs to another DPG-Bench run")
        counts[i] = _category_counts(item, tiles[last], questions.get(item, []), repr(str(detail_path)))
    yes = np.concatenate([np.array([per_item[item][-1] for item in items])[:, None], counts[:, 0]], 1)
    asked = np.concatenate([np.ones((len(items), 1)), counts[:, 1]], 1)
    printed = [overall, *(l1[c] for c in CATEGORIES)]
    for key, value, recomputed in zip(KEYS, printed, 100 * yes.sum(0) / asked.sum(0)):
        _check(value, recomputed, key, scores)

    bounds = dict(zip(KEYS, item_bootstrap(yes, asked)))
    pending = [m for m in record.provenance.get("pending_metrics", []) if m != METRIC]
    provenance = {k: v for k, v in record.provenance.items() if k != "pending_metrics"}
    provenance["dpg_bench"] = {
        "scorer": "DPG-Bench compute_dpg_bench.py (mPLUG-large VQA)", "results": str(scores.resolve()),
        "results_sha256": file_sha256(scores), "detail_sha256": file_sha256(detail_path),
        "questions": str(questions_csv.resolve()), "questions_sha256": file_sha256(questions_csv),
        "manifest": str(manifest_path.resolve()), "manifest_sha256": file_sha256(manifest_path),
        "items": len(items), "resolution": resolution, "samples_verified": samples.is_file(),
        "imported": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if pending:
        provenance["pending_metrics"] = pending
    updated = record.model_copy(update={
        "metrics": {**record.metrics, **dict(zip(KEYS, printed))},
        "intervals": {**(record.intervals or {}), **bounds}, "provenance": provenance})
    updated.write(record_path)
    return updated
