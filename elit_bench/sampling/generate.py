"""Sample sets: seeded, sharded over processes, resumable, recorded.

Reproducibility (edm2 style): sample i of a set is drawn from its own
`torch.Generator` seeded with the seed i. It draws, in order, the noise
(C, *S), then the class label (uniform over the classes) unless labels are
given (`class_labels`, cycled over the set's positions), then whatever random
latents the model keeps (ELIT random dropping). A set therefore does not
depend on the batch size or the number of processes. Under `torchrun`
(WORLD_SIZE > 1) rank r takes every world-th pending seed; rank 0 merges.
The job's process group (`elit_bench.distributed`) is joined, or reused, and
left alive for the phases after sampling.

Layout of the output directory OUT:

- `settings.json`: what decides the samples (checkpoint hash, sampler,
  guidance, budgets, TeaCache or TaylorSeer, seeds, labels). A rerun into the same OUT
  with other settings is refused rather than mixing two sets.
- `parts/part-<first seed>-<count>.npz`: finished batches (seeds, labels,
  uint8 images), each written atomically: a killed run loses at most the
  batches in flight, and a rerun of the same command samples only the seeds
  no part holds.
- `samples.npz` (ADM layout: `arr_0` uint8 (N, H, W, 3) or (N, T, H, W, 3),
  `arr_1` labels (N,)), optional `grid.png`, then `samples.json`, the record and the
  done marker: it holds the size and SHA-256 of samples.npz, and a set is
  complete only when the file matches them. A set that does not (a damaged or
  replaced file) is deleted and sampled again. The parts are removed once merged.

A batch with a NaN or infinite value (a diverged model) stops the set with an
error naming the checkpoint and the seeds; it is never cast to an image.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from elit_bench import distributed
from elit_bench.checkpoint import (
    atomic_save,
    atomic_write,
    file_sha256,
    load_checkpoint,
)
from elit_bench.errors import UserError, choices_error
from elit_bench.flow.guidance import (
    Evaluation,
    Guidance,
    GuidedVelocity,
    build_plan,
    plan_flops,
    skipped_evaluations,
)
from elit_bench.flow.sampling import DEFAULT_STEPS, check_solver, solve, time_grid
from elit_bench.flow.schedules import resolve_budgets
from elit_bench.flow.taylorseer import TaylorSeer, check_alone
from elit_bench.flow.teacache import check_threshold
from elit_bench.models import model_from_checkpoint
from elit_bench.models.precision import DEFAULT_SAMPLE_PRECISION, SAMPLE_PRECISIONS, sample_precision
from elit_bench.models.tome import apply_tome
from elit_bench.provenance import provenance
from elit_bench.sampling.decode import Decoder

log = logging.getLogger(__name__)

SETTINGS, RECORD, SAMPLES, GRID, PARTS = "settings.json", "samples.json", "samples.npz", "grid.png", "parts"
GRID_SAMPLES, GRID_COLUMNS = 64, 8


@dataclass(frozen=True)
class Recipe:
    """How each sample is drawn (everything but the seeds and the checkpoint).

    scale is l of Eq. 3 (w = l + 1); budget / schedule: the main pass's
    latents per group (one of them; neither = full budget); guide_budget:
    J_w of AG / CCFG; interval: (t_lo, t_hi) where guidance applies;
    teacache: threshold (None = off); tome: ToMe's ratio of tokens merged in each block (None = off; the
    model is changed in place by `prepare`); taylorseer: its order and interval
    (None = off; not with TeaCache); patch_size: the patchifier of a
    multi-patch model; class_labels: labels cycled over the set (None =
    drawn from each seed's generator); precision: the model's arithmetic
    (`models.precision.SAMPLE_PRECISIONS`; it changes the samples, so it is part of a set's settings).
    """

    steps: int = DEFAULT_STEPS
    sampler: str = "euler"
    shift: float = 1.0
    guidance: str = "none"
    scale: float = 0.0
    budget: int | None = None
    guide_budget: int | None = None
    schedule: str | None = None
    interval: tuple[float, float] | None = None
    teacache: float | None = None
    taylorseer: TaylorSeer | None = None
    tome: float | None = None
    patch_size: int | None = None
    class_labels: tuple[int, ...] | None = None
    precision: str = DEFAULT_SAMPLE_PRECISION

    def __post_init__(self):
        if self.precision not in SAMPLE_PRECISIONS:
            raise choices_error("sampling precision", self.precision, SAMPLE_PRECISIONS)
        if self.taylorseer is not None:
            self.taylorseer.check()
        check_alone(self.teacache, self.taylorseer)


@dataclass(frozen=True)
class Setup:
    """A recipe validated against a model: time grid, per-step budgets, plan of passes and its FLOPs."""

    model: torch.nn.Module
    recipe: Recipe
    times: list[float]
    budgets: list[int | None]
    plan: list[Evaluation]
    flops_per_sample: int
    flops_cfg: int

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.model.in_channels, *self.model.input_shape)


def prepare(model, recipe: Recipe) -> Setup:
    """Validate `recipe` for `model` (UserError on bad input) and plan every model pass.

    ToMe is applied to `model` here (or removed), so the plan's FLOPs count its merged blocks."""
    check_solver(recipe.sampler)
    check_threshold(recipe.teacache)
    apply_tome(model, recipe.tome or 0.0)
    times = time_grid(recipe.steps, recipe.shift)
    budgets = resolve_budgets(model, times[:-1], recipe.budget, recipe.schedule)
    guidance = Guidance(recipe.guidance, recipe.scale, recipe.guide_budget, recipe.interval)
    guidance.check(model, budgets)
    if recipe.patch_size is not None:
        model.macs(patch_size=recipe.patch_size)  # UserError for a patch size the model does not have
    if recipe.class_labels is not None:
        bad = [c for c in recipe.class_labels if not 0 <= c < model.num_classes]
        if bad or not recipe.class_labels:
            raise UserError(f"class labels {bad or '[]'} are not in 0..{model.num_classes - 1}")
    plan = build_plan(model, times, recipe.sampler, budgets, guidance, recipe.teacache, recipe.taylorseer)
    cfg = Guidance("cfg", recipe.scale, None, recipe.interval)
    cfg_plan = build_plan(model, times, recipe.sampler, budgets, cfg, recipe.teacache, recipe.taylorseer)
    return Setup(model, recipe, times, budgets, plan, plan_flops(model, plan, recipe.patch_size),
                 plan_flops(model, cfg_plan, recipe.patch_size))


def draw_seed(seed: int, position: int, shape, num_classes: int, class_labels=None):
    """(noise (C, *S), label, generator) of one sample; the generator goes on to the model."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=generator)
    if class_labels:
        label = class_labels[position % len(class_labels)]
    else:
        label = int(torch.randint(num_classes, (1,), generator=generator))
    return noise, label, generator


@torch.inference_mode()
def sample_seeds(setup: Setup, seeds, positions, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Model-space samples (B, C, *S) and labels (B,) for `seeds` at `positions` of their set."""
    model, recipe = setup.model, setup.recipe
    draws = [draw_seed(s, p, setup.sample_shape, model.num_classes, recipe.class_labels)
             for s, p in zip(seeds, positions)]
    x = torch.stack([d[0] for d in draws]).to(device)
    y = torch.tensor([d[1] for d in draws], dtype=torch.long, device=device)
    velocity = GuidedVelocity(model, y, setup.plan, recipe.scale, [d[2] for d in draws], recipe.patch_size)
    with sample_precision(recipe.precision, x.device):
        return solve(velocity, x, setup.times, recipe.sampler), y


# ---------------------------------------------------------------- seeds
def parse_seeds(spec: str) -> list[int]:
    """"0-99" (inclusive), "5", or a comma list of both, e.g. "0-9,20-29" -> seeds in order, no repeats."""
    seeds: list[int] = []
    for part in str(spec).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise UserError(f"bad seed range {part.strip()!r} in {spec!r}: use A-B (inclusive), A, or a comma list")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UserError(f"seed range {part.strip()!r} ends before it starts")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seed list {spec!r} repeats seeds")
    return seeds


def format_seeds(seeds) -> str:
    """Inverse of `parse_seeds`: [0, 1, 2, 5] -> "0-2,5"."""
    runs, start = [], None
    for i, s in enumerate(seeds):
        if start is None:
            start = s
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            runs.append(f"{start}-{s}" if s != start else f"{s}")
            start = None
    return ",".join(runs)


def seed_list(num: int | None = None, seeds: str | None = None) -> list[int]:
    """The seeds of a set from `--num N` (seeds 0..N-1) and/or `--seeds A-B` (which must agree)."""
    if num is None and seeds is None:
        raise UserError("say how many samples: --num N (seeds 0..N-1) or --seeds A-B")
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
        raise UserError(f"--num must be an integer >= 1, got {num!r}")
    out = parse_seeds(seeds) if seeds is not None else list(range(num))
    if num is not None and len(out) != num:
        raise UserError(f"--num {num} disagrees with --seeds {seeds!r} ({len(out)} seeds); give one or make them agree")
    return out


NOISE_BLOCK = 2**20  # noise seeds per training seed in suites: sets of any size up to it nest in one block


def noise_seeds(train_seed: int, num: int) -> list[int]:
    """The noise seeds of a suite's set of `num` samples from a run of training seed s: s * NOISE_BLOCK + (0..num-1).

    Each training seed draws its own noise (a mean over seeds then carries sampling noise of independent sets,
    which its interval must include), while every run and evaluation of one training seed draws the same noise
    (two models of seed s are compared sample by sample, paired). A fixed block, not s * num, keeps the first
    256 samples of a 512-sample set the 256-sample set.
    """
    if not 1 <= num <= NOISE_BLOCK:
        raise UserError(f"a suite's sample set holds 1 to {NOISE_BLOCK} samples, got {num}")
    return list(range(train_seed * NOISE_BLOCK, train_seed * NOISE_BLOCK + num))


# ---------------------------------------------------------------- output directory
def _json_normal(obj):
    return json.loads(json.dumps(obj))


def check_same_set(out: Path, settings: dict) -> None:
    """UserError if OUT holds another set, or samples that are not a set."""
    path = out / SETTINGS
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            old = None
        if not isinstance(old, dict):
            raise UserError(f"{path} is damaged (not a JSON object of sample settings): delete {out} to start over")
        # a key added since the set was written matches there at its default None (e.g. `taylorseer`)
        keys = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if keys:
            diffs = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in keys)
            raise UserError(f"{out} holds a sample set with other settings ({diffs}): use another --out, "
                            "or delete it to start over")
    elif (out / SAMPLES).exists() or (out / PARTS).exists():
        raise UserError(f"{out} holds samples without {SETTINGS}: not a set written by `elit-bench sample`; "
                        "use another --out")


def file_digest(path: Path) -> dict:
    """What samples.json records of samples.npz, to verify it later: {"bytes", "sha256"}."""
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def verified_record(out: Path) -> dict | None:
    """The record of OUT's finished set when samples.npz matches the size and SHA-256 it holds; None otherwise."""
    try:
        record = json.loads((out / RECORD).read_text())
        expected = record["samples_npz"]
        if (out / SAMPLES).stat().st_size == expected["bytes"] and file_digest(out / SAMPLES) == expected:
            return record
    except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable or not a record of this format
        pass
    return None


def remove_stale(out: Path, complete: bool) -> None:
    """Rank 0, before anything else is written: remove the temporary files of writes a kill cut off (the final
    merge's `.samples.npz.*.tmp`, a batch's part) and, unless the set is `complete`, a set that did not verify."""
    unverified = [] if complete else [p for p in (out / SAMPLES, out / RECORD) if p.exists()]
    if unverified:
        log.warning("%s: %s does not match the size and SHA-256 in %s (damaged, or its write was cut off); "
                    "sampling the set again", out, SAMPLES, RECORD)
    for path in [*unverified, *out.glob(".*.tmp"), *(out / PARTS).glob(".*.tmp")]:
        path.unlink()


def check_finite(x: torch.Tensor, checkpoint, train_step, seeds: list[int], recipe: Recipe) -> None:
    """UserError when a batch of model-space samples (B, ...) holds NaN or inf: a diverged model, not images."""
    finite = torch.isfinite(x).flatten(1).all(1).tolist()
    if not all(finite):
        bad = [s for s, ok in zip(seeds, finite) if not ok]
        raise UserError(f"checkpoint {checkpoint} (training step {train_step}) gave NaN/inf samples for seeds "
                        f"{format_seeds(bad)} with {recipe.steps} {recipe.sampler} steps: the model diverged; check "
                        "its training loss and sample an earlier checkpoint")


def finished(parts: Path) -> dict[int, Path]:
    """seed -> the part holding it, over all finished parts."""
    done = {}
    for path in sorted(parts.glob("part-*.npz")):
        try:
            with np.load(path) as z:
                for s in z["seeds"].tolist():
                    done.setdefault(s, path)
        except Exception as exc:  # written atomically, so only outside interference gets here
            raise UserError(f"cannot read finished part {path}: {exc}; delete it and rerun") from exc
    return done


def write_npz(path: Path, **arrays) -> None:
    atomic_save(path, lambda f: np.savez(f, **arrays))


def merge_parts(parts: Path, seeds: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """All samples in seed-list order: (N, *image shape) uint8, labels (N,), and the realised FLOPs of each
    sample (N,) float64 where the model's cost depends on its input (None otherwise)."""
    where = {s: i for i, s in enumerate(seeds)}
    images = labels = flops = None
    filled = np.zeros(len(seeds), dtype=bool)
    for path in sorted(parts.glob("part-*.npz")):
        with np.load(path) as z:
            if images is None:
                images = np.empty((len(seeds), *z["images"].shape[1:]), dtype=np.uint8)
                labels = np.empty(len(seeds), dtype=np.int64)
                flops = np.full(len(seeds), np.nan) if "flops" in z else None
            for row, s in enumerate(z["seeds"].tolist()):
                if s in where:
                    images[where[s]], labels[where[s]] = z["images"][row], z["labels"][row]
                    if flops is not None:
                        flops[where[s]] = z["flops"][row]
                    filled[where[s]] = True
    if images is None or not filled.all():
        missing = [s for s, ok in zip(seeds, filled) if not ok] if images is not None else seeds
        raise RuntimeError(f"{len(missing)} seeds have no finished part (first: {missing[:5]}); rerun to complete")
    return images, labels, flops


def save_grid(path: Path, images: np.ndarray) -> None:
    """The first samples (first frame of videos) tiled GRID_COLUMNS wide as a PNG."""
    from PIL import Image

    tiles = images[:GRID_SAMPLES]
    if tiles.ndim == 5:
        tiles = tiles[:, 0]
    n, h, w, c = tiles.shape
    cols = min(GRID_COLUMNS, n)
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, q = divmod(i, cols)
        canvas[r * h:(r + 1) * h, q * w:(q + 1) * w] = tile
    atomic_write(path, lambda tmp: Image.fromarray(canvas).save(tmp, format="PNG"))


def ensure_grid(out) -> Path | None:
    """OUT/grid.png of a finished set, drawn from the first samples of samples.npz if missing; None without samples."""
    from elit_bench.data.samples import NpzSamples

    out = Path(out)
    if not (out / GRID).is_file():
        if not (out / SAMPLES).is_file():
            return None
        samples = NpzSamples(out / SAMPLES)  # streamed: only the first samples are read
        save_grid(out / GRID, next(samples.batches(0, min(samples.num, GRID_SAMPLES), GRID_SAMPLES)))
    return out / GRID


# ---------------------------------------------------------------- the whole set
def generate(checkpoint, out, seeds: list[int], recipe: Recipe, ema: bool = True, batch: int = 32,
             grid: bool = False, device: str | None = None, progress: bool = True) -> dict:
    """Sample `seeds` from `checkpoint` into `out` (resuming a partial set); returns the record.

    All input is validated (UserError) before anything is written. Under torchrun every rank maps the
    checkpoint, rank 0 alone hashes files, and the job's process group is reused and left alive.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch size must be an integer >= 1, got {batch!r}")
    if not seeds:
        raise UserError("the seed list is empty")
    procs = distributed.join(device)
    ckpt = load_checkpoint(checkpoint, mmap=True)
    model = model_from_checkpoint(ckpt, ema=ema)
    config, train_step, has_ema = ckpt["config"], ckpt.get("step"), ckpt.get("ema") is not None
    del ckpt  # the weights are in the model
    setup = prepare(model, recipe)
    out = Path(out)
    settings = _json_normal({
        "checkpoint_sha256": procs.broadcast(file_sha256(checkpoint) if procs.is_main else None),
        "ema": bool(ema and has_ema), **asdict(recipe), "seeds": format_seeds(seeds),
    })
    decoder = Decoder(config.get("data"), procs.device)
    check_same_set(out, settings)
    record = procs.broadcast(verified_record(out) if procs.is_main else None)
    if procs.is_main:
        remove_stale(out, complete=record is not None)
    if record is not None:
        if procs.is_main and (out / PARTS).exists():
            shutil.rmtree(out / PARTS)
        if grid and procs.is_main:  # a set finished before grids were asked for
            ensure_grid(out)
        return record
    model.to(procs.device)
    if recipe.tome:  # ToMe's token tables live on the model's device: made again there
        apply_tome(model, recipe.tome)
    parts = out / PARTS
    done = finished(parts)
    if procs.is_main:  # before any part exists, so that parts never lack their settings
        atomic_write(out / SETTINGS, lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=1)))
    procs.barrier()  # every rank has listed the finished parts before any rank adds one
    pending = [p for p, s in enumerate(seeds) if s not in done]
    mine = pending[procs.rank::procs.world]
    if procs.is_main:
        print(f"sampling {len(pending)} of {len(seeds)} samples ({len(seeds) - len(pending)} already done) "
              f"on {procs.world} process(es); {setup.flops_per_sample / 1e9:.4g} GFLOPs per sample, "
              f"{setup.flops_per_sample / setup.flops_cfg:.3f}x CFG at the same budget", flush=True)
    started = time.time()
    realised = hasattr(model, "recorded_flops")
    with tqdm(total=len(mine), unit="sample", desc="sample", disable=not progress or not procs.is_main) as bar:
        for start in range(0, len(mine), batch):
            positions = mine[start:start + batch]
            chunk = [seeds[p] for p in positions]
            if realised:
                model.reset_usage()
            x, y = sample_seeds(setup, chunk, positions, procs.device)
            check_finite(x, checkpoint, train_step, chunk, recipe)
            # a model whose cost depends on its input (DyDiT's token routers) counts what it computed: the
            # batch's mean goes with each of its samples, so resumed sets add up the same
            measured = {"flops": np.full(len(chunk), model.recorded_flops(len(chunk)))} if realised else {}
            write_npz(parts / f"part-{chunk[0]:08d}-{len(chunk):05d}.npz", seeds=np.array(chunk, dtype=np.int64),
                      labels=y.cpu().numpy().astype(np.int64), images=decoder(x), **measured)
            bar.update(len(chunk))
    procs.barrier()
    if procs.is_main:
        images, labels, flops = merge_parts(parts, seeds)
        write_npz(out / SAMPLES, arr_0=images, arr_1=labels)  # ADM layout: arr_1 holds the labels
        if grid:
            save_grid(out / GRID, images)
        record = make_record(setup, config, train_step, checkpoint, settings, seeds, len(seeds) - len(pending),
                             procs, time.time() - started, images.shape, file_digest(out / SAMPLES),
                             None if flops is None else float(flops.mean()))
        atomic_write(out / RECORD, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
        shutil.rmtree(parts)
    return procs.broadcast(record)


def make_record(setup: Setup, config: dict, train_step: int | None, checkpoint, settings: dict, seeds: list[int],
                resumed: int, procs: distributed.Dist, seconds: float, shape, samples_npz: dict,
                realised_flops: float | None = None) -> dict:
    """The provenance record of a finished set (samples.json); samples_npz: `file_digest` of samples.npz.

    realised_flops: the mean FLOPs per sample a model whose cost depends on its input counted while sampling;
    it is the set's `flops_per_sample` (the plan's count, then an upper bound, stays as `planned_flops_per_sample`)."""
    model, recipe = setup.model, setup.recipe
    flops = setup.flops_per_sample if realised_flops is None else realised_flops
    return {
        "model": config["model"], "model_kwargs": config.get("model_kwargs", {}), "data": config.get("data"),
        "checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": settings["checkpoint_sha256"],
        "checkpoint_step": train_step, "ema": settings["ema"],
        "converted_from": config.get("converted_from"),  # an imported official checkpoint: its file and format
        "steps": recipe.steps, "sampler": recipe.sampler, "time_shift": recipe.shift,
        "guidance": recipe.guidance, "scale": recipe.scale, "guidance_w": recipe.scale + 1,
        "budget": setup.budgets[0] if len(set(setup.budgets)) == 1 else None,  # None: see the schedule
        "max_budget": getattr(model, "max_budget", None), "guide_budget": recipe.guide_budget,
        "schedule_spec": recipe.schedule, "schedule": setup.budgets,
        "guidance_interval": list(recipe.interval) if recipe.interval else None,
        "teacache_threshold": recipe.teacache,
        "teacache_skipped_steps": skipped_evaluations(setup.plan) if recipe.teacache is not None else 0,
        "taylorseer_order": recipe.taylorseer.order if recipe.taylorseer else None,
        "taylorseer_interval": recipe.taylorseer.interval if recipe.taylorseer else None,
        "taylorseer_forecast_evaluations": skipped_evaluations(setup.plan) if recipe.taylorseer else 0,
        "tome_ratio": recipe.tome,
        "model_evaluations": len(setup.plan), "model_passes": sum(len(ev.passes) for ev in setup.plan),
        "patch_size": recipe.patch_size,
        "seeds": settings["seeds"], "num_samples": len(seeds), "class_labels": settings["class_labels"],
        "sample_shape": list(shape[1:]), "resumed_samples": resumed, "samples_npz": samples_npz,
        "flops_per_sample": flops, "flops_vs_cfg": setup.flops_per_sample / setup.flops_cfg,
        "planned_flops_per_sample": setup.flops_per_sample, "flops_realised": realised_flops is not None,
        "settings": settings, **provenance(procs.device),
        "world_size": procs.world, "seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
