"""A suite's `metrics:` settings, validated against the metric declarations (`metrics.compute.METRICS`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from elit_bench.metrics.compute import METRICS
from elit_bench.schema import PositiveInt, StrictSettings


class EvaluatorOptions(StrictSettings):
    """`metrics.options`: keyword arguments of `metrics.Evaluator`."""

    extractor_options: dict[str, dict[str, Any]] | None = None
    batch_size: PositiveInt = 64
    device: str | None = None
    cache_dir: str | None = None
    use_cache: bool = True
    # the bootstrap behind Frechet intervals (metrics.intervals); None: its defaults
    bootstrap_replicates: Annotated[int, Field(ge=2)] | None = None
    interval_seed: int | None = None
    # suite runs only: also keep Inception / DINOv2 / I3D features beside the record (digits ones always are)
    keep_features: bool = False

    def evaluator_kwargs(self) -> dict:
        """The options `metrics.Evaluator` takes (unset ones left to its defaults)."""
        return self.model_dump(exclude_none=True, exclude={"keep_features"})


class MetricsSettings(StrictSettings):
    """A suite's `metrics:` keys."""

    names: list[str] = ["fid"]
    num_samples: PositiveInt = 64
    real: str | None = None  # reference samples or statistics; "digits": the held-out embedded digits
    options: EvaluatorOptions | None = None

    @field_validator("names")
    @classmethod
    def _known(cls, names):
        if not names:
            raise ValueError(f"name at least one metric: {', '.join(METRICS)}")
        bad = [n for n in names if n not in METRICS]
        if bad:
            raise ValueError(f"unknown metric {bad[0]!r}; valid: {', '.join(METRICS)}")
        return names
