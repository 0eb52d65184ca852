"""Metrics: FID, FDD (DINOv2), IS, sFID, precision/recall, KID, FVD, digits FD / accuracy, each with
a 95% interval (docs/intervals.md), the real-data floor, rho efficiency and compute-quality frontiers.

Library use::

    from elit_bench.metrics import compute_metrics
    res = compute_metrics("samples.npz", "VIRTUAL_imagenet256_labeled.npz", "fid,is,sfid,pr",
                          extractor_options={"inception-v3-tf": {"weights": "weights-inception-2015-12-05-6726825d.pth"}})
    res["fid"], res["is_mean"], res["provenance"]["reference_statistics"]["fid"]["sha256"]

The command line is ``elit-bench metrics`` (`elit_bench.metrics.cli`). Names
are imported on first access, so that importing the CLI module stays cheap.
"""

import importlib

_EXPORTS = {
    "compute": ["HIGHER_IS_BETTER", "METRICS", "Evaluator", "KeySpec", "MetricSpec", "compute_metrics",
                "extract_features", "higher_is_better", "metric_key"],
    "extractors": ["FeatureExtractor", "get_extractor", "list_extractors", "register_extractor"],
    "frechet": ["frechet_distance", "frechet_distance_stats"],
    "frontier": ["pareto_frontier", "rho"],
    "floor": ["real_digits", "write_real_data_record"],
    "inception_score": ["inception_score", "inception_split_scores"],
    "intervals": ["frechet_bootstrap", "t_bounds", "wilson"],
    "prdc": ["kernel_inception_distance", "precision_recall"],
    "sources": ["ArraySamples", "SampleSet", "Source", "open_source"],
    "stats": ["FeatureCache", "FeatureStats", "load_statistics", "save_statistics"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
