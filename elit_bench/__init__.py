"""elit_bench: benchmark and evaluation harness for elastic diffusion transformers.

The Python API (imported on first use, so `import elit_bench` stays light):

    from elit_bench import run_suite, load_records, create_model, compute_metrics
"""

__version__ = "0.1.0"

_API = {"run_suite": "elit_bench.suites.api", "load_records": "elit_bench.suites.api",
        "create_model": "elit_bench.models", "compute_metrics": "elit_bench.metrics"}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'elit_bench' has no attribute {name!r}")
