"""Where samples and statistics come from: image folders, ADM-layout .npz files, arrays.

A sample set (`elit_bench.data.samples`) is N uint8 samples, each (H, W, C) for
images or (T, H, W, C) for videos, C in {1, 3}, read in order in batches; its
content hash identifies it in the feature cache. A `Source` is one side of a
comparison: a sample set, stored statistics, or both.

``open_source(path)`` understands:

- a folder of .png / .jpg / .jpeg images (not recursive, sorted by name, read
  with PIL and converted to RGB, as torch-fidelity does);
- an .npz in the ADM layout: ``arr_0`` uint8 (N, H, W, 3) images or
  (N, T, H, W, 3) videos, optional ``arr_1`` labels, optional stored
  statistics (``mu``/``sigma``, ``mu_s``/``sigma_s`` ...);
- a statistics .npz (stored statistics only, see `stats`).

``arr_0`` is streamed from the archive in batches, so 50k-sample reference
batches are never held in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elit_bench.data.samples import ArraySamples, FolderSamples, NpzSamples, SampleSet
from elit_bench.errors import UserError
from elit_bench.metrics.stats import FeatureStats, load_statistics, read_npz_keys


@dataclass
class Source:
    """One side of a comparison: samples, stored statistics, or both (ADM reference batches)."""

    name: str  # path or a description, for messages and provenance
    samples: SampleSet | None = None
    stats: dict[str, FeatureStats] = field(default_factory=dict)  # stored statistics by key suffix
    meta: dict = field(default_factory=dict)  # provenance stored with the statistics

    def describe(self) -> dict:
        out: dict = {"source": self.name}
        if self.samples is not None:
            out["num_samples"] = self.samples.num
        if self.stats:
            out["stored_statistics"] = sorted(f"mu{s}" for s in self.stats)
        return out


def open_source(item: str | Path | np.ndarray | SampleSet | Source, name: str | None = None) -> Source:
    """A `Source` from a path (folder, ADM .npz, statistics .npz), a uint8 array, or a SampleSet."""
    if isinstance(item, Source):
        return item
    if isinstance(item, SampleSet):
        return Source(name or type(item).__name__, samples=item)
    if isinstance(item, np.ndarray):
        return Source(name or "array", samples=ArraySamples(item))
    path = Path(item).expanduser()
    if path.is_dir():
        return Source(str(path), samples=FolderSamples(path))
    if not path.is_file():
        raise UserError(f"{path} does not exist; give an image folder, an .npz in the ADM layout or a statistics .npz")
    keys = read_npz_keys(path)
    stats, meta = load_statistics(path)
    samples = NpzSamples(path) if "arr_0" in keys else None
    if samples is None and not stats:
        raise UserError(
            f"{path} has neither samples (arr_0) nor statistics (mu/sigma); found arrays {sorted(keys)}. "
            "Expected the ADM layout (arr_0 uint8 (N, H, W, 3), optional mu, sigma, mu_s, sigma_s) "
            "or a statistics file written by `elit-bench metrics --save-real-stats`"
        )
    return Source(str(path), samples=samples, stats=stats, meta=meta)
