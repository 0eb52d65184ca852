"""From sample sets and statistics files to metric values with provenance.

``compute_metrics(fake, real, metrics)`` is the library entry point behind
``elit-bench metrics``. Each metric names an extractor and one of its features
(`METRICS`). Frechet metrics use stored statistics where a source has them (the
convention for published ImageNet numbers with ADM reference batches) and
statistics of extracted features otherwise; IS, precision/recall, KID and
class accuracy need per-sample features. Features are extracted once per
(source, extractor), sharded over ranks under ``torch.distributed``, and cached
on disk by content hash, extractor identity and preprocessing. Every metric
gets a 95% interval (`metrics.intervals`; docs/intervals.md) under
``intervals``, beside its value. A Frechet metric NAME is the plug-in value at
N (the protocol's number, biased upward); NAME_debiased is the estimate of the
population distance whose interval is stored.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from elit_bench import __version__
from elit_bench.distributed import gather_rows, join, rank_and_world, shard_range
from elit_bench.errors import UserError, choices_error
from elit_bench.data.compositional import CATEGORIES
from elit_bench.metrics import intervals
from elit_bench.metrics.adherence import adherence, satisfied
from elit_bench.metrics.extractors import FeatureExtractor, get_extractor
from elit_bench.metrics.frechet import frechet_distance_stats
from elit_bench.metrics.inception_score import inception_split_scores
from elit_bench.metrics.prdc import kernel_inception_distance, precision_recall
from elit_bench.metrics.sources import SampleSet, Source, open_source
from elit_bench.metrics.stats import FeatureCache, FeatureStats, save_statistics
from elit_bench.provenance import provenance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeySpec:
    """One number a metric writes into a record: how results name it, rank it and bound it."""

    name: str  # the record key
    label: str | None  # its header in tables and figures; None: shown under its key
    higher_is_better: bool | None  # None: a spread, not a quality: it ranks nothing and decides no claim
    interval: str | None = None  # the `method` of its 95% interval in records (a prefix); None: it has none


@dataclass(frozen=True)
class MetricSpec:
    """A metric, declared once: what it is computed from and the record keys it writes (the first is its value)."""

    extractor: str  # registry name
    feature: str  # one of the extractor's outputs
    kind: str  # "frechet", "is", "pr", "kid", "accuracy", "adherence" or "external" (scored outside the harness)
    outputs: tuple[KeySpec, ...]  # the keys it adds to the results
    stats_suffix: str | None = None  # frechet metrics: suffix of mu/sigma in statistics files

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.outputs)


DEBIASED = "_debiased"  # suffix of a Frechet metric's debiased estimate (its interval is under the same key)
INCEPTION, DINOV2, I3D, DIGITS = "inception-v3-tf", "dinov2-vitl14", "i3d-stylegan-v", "digits-cnn"
PER_SAMPLE_MEAN = ("accuracy", "adherence")  # kinds whose first key is the mean of a 0/1 value per sample


def _frechet(name: str, label: str, debiased_label: str, extractor: str, feature: str, suffix: str) -> MetricSpec:
    """The value at N (the protocol's number, no interval), then the debiased estimate with its bootstrap interval
    (written where the generated side has samples)."""
    return MetricSpec(extractor, feature, "frechet", (KeySpec(name, label, False),
                                                      KeySpec(name + DEBIASED, debiased_label, False, "bootstrap")),
                      suffix)


METRICS: dict[str, MetricSpec] = {
    "fid": _frechet("fid", "FID", "FID (debiased)", INCEPTION, "pool", ""),
    "sfid": _frechet("sfid", "sFID", "sFID (debiased)", INCEPTION, "spatial", "_s"),
    "fdd": _frechet("fdd", "FDD", "FDD (debiased)", DINOV2, "cls", "_dinov2"),
    "fvd": _frechet("fvd", "FVD", "FVD (debiased)", I3D, "features", "_i3d"),
    "digits_fd": _frechet("digits_fd", "FD(digits)", "FD(digits, debiased)", DIGITS, "penultimate", "_digits"),
    "is": MetricSpec(INCEPTION, "logits_unbiased", "is", (KeySpec("is_mean", "IS", True, "t-over-splits"),
                                                          KeySpec("is_std", None, None))),
    "pr": MetricSpec(INCEPTION, "pool", "pr", (KeySpec("precision", "Prec.", True, "wilson"),
                                               KeySpec("recall", "Rec.", True, "wilson"))),
    "kid": MetricSpec(INCEPTION, "pool", "kid", (KeySpec("kid_mean", "KID", False, "normal-subset-sd"),
                                                 KeySpec("kid_std", None, None))),
    "digits_kid": MetricSpec(DIGITS, "penultimate", "kid", (KeySpec("digits_kid", "KID(digits)", False,
                                                                    "normal-subset-sd"),
                                                            KeySpec("digits_kid_std", None, None))),
    "digits_acc": MetricSpec(DIGITS, "logits", "accuracy", (KeySpec("digits_acc", "Acc(digits)", True, "wilson"),)),
    # compositional digits (metrics.adherence): the share of samples that do what their prompt asks, per category
    "t2i_adherence": MetricSpec("digits-cells", "cells", "adherence", (
        KeySpec("t2i_adherence", "Adherence", True, "wilson"),
        *(KeySpec(f"t2i_adherence_{c}", f"Adh. ({c})", True, "wilson") for c in CATEGORIES))),
    # DPG-Bench (mPLUG VQA), scored outside the harness: `elit-bench dpg export`, then `dpg import` (results.dpg)
    "dpg": MetricSpec("dpg-bench", "vqa", "external", (
        KeySpec("dpg_avg", "DPG avg", True, "bootstrap"),
        *(KeySpec(f"dpg_{c}", f"DPG {c}", True, "bootstrap")
          for c in ("entity", "relation", "attribute", "other", "global")))),
}
# derived views: every record key a metric writes, and the direction of those that have one
KEY_SPECS: dict[str, KeySpec] = {k.name: k for spec in METRICS.values() for k in spec.outputs}
HIGHER_IS_BETTER: dict[str, bool] = {k: s.higher_is_better for k, s in KEY_SPECS.items()
                                     if s.higher_is_better is not None}


def metric_key(key: str) -> KeySpec:
    """The declaration of a record key (`UserError` for a key no metric writes)."""
    if key not in KEY_SPECS:
        raise choices_error("metric key", key, list(KEY_SPECS))
    return KEY_SPECS[key]


def higher_is_better(key: str) -> bool:
    """Whether a larger value of a record key is better; `UserError` for a key without a direction (a spread such
    as is_std, or no metric's key): nothing is ranked or judged in an assumed direction."""
    direction = metric_key(key).higher_is_better
    if direction is None:
        raise UserError(f"metric key {key!r} has no direction (it is a spread, not a quality); choose one of "
                        f"{', '.join(HIGHER_IS_BETTER)}")
    return direction


def record_key(name: str) -> str:
    """The record key that holds a metric's value ("is" -> "is_mean"); other names (record keys, published
    quantities such as "tf") are returned as they are."""
    return METRICS[name].keys[0] if name in METRICS else name


def parse_metrics(metrics: str | list[str] | tuple[str, ...]) -> list[str]:
    """Metric names from "fid,is" or a list; `UserError` for unknown ones."""
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    names = [m for m in names if m]
    if not names:
        raise UserError(f"no metrics requested; choose from {', '.join(METRICS)}")
    for m in names:
        if m not in METRICS:
            raise choices_error("metric", m, list(METRICS))
    return list(dict.fromkeys(names))


def extract_features(
    extractor: FeatureExtractor, samples: SampleSet, outputs: tuple[str, ...], batch_size: int = 64,
    progress: bool = False, desc: str = "features",
) -> dict[str, np.ndarray]:
    """Features {output: float64 (rows, D)} of all samples, in sample order.

    Image extractors on videos see every frame (rows = N * T, frame order
    within each video). progress: a bar (samples, rate, ETA) on rank 0. Under ``torch.distributed`` every rank extracts a
    contiguous shard and all ranks receive the gathered result.
    """
    if batch_size < 1:
        raise UserError(f"batch size must be positive, got {batch_size}")
    if extractor.modality == "video" and not samples.is_video:
        raise UserError(f"{extractor.name} needs videos (arr_0 of shape (N, T, H, W, 3)), got images {samples.sample_shape}")
    frames = samples.frames_per_sample(extractor.modality)
    rank, world = rank_and_world()
    sharded = world > 1 and samples.num >= world  # every rank needs at least one sample to gather
    start, stop = shard_range(samples.num, rank, world) if sharded else (0, samples.num)
    chunks: dict[str, list[np.ndarray]] = {o: [] for o in outputs}
    bar = tqdm(total=stop - start, unit="sample", desc=desc, dynamic_ncols=True, disable=not progress or rank != 0)
    for batch in samples.batches(start, stop, max(1, batch_size // frames)):
        bar.update(len(batch))
        x = torch.tensor(batch)
        if frames > 1:
            x = x.flatten(0, 1)  # (B, T, H, W, C) -> (B * T, H, W, C)
        x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.permute(0, 4, 1, 2, 3)  # channels first
        for name, f in extractor.extract(x, outputs).items():
            chunks[name].append(f.numpy())
    bar.close()
    local = {o: np.concatenate(c).astype(np.float64) for o, c in chunks.items()}
    if not sharded:
        return local
    counts = [(b - a) * frames for a, b in (shard_range(samples.num, r, world) for r in range(world))]
    return {o: gather_rows(f, counts) for o, f in local.items()}


class Evaluator:
    """Computes metrics between sources, reusing extractors and features across calls.

    extractor_options: {extractor name: constructor options}, e.g.
    {"inception-v3-tf": {"weights": "w.pth"}, "dinov2-vitl14": {"weights": ..., "repo": ...}}.
    device: where features are extracted (default: this rank's GPU, cuda:LOCAL_RANK, if any, else cpu).
    cache_dir: feature cache root (default `stats.default_cache_dir()`); use_cache=False disables it.
    progress: progress bars (rate, ETA) while features are extracted.
    bootstrap_replicates, interval_seed: the bootstrap behind Frechet intervals (`intervals.frechet_bootstrap`).
    """

    def __init__(
        self,
        extractor_options: dict[str, dict] | None = None,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        progress: bool = False,
        bootstrap_replicates: int = intervals.BOOTSTRAP_REPLICATES,
        interval_seed: int = intervals.BOOTSTRAP_SEED,
    ):
        self.options = extractor_options or {}
        self.bootstrap = {"replicates": bootstrap_replicates, "seed": interval_seed}
        self.batch_size = batch_size
        self.progress = progress
        # under torchrun / SLURM: the job's live group, so that extraction shards over its ranks
        self.device = join(device).device
        self.cache = FeatureCache(cache_dir) if use_cache else None
        self._extractors: dict[str, FeatureExtractor] = {}
        self._features: dict[tuple[SampleSet, str, str], np.ndarray] = {}  # (samples, extractor, feature)
        self._hashes: dict[SampleSet, str] = {}

    def extractor(self, name: str) -> FeatureExtractor:
        if name not in self._extractors:
            self._extractors[name] = get_extractor(name, device=self.device, **self.options.get(name, {}))
        return self._extractors[name]

    def content_sha256(self, samples: SampleSet) -> str:
        if samples not in self._hashes:
            self._hashes[samples] = samples.content_sha256()
        return self._hashes[samples]

    def features(self, source: Source, extractor_name: str, features: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Per-sample features {name: float64 (N, D)} of a source, from memory, the disk cache or extraction."""
        if source.samples is None:
            raise UserError(f"{source.name} holds only statistics; this metric needs the samples themselves")
        samples, ex = source.samples, self.extractor(extractor_name)
        out = {f: self._features[(samples, ex.name, f)] for f in features if (samples, ex.name, f) in self._features}
        missing = tuple(f for f in features if f not in out)
        key = self.cache.key(self.content_sha256(samples), ex.identity()) if self.cache and missing else None
        if key is not None:
            rows = samples.num * samples.frames_per_sample(ex.modality)
            cached = {f: self.cache.load(key, f, rows) for f in missing}
            out.update({f: a.astype(np.float64) for f, a in cached.items() if a is not None})
            missing = tuple(f for f in missing if cached[f] is None)
        if missing:
            log.info("extracting %s %s features of %s (%d samples)", ex.name, missing, source.name, samples.num)
            fresh = extract_features(ex, samples, missing, self.batch_size, self.progress,
                                     f"{ex.name} features of {source.name}")
            out.update(fresh)
            if key is not None and rank_and_world()[0] == 0:
                meta = {"source": source.name, "content_sha256": self.content_sha256(samples), **ex.identity()}
                for f, a in fresh.items():
                    self.cache.save(key, f, a.astype(np.float32), meta)  # extracted in float32: lossless
        for f, a in out.items():
            self._features[(samples, ex.name, f)] = a
        return out

    def statistics(self, source: Source, metric: str) -> tuple[FeatureStats, str | None, str]:
        """(statistics, weights sha256 of the extractor behind them or None, "stored" | "computed")."""
        spec = METRICS[metric]
        if spec.stats_suffix in source.stats:
            weights = source.meta.get("extractors", {}).get(spec.extractor, {}).get("weights_sha256")
            return source.stats[spec.stats_suffix], weights, "stored"
        feats = self.features(source, spec.extractor, (spec.feature,))[spec.feature]
        return FeatureStats.from_features(feats), self.extractor(spec.extractor).weights_sha256, "computed"

    def prefetch(self, source: Source | None, metrics: list[str]) -> None:
        """Extract, in one pass per extractor, every feature of `source` that `metrics` will read."""
        if source is None or source.samples is None:
            return
        wanted: dict[str, list[str]] = {}
        for name in metrics:
            spec = METRICS[name]
            if not (spec.kind == "frechet" and spec.stats_suffix in source.stats):
                wanted.setdefault(spec.extractor, []).append(spec.feature)
        for extractor, features in wanted.items():
            self.features(source, extractor, tuple(dict.fromkeys(features)))

    def frechet_reference(self, real: Source, metric: str) -> FeatureStats | np.ndarray:
        """What a Frechet metric's bootstrap resamples on the reference side: its per-sample features, or its
        stored statistics (held fixed) where the source has them (ADM reference batches)."""
        spec = METRICS[metric]
        stats, _, origin = self.statistics(real, metric)
        return stats if origin == "stored" else self.features(real, spec.extractor, (spec.feature,))[spec.feature]

    def kept_features(self, source: Source, metrics: list[str], all_extractors: bool = False) -> dict[str, np.ndarray]:
        """{metric: float32 (N, D)} per-sample values of `source` behind its Frechet metrics (features: digits ones
        always, the others (Inception, DINOv2, I3D) with `all_extractors`, they are large) and its accuracies
        ((N, 1): 1 where the sample's class is recognised), so that two sets can be compared sample by sample.
        Only features already extracted."""
        out = {}
        for name in parse_metrics(metrics):
            spec = METRICS[name]
            key = (source.samples, self.extractor(spec.extractor).name, spec.feature) if source.samples is not None else None
            if key not in self._features or spec.kind not in ("frechet", *PER_SAMPLE_MEAN):
                continue
            if spec.kind == "adherence" and source.samples.labels is not None:
                out[name] = satisfied(self._features[key], source.samples.labels).astype(np.float32)[:, None]
            elif spec.kind == "accuracy" and source.samples.labels is not None:
                logits = self._features[key]
                labels = source.samples.labels
                if len(labels) != len(logits):  # video clips scored per frame: every frame carries its clip's label
                    labels = np.repeat(labels, len(logits) // len(labels))
                out[name] = (logits.argmax(axis=1) == labels).astype(np.float32)[:, None]
            elif spec.kind == "frechet" and (spec.extractor == DIGITS or all_extractors):
                out[name] = self._features[key].astype(np.float32)
        return out

    def frechet(self, fake: Source, real: Source, metric: str) -> tuple[float, dict]:
        """(Frechet distance, description of the reference statistics) for one Frechet metric."""
        (a, weights_a, _), (b, weights_b, origin) = self.statistics(fake, metric), self.statistics(real, metric)
        if weights_a is not None and weights_b is not None and weights_a != weights_b:
            raise UserError(
                f"{metric}: the two sides come from different {METRICS[metric].extractor} weights "
                f"(sha256 {weights_a[:12]}... vs {weights_b[:12]}...); recompute both with the same weights file"
            )
        try:
            value = frechet_distance_stats(a, b)
        except UserError as exc:
            raise UserError(f"{metric}: {exc}") from exc
        reference = {"sha256": b.sha256, "origin": origin, "num_samples": b.num, "dim": b.dim}
        if origin == "computed":  # round-off makes sha256 vary with sharding; the samples' hash does not
            reference["content_sha256"] = self.content_sha256(real.samples)
        return value, reference

    def compute(self, fake: Source, real: Source | None, metrics: list[str]) -> dict:
        """Metric values plus a ``provenance`` entry; see `compute_metrics`."""
        names = parse_metrics(metrics)
        external = [n for n in names if METRICS[n].kind == "external"]
        if external:
            raise UserError(f"{', '.join(external)} is scored outside the harness: `elit-bench dpg export` the "
                            "samples, score them with DPG-Bench, then `elit-bench dpg import` the scores")
        two_sided = [n for n in names if METRICS[n].kind in ("frechet", "pr", "kid")]
        if two_sided and real is None:
            raise UserError(f"{', '.join(two_sided)}: a comparison needs the real (reference) samples or statistics too")
        self.prefetch(fake, names)
        self.prefetch(real, two_sided)
        results: dict = {}
        reference: dict = {}
        bounds: dict = {}
        for name in names:
            spec = METRICS[name]
            if spec.kind == "frechet":
                # the protocol's plug-in value at N, and (when the generated side has samples to resample) the
                # debiased estimate of the population distance with its interval, under NAME_debiased
                at_n, debiased_key = spec.keys
                results[at_n], reference[name] = self.frechet(fake, real, name)
                if fake.samples is not None:
                    fake_features = self.features(fake, spec.extractor, (spec.feature,))[spec.feature]
                    debiased = intervals.frechet_bootstrap(fake_features, self.frechet_reference(real, name),
                                                           device=self.device, **self.bootstrap)
                    results[debiased_key], bounds[debiased_key] = debiased["estimate"], debiased
                continue
            fake_features = self.features(fake, spec.extractor, (spec.feature,))[spec.feature]
            if spec.kind == "is":
                scores = inception_split_scores(fake_features)
                results.update(zip(spec.keys, (float(scores.mean()), float(scores.std()))))
                bounds[spec.keys[0]] = intervals.t_interval(scores, spec.outputs[0].interval)
            elif spec.kind == "pr":
                real_features = self.features(real, spec.extractor, (spec.feature,))[spec.feature]
                precision, recall = precision_recall(fake_features, real_features)
                results.update(precision=precision, recall=recall)
                # precision counts generated samples inside the real manifold, recall real ones inside the generated
                bounds["precision"] = intervals.wilson(precision, len(fake_features), what="generated samples")
                bounds["recall"] = intervals.wilson(recall, len(real_features), what="real samples")
                reference[name] = {"content_sha256": self.content_sha256(real.samples), "num_samples": len(real_features)}
            elif spec.kind == "kid":
                real_features = self.features(real, spec.extractor, (spec.feature,))[spec.feature]
                results.update(zip(spec.keys, kernel_inception_distance(fake_features, real_features)))
                mean, std = (results[k] for k in spec.keys)
                bounds[spec.keys[0]] = intervals.normal_interval(mean, std, spec.outputs[0].interval)
                reference[name] = {"content_sha256": self.content_sha256(real.samples), "num_samples": len(real_features)}
            elif spec.kind == "adherence":  # the prompt ids are the labels stored with the samples
                if fake.samples.labels is None:
                    raise UserError(f"{name} needs the prompt id of every sample: give samples as an .npz with "
                                    f"prompt ids in arr_1 ({fake.name} has none)")
                values, prompt_bounds = adherence(fake_features, fake.samples.labels, spec.keys)
                results.update(values)
                bounds.update(prompt_bounds)
            else:  # accuracy of a classifier against the labels stored with the samples
                results[name], bounds[name] = self.accuracy(fake, name, fake_features)
        results["intervals"] = bounds
        results["provenance"] = self.provenance(fake, real, reference)
        return results

    def accuracy(self, fake: Source, name: str, logits: np.ndarray) -> tuple[float, dict]:
        """(accuracy against the labels stored with the samples, its Wilson interval)."""
        labels = fake.samples.labels
        frames = 1
        if labels is not None and fake.samples.is_video and self.extractor(METRICS[name].extractor).modality == "image":
            frames = fake.samples.sample_shape[0]
            labels = np.repeat(labels, frames)  # every frame carries its clip's label
        if labels is None or len(labels) != len(logits):
            raise UserError(
                f"{name} needs one class label per sample: give samples as an .npz with labels in arr_1 "
                f"({fake.name} has {'no' if labels is None else len(labels)} labels for {len(logits)} samples)"
            )
        value = float((logits.argmax(axis=1) == labels).mean())
        # frames of one clip are not independent: counting clips as the units keeps the interval conservative
        return value, intervals.wilson(value, len(logits) // frames, what="clips" if frames > 1 else "samples")

    def provenance(self, fake: Source, real: Source | None, reference: dict) -> dict:
        sides = {}
        for side, src in (("fake", fake), ("real", real)):
            if src is None:
                continue
            sides[side] = src.describe()
            if src.samples is not None:
                sides[side]["content_sha256"] = self.content_sha256(src.samples)
            if src.meta:
                sides[side]["stored_meta"] = src.meta
        return {
            **sides,
            "extractors": {name: ex.identity() for name, ex in self._extractors.items()},
            "reference_statistics": reference,
            **provenance(self.device),
            "world_size": rank_and_world()[1],  # processes the extraction was sharded over
        }

    def save_statistics(self, source: Source, metrics: list[str], path: str | Path) -> dict:
        """Write (on rank 0) the statistics behind the Frechet metrics among `metrics` for `source`; returns the meta."""
        requested = parse_metrics(metrics)
        names = [n for n in requested if METRICS[n].kind == "frechet"]
        if not names:
            frechet = ", ".join(m for m, s in METRICS.items() if s.kind == "frechet")
            raise UserError(f"none of {', '.join(requested)} is a Frechet metric; statistics files hold {frechet}")
        self.prefetch(source, names)
        stats, extractors = {}, {}
        for name in names:
            spec = METRICS[name]
            stats[spec.stats_suffix], _, origin = self.statistics(source, name)
            if origin == "computed":
                extractors[spec.extractor] = self.extractor(spec.extractor).identity()
            elif spec.extractor in source.meta.get("extractors", {}):
                extractors[spec.extractor] = source.meta["extractors"][spec.extractor]
        meta = {"source": source.describe(), "extractors": extractors, "elit_bench": __version__}
        if source.samples is not None:
            meta["content_sha256"] = self.content_sha256(source.samples)
        if rank_and_world()[0] == 0:
            save_statistics(path, stats, meta)
        return meta


FEATURES_SUFFIX = ".features.npy"


def write_features(evaluator: Evaluator, fake: Source, real: Source | None, metrics: list[str], record_path: Path,
                   shared_dir: Path, all_extractors: bool = False) -> dict:
    """Write the per-sample features behind a record's Frechet metrics beside it; returns the record's `features`.

    Generated side: RECORD_DIR/<record stem>.<metric>.features.npy (float32 (N, D)); the reference's (when it
    has samples) once under SHARED_DIR/features/, named by the evaluator's cache key (content hash and extractor
    identity) and the first 16 hex digits of the features' own SHA-256, so every record of a suite points at one
    file, and features of the same reference extracted elsewhere (float32 sums differ across thread counts in
    the last bits) land beside it instead of over it when results of several runs are gathered in one folder.
    Both are written atomically (on rank 0) and named in the record with their SHA-256, so a record's numbers
    can be recomputed and checked from them (`Evaluator.kept_features` says which features are kept).
    """
    from elit_bench.checkpoint import atomic_save

    def save(name, array: np.ndarray) -> dict:
        """`name(sha256)` -> the path to write `array` to."""
        buffer = io.BytesIO()
        np.save(buffer, array)
        data = buffer.getvalue()  # hashed here, so every rank can name the file rank 0 writes
        sha = hashlib.sha256(data).hexdigest()
        path = name(sha)
        if rank_and_world()[0] == 0:  # the shared reference file too: the same bytes, and a damaged one is mended
            atomic_save(path, lambda f: f.write(data))
        return {"file": Path(os.path.relpath(path, record_path.parent)).as_posix(), "sha256": sha,
                "shape": list(array.shape)}

    out = {}
    references = evaluator.kept_features(real, metrics, all_extractors) if real is not None else {}
    for name, array in evaluator.kept_features(fake, metrics, all_extractors).items():
        out[name] = save(lambda _: record_path.with_name(f"{record_path.stem}.{name}{FEATURES_SUFFIX}"), array)
        if name in references and METRICS[name].kind == "frechet":
            spec = METRICS[name]
            key = FeatureCache.key(evaluator.content_sha256(real.samples), evaluator.extractor(spec.extractor).identity())
            out[name]["reference"] = save(lambda sha: shared_dir / "features" / f"{key}.{spec.feature}.{sha[:16]}.npy",
                                          references[name])
    return out


def compute_metrics(fake, real=None, metrics=("fid",), **evaluator_options) -> dict:
    """Metrics of `fake` against `real`.

    fake, real: image folder, .npz in the ADM layout (arr_0 uint8 (N, H, W, 3) or
    videos (N, T, H, W, 3), arr_1 labels, optional stored statistics), a
    statistics .npz, a uint8 array, a `SampleSet` or a `Source`; real may be
    None for IS and digits accuracy. metrics: names from `METRICS` ("fid,is" or
    a list). evaluator_options: see `Evaluator`.

    Returns {"fid": ..., "fid_debiased": ..., "is_mean": ..., "is_std": ..., "precision": ..., ...,
    "intervals": {"fid_debiased": {"estimate", "low", "high", "level", "method", ...}, ...}, "provenance": {...}};
    provenance records the sources (sample counts,
    content hashes), extractor identities (weights sha256, preprocessing) and,
    per metric, the reference statistics used (sha256, stored or computed).
    """
    evaluator = Evaluator(**evaluator_options)
    real_source = open_source(real, "real") if real is not None else None
    return evaluator.compute(open_source(fake, "fake"), real_source, parse_metrics(metrics))
