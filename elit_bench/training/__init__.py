"""Training: rectified flow with multi-budget / multi-patch draws, EMA, DDP and exact resume.

`train(config) -> summary` is the library entry point (the suite runner calls
it in-process); `elit-bench train` is a thin wrapper (`training.cli`).
"""

from elit_bench.training.config import DEFAULTS, load_yaml, resolve_config
from elit_bench.training.trainer import train
from elit_bench.yamlconfig import apply_overrides

__all__ = ["DEFAULTS", "apply_overrides", "load_yaml", "resolve_config", "train"]
