"""The one schema of the `train`, `sample` and `metrics` keys: types, ranges and allowed values.

pydantic models with `extra="forbid"` and strict types: `TrainSettings` is
what `elit-bench train` and a suite's `train:` accept, `SampleSettings` a
suite's `sample:` (the `elit-bench sample` recipe plus which checkpoint, EMA,
batch and grid), `MetricsSettings` a suite's `metrics:`. `check(section,
cls, values)` validates a mapping and turns the first problem into a
one-line `UserError` that names the key and, for an unknown key, suggests
the nearest valid one. Settings that depend on the model (a budget above
J, a group size that does not tile, guidance a baseline cannot do) are
checked where the model is built, on the meta device, before any work.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from elit_bench.errors import UserError
from elit_bench.flow.guidance import MODES
from elit_bench.flow.loss import TIMESTEP_KINDS
from elit_bench.flow.sampling import SOLVERS
from elit_bench.flow.taylorseer import TaylorSeer
from elit_bench.models.precision import DEFAULT_SAMPLE_PRECISION, SAMPLE_PRECISIONS

PositiveInt = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
# a budget in a suite: J~ latents per group, or "N%" of the model's J (one suite serves every model size)
Budget = int | str | None
BUDGET_SHARE_TOLERANCE = 0.1  # a "N%" budget may round to a share at most 10% (relative) away from N
BATCH_MODES = ("constant", "scaled")
PRECISIONS = ("auto", "fp32", "bf16")
LOGGERS = ("tensorboard", "wandb")
DEFAULT_DISTILL_WEIGHT = 20.0  # the paper's: brings the distillation term to the rectified-flow loss's magnitude


def _check_budget(value):
    if value is None or (isinstance(value, int) and value >= 1):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            if 0 < float(value[:-1]) <= 100:
                return value
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a budget: give an integer >= 1, a percentage of J such as '25%', or null")


class StrictSettings(BaseModel):
    # allow_inf_nan: `lr: .inf` or `timestep_mean: .nan` are typos or overflow, never a setting
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=(), allow_inf_nan=False)


class TrainSettings(StrictSettings):
    """`elit-bench train` keys; defaults are the paper's (the embedded digits override a few: DATA_DEFAULTS)."""

    model: str | None = None  # registry name, e.g. ELIT-DiT-B/2 (required)
    model_kwargs: dict[str, Any] = {}  # create_model overrides, e.g. {hidden_size: 64, group_size: 2, drop: random}
    # fine-tune: start from this checkpoint's (EMA) weights, e.g. DyDiT from a trained DiT (its routers keep their init)
    init: str | None = None
    # distil from this checkpoint's (EMA) model: add distill_weight x the mean squared error between the model's
    # velocity and the teacher's on the same noisy input (paper Sec. 4.4, Qwen-Image: init and teacher the same model)
    teacher: str | None = None
    distill_weight: Annotated[float, Field(ge=0)] | None = None  # 20 (the paper's) when a teacher is given
    data: str | dict[str, Any] = "digits"  # digits | padded-digits | moving-digits | latent data set directory
    resolution: PositiveInt | None = None  # px of the embedded digits (latent sets carry their own)
    batch: PositiveInt = 256  # global batch (split over ranks)
    steps: PositiveInt = 1000
    seed: Annotated[int, Field(ge=0)] = 0
    lr: Annotated[float, Field(gt=0)] = 1e-4
    warmup: Annotated[int, Field(ge=0)] = 10000  # linear warmup steps, then constant
    weight_decay: Annotated[float, Field(ge=0)] = 0.0  # AdamW; 0 is the paper's Adam
    grad_clip: Annotated[float, Field(gt=0)] | None = 1.0
    ema_decay: Fraction = 0.9999
    class_dropout: Fraction = 0.1  # probability of the null label (guidance)
    timesteps: Literal[TIMESTEP_KINDS] = "logit_normal"  # the same for every model
    timestep_mean: float = 0.0
    timestep_std: Annotated[float, Field(gt=0)] = 1.0
    # training times shifted toward the noise as sample.shift shifts the sampling grid (the paper's Qwen-Image setup: 2.22)
    time_shift: Annotated[float, Field(gt=0)] = 1.0
    multi_budget: bool = False  # draw J~ per iteration (default range 1:J)
    budget_range: str | None = None  # "JMIN:JMAX": draw J~ uniformly in it
    batch_mode: Literal[BATCH_MODES] = "constant"  # scaled: batch varies with the budget (Table 5d (i))
    precision: Literal[PRECISIONS] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model
    # fsdp: each rank holds 1/world of the weights, gradients, AdamW state and EMA (FSDP2, per block), for models
    # whose training state does not fit one GPU; ddp: every rank holds all of it (training/sharding.py)
    sharding: Literal["ddp", "fsdp"] = "ddp"
    # per-GPU micro-batch: the rank's batch runs in chunks of this size, gradients accumulated (DDP syncs once);
    # "auto": the largest that fits the GPU's memory (`elit-bench run SUITE --dry-run` prints it), the whole
    # rank batch on CPU
    micro_batch: PositiveInt | Literal["auto"] = "auto"
    # recompute each block's activations in backward instead of keeping them; "auto": only when no
    # micro-batch fits the GPU without it
    activation_checkpointing: bool | Literal["auto"] = "auto"
    max_nonfinite_steps: PositiveInt = 5  # this many non-finite steps in a row (each skipped) stop the run
    ckpt_every: PositiveInt = 1000  # steps between checkpoints/last.pt updates (and always at the end)
    snapshot_every: PositiveInt | None = None  # also keep checkpoints/step_XXXXXXX.pt every N steps
    log_every: PositiveInt = 10  # steps between logged scalars
    logger: Literal[LOGGERS] = "tensorboard"  # wandb: also Weights & Biases (pip install wandb)
    progress: bool = True  # tqdm progress bar
    out: str | None = None  # run directory (default: runs/<model>-<data>-<hash>)

    @model_validator(mode="after")
    def _distillation(self):
        if self.teacher is None and self.distill_weight is not None:
            raise ValueError(f"distill_weight {self.distill_weight} without a teacher: set train.teacher (the "
                             "checkpoint to distil from) or drop distill_weight")
        if self.teacher is not None and self.distill_weight is None:
            self.distill_weight = DEFAULT_DISTILL_WEIGHT
        return self


