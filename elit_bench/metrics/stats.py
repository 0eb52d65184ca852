"""Feature statistics, statistics files and the feature cache.

Statistics files are ``.npz`` archives. ADM reference batches
(``VIRTUAL_imagenet256_labeled.npz`` ...) hold Inception statistics as ``mu`` /
``sigma`` (pool features) and ``mu_s`` / ``sigma_s`` (spatial features), and
usually the images as ``arr_0``. Ours use the same keys for Inception and a
suffix per other feature space (``mu_dinov2``, ``mu_i3d``, ``mu_digits``; see
``compute.METRICS``), plus ``num<suffix>`` (sample counts) and
``meta`` (JSON provenance: extractor identities, source content hash).

The feature cache keeps per-sample features of sample sets under a key made of
the sample content hash, the extractor identity (name, weights sha256) and its
preprocessing id. Files are written atomically (temporary file, then
``os.replace``), so concurrent runs and interrupted runs never leave a partial
entry behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elit_bench.checkpoint import atomic_save, atomic_write, canonical_hash
from elit_bench.errors import UserError

log = logging.getLogger(__name__)

META_KEY = "meta"


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Gaussian statistics of a feature set: mu (D,) and sigma (D, D), float64."""

    mu: np.ndarray
    sigma: np.ndarray
    num: int | None = None  # samples behind the statistics; None when a file does not say

    def __post_init__(self):
        mu, sigma = np.asarray(self.mu, dtype=np.float64), np.asarray(self.sigma, dtype=np.float64)
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise UserError(f"statistics need mu (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise UserError("statistics hold NaN or infinite values (features of non-finite samples, or a damaged "
                            "file); recompute them")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)

    @classmethod
    def from_features(cls, features: np.ndarray) -> FeatureStats:
        """Mean and covariance (N - 1 normalisation) in float64 of features (N, D)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise UserError(f"statistics need at least 2 feature vectors (N, D), got shape {features.shape}")
        return cls(features.mean(axis=0), np.cov(features, rowvar=False), len(features))

    @property
    def dim(self) -> int:
        return len(self.mu)

    @property
    def sha256(self) -> str:
        """Content hash of (mu, sigma): identifies reference statistics in results."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.mu).tobytes())
        digest.update(np.ascontiguousarray(self.sigma).tobytes())
        return digest.hexdigest()


def save_statistics(path: str | Path, stats: dict[str, FeatureStats], meta: dict | None = None) -> None:
    """Write a statistics file; `stats` maps key suffix ("" for Inception pool) to statistics."""
    arrays: dict[str, np.ndarray] = {}
    for suffix, st in stats.items():
        arrays[f"mu{suffix}"] = st.mu
        arrays[f"sigma{suffix}"] = st.sigma
        if st.num is not None:
            arrays[f"num{suffix}"] = np.asarray(st.num)
    arrays[META_KEY] = np.asarray(json.dumps(meta or {}, sort_keys=True))
    atomic_save(Path(path), lambda f: np.savez(f, **arrays))


def read_npz_keys(path: Path) -> list[str]:
    """Array names in an .npz; `UserError` if it is not a readable archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path} is not a readable .npz archive ({exc}); is the file complete?") from exc
    return [n[: -len(".npy")] for n in names if n.endswith(".npy")]


def load_statistics(path: str | Path) -> tuple[dict[str, FeatureStats], dict]:
    """Statistics stored in an .npz (ADM reference batch or ours), by key suffix, and its meta dict.

    Returns ({}, {}) for an archive without statistics (e.g. a plain ADM sample batch).
    """
    path = Path(path)
    keys = set(read_npz_keys(path))
    suffixes = {k[2:] for k in keys if k.startswith("mu")} | {k[5:] for k in keys if k.startswith("sigma")}
    stats: dict[str, FeatureStats] = {}
    meta: dict = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for suffix in sorted(suffixes):
                if f"mu{suffix}" not in keys or f"sigma{suffix}" not in keys:
                    raise UserError(f"{path} has only one of mu{suffix} / sigma{suffix}; statistics need both")
                num = int(npz[f"num{suffix}"]) if f"num{suffix}" in keys else None
                try:
                    stats[suffix] = FeatureStats(npz[f"mu{suffix}"], npz[f"sigma{suffix}"], num)
                except UserError as exc:
                    raise UserError(f"{path}: mu{suffix} / sigma{suffix}: {exc}") from exc
            if META_KEY in keys:
                meta = json.loads(str(npz[META_KEY]))
    except UserError:
        raise
    except Exception as exc:  # zlib, CRC, header and JSON errors of a damaged archive
        raise UserError(f"{path} is corrupted: {type(exc).__name__}: {exc}") from exc
    return stats, meta


def default_cache_dir() -> Path:
    """``$ELIT_BENCH_CACHE/features``, or ``~/.cache/elit_bench/features``."""
    return Path(os.environ.get("ELIT_BENCH_CACHE", "~/.cache/elit_bench")).expanduser() / "features"


class FeatureCache:
    """Per-sample features on disk: ``<root>/<key>/<feature>.npy`` plus ``meta.json``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    @staticmethod
    def key(content_sha256: str, extractor_identity: dict) -> str:
        """Cache key of a sample set's features under one extractor (weights and preprocessing included)."""
        ident = {k: v for k, v in extractor_identity.items() if k != "weights"}  # the path may move, the hash not
        return canonical_hash({"content_sha256": content_sha256, **ident}, 40)

    def load(self, key: str, feature: str, rows: int | None = None) -> np.ndarray | None:
        """The cached features (rows, D), or None (recompute) when absent, damaged or not `rows` rows long."""
        path = self.root / key / f"{feature}.npy"
        if not path.is_file():
            return None
        try:
            features = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            return None  # a damaged entry is recomputed and overwritten
        if features.ndim != 2 or (rows is not None and len(features) != rows):
            log.warning("feature cache entry %s has shape %s, not %s rows: recomputing it", path, features.shape, rows)
            return None
        return features

    def save(self, key: str, feature: str, features: np.ndarray, meta: dict) -> None:
        entry = self.root / key
        atomic_save(entry / f"{feature}.npy", lambda f: np.save(f, features))
        atomic_write(entry / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1, sort_keys=True)))