class TaylorSeerSettings(StrictSettings):
    """`sample.taylorseer`: order O of the forecast and interval N (one full evaluation in N); see flow/taylorseer.py."""

    order: Annotated[int, Field(ge=0)]
    interval: PositiveInt


class SampleSettings(StrictSettings):
    """A suite's `sample:` keys: the sampling recipe, and which checkpoint it samples."""

    steps: PositiveInt = 40
    sampler: Literal[SOLVERS] = "euler"
    shift: Annotated[float, Field(gt=0)] = 1.0
    guidance: Literal[MODES] = "none"
    scale: float = 0.0  # l of v = (l + 1) G(x|c) - l G(x|guide)
    budget: Budget = None
    guide_budget: Budget = None
    schedule: str | None = None
    interval: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None  # [t_lo, t_hi]
    teacache: Annotated[float, Field(gt=0)] | None = None
    taylorseer: TaylorSeerSettings | None = None  # {order: O, interval: N}; not with teacache
    tome: Annotated[float, Field(gt=0, le=0.75)] | None = None  # ToMe: share of each block's tokens merged
    patch_size: PositiveInt | None = None
    class_labels: list[Annotated[int, Field(ge=0)]] | None = None
    precision: Literal[SAMPLE_PRECISIONS] = DEFAULT_SAMPLE_PRECISION  # fp32 | tf32 (TF32 matmuls on CUDA) | bf16
    checkpoint_step: PositiveInt | None = None  # a snapshot (train.snapshot_every) instead of the last checkpoint
    ema: bool = True
    batch: PositiveInt = 64
    grid: bool = False  # also write grid.png (it goes to TensorBoard either way)

    @field_validator("budget", "guide_budget")
    @classmethod
    def _budget(cls, value):
        return _check_budget(value)

    def recipe(self, max_budget: int | None):
        """The `sampling.generate.Recipe` these settings describe, "N%" budgets turned into latents of J."""
        from elit_bench.sampling.generate import Recipe

        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(Recipe)}
        for key in ("budget", "guide_budget"):
            value = kwargs[key]
            if isinstance(value, str):
                if max_budget is None:
                    raise UserError(f"sample.{key} {value!r} is a share of J and needs an ELIT model")
                asked = float(value[:-1])
                kwargs[key] = max(1, round(max_budget * asked / 100))
                used = 100 * kwargs[key] / max_budget
                if abs(used - asked) > BUDGET_SHARE_TOLERANCE * asked:  # e.g. "1%" of J = 4 would sample 25%
                    shares = ", ".join(f"{100 * j / max_budget:g}%" for j in range(1, max_budget + 1))
                    raise UserError(f"sample.{key} {value!r} of J = {max_budget} would be {kwargs[key]} latent(s), "
                                    f"{used:g}% of J; give a share J = {max_budget} has ({shares}) or a number of "
                                    "latents")
        for key in ("interval", "class_labels"):
            kwargs[key] = tuple(kwargs[key]) if kwargs[key] is not None else None
        if self.taylorseer is not None:
            kwargs["taylorseer"] = TaylorSeer(**self.taylorseer.model_dump())
        return Recipe(**kwargs)


def check(section: str, cls: type[BaseModel], values: dict, where: str = "") -> BaseModel:
    """`cls(**values)`, or a one-line UserError naming `section.key`, what is wrong and (unknown keys) the nearest."""
    if not isinstance(values, dict):
        raise UserError(f"{where}{section} must be a mapping of keys to values, got {values!r}")
    try:
        return cls(**values)
    except ValidationError as exc:
        raise describe(exc, section, cls, where) from None


def describe(exc: ValidationError, section: str, cls: type[BaseModel], where: str = "") -> UserError:
    errors = exc.errors()
    err = errors[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join([section, *loc]) if section else ".".join(loc)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if err["type"] == "extra_forbidden":
        valid = list(_fields_at(cls, loc[:-1]))
        near = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        hint = f"; did you mean {'.'.join([section, *loc[:-1], near[0]]) if section else near[0]!r}?" if near else ""
        return UserError(f"{where}unknown {'key' if section else 'config key'} {key!r}{hint} "
                         f"(valid: {', '.join(valid)}){more}")
    message = err["msg"].removeprefix("Value error, ")
    message = message[0].lower() + message[1:]
    got = f", got {err['input']!r}" if "input" in err and err["type"] not in ("missing", "value_error") else ""
    return UserError(f"{where}{key}: {message}{got}{more}")


def _fields_at(cls: type[BaseModel], path: list[str]) -> dict:
    """The fields of the (nested) model at `path`, for suggestions."""
    for part in path:
        field = cls.model_fields.get(part)
        nested = [t for t in typing.get_args(field.annotation) or (field.annotation,)
                  if isinstance(t, type) and issubclass(t, BaseModel)] if field else []
        if not nested:
            return {}
        cls = nested[0]
    return cls.model_fields
