"""Run configuration: defaults, overrides, validation and the resolved config a run stores.

A user config is a flat dict (YAML file, CLI flags, `key=value` overrides;
`elit_bench.schema.TrainSettings` is its schema: types, ranges, allowed
values, unknown keys refused with the nearest valid one suggested).
`resolve_config` validates it, fills defaults, turns the data
spec into its data description, derives the model's input kwargs from the
data, builds the model on the meta device to validate every model setting
(unknown name, group size that does not tile, budget range), and checks the
output directory, all before any training work. The resolved config is
what `config.yaml` and the checkpoints hold: `model` and `model_kwargs`
exactly as `create_model` receives them, `data` the data description.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
from pathlib import Path

import torch

from elit_bench.checkpoint import canonical_hash, checkpoint_config, read_text
from elit_bench.data import describe_data, model_input_kwargs
from elit_bench.data.digits import DEFAULT_RESOLUTION
from elit_bench.errors import UserError
from elit_bench.flops import budget_range, forward_flops, train_forward_flops, train_tflops
from elit_bench.schema import TrainSettings, check
from elit_bench.training.sharding import check_sharding
from elit_bench.yamlconfig import parse_yaml

DEFAULTS = TrainSettings().model_dump()  # every key, with its default (elit_bench.schema documents them)

# the embedded digits train in minutes on a CPU: a short warmup and a faster EMA (paper values are for 500k steps)
_DIGITS = {"resolution": DEFAULT_RESOLUTION, "batch": 64, "lr": 3e-4, "warmup": 100, "ema_decay": 0.999}
DATA_DEFAULTS = {"digits": _DIGITS, "padded-digits": _DIGITS, "moving-digits": _DIGITS}

# keys that may change when a run is continued: they do not change what is trained (raising `steps` continues it;
# micro-batches and activation checkpointing change only float rounding)
RUN_CONTROL_KEYS = ("steps", "out", "ckpt_every", "snapshot_every", "log_every", "logger", "progress", "compile",
                    "micro_batch", "activation_checkpointing", "max_nonfinite_steps")


# ---------------------------------------------------------------- reading user input
def load_yaml(path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    config = parse_yaml(read_text(path, "config file"), f"config file {str(path)!r}") or {}
    if not isinstance(config, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return config


# ---------------------------------------------------------------- resolution and validation
def _model_kwargs(cfg: dict) -> dict:
    """The data's input kwargs plus the user's overrides; the two may not disagree."""
    from_data = model_input_kwargs(cfg["data"])
    user = cfg["model_kwargs"]
    for key, value in from_data.items():
        if key in user and _plain(user[key]) != _plain(value):
            raise UserError(f"model_kwargs.{key}={user[key]!r} contradicts the data ({cfg['data']['name']} needs "
                            f"{key}={value!r}); drop the override")
    return _plain({**user, **from_data})


def build_meta_model(cfg: dict):
    """The configured model on the meta device: validates it without allocating weights."""
    from elit_bench.models import create_model

    with torch.device("meta"):
        return create_model(cfg["model"], **cfg["model_kwargs"])


TEACHER_INPUTS = ("in_channels", "input_shape", "num_classes")  # what the student feeds its teacher


def teacher_meta_model(cfg: dict, student=None):
    """`train.teacher`'s model (as its checkpoint's config names it) on the meta device, None without a teacher.

    Reads only the checkpoint's config; a missing file, or a teacher that does not take the student's inputs
    (channels, input shape, classes with the null label), is a UserError.
    """
    if cfg.get("teacher") is None:
        return None
    from elit_bench.models import create_model

    path = Path(cfg["teacher"]).expanduser()
    if not path.is_file():
        raise UserError(f"train.teacher {cfg['teacher']!r} is not a file: give the checkpoint (.pt) to distil from")
    teacher_cfg, _ = checkpoint_config(path)
    with torch.device("meta"):
        teacher = create_model(teacher_cfg["model"], **(teacher_cfg.get("model_kwargs") or {}))
    student = student if student is not None else build_meta_model(cfg)
    differ = [f"{k} {getattr(teacher, k, None)} vs {getattr(student, k, None)}" for k in TEACHER_INPUTS
              if getattr(teacher, k, None) != getattr(student, k, None)]
    if differ:
        raise UserError(f"train.teacher {cfg['teacher']!r} ({teacher_cfg['model']}) does not take this model's inputs "
                        f"({', '.join(differ)}): give a teacher trained on the same data")
    return teacher


def teacher_forward_flops(cfg: dict, student=None) -> float:
    """FLOPs per sample of the teacher's forward in a training step (full compute, no gradient); 0 without."""
    teacher = teacher_meta_model(cfg, student)
    return 0.0 if teacher is None else float(forward_flops(teacher))


def training_budgets(model, cfg: dict) -> list[int | None]:
    """Budgets J~ drawn uniformly each iteration: [None] (full) unless multi-budget."""
    if not cfg["multi_budget"] and cfg["budget_range"] is None:
        return [None]
    J = getattr(model, "max_budget", None)
    if J is None:
        raise UserError(f"{cfg['model']} has no latent interface: multi-budget training (--multi-budget, "
                        "--budget-range) needs an ELIT model")
    return budget_range(model, cfg["budget_range"] if cfg["budget_range"] is not None else (1, J))


def training_variants(model, cfg: dict) -> list[tuple[int | None, int | None]]:
    """(budget, patch) pairs drawn uniformly each iteration: budgets x the model's patchifiers."""
    patches = list(getattr(model, "patch_options", None) or [None])
    return [(b, p) for b in training_budgets(model, cfg) for p in patches]


def variant_batches(model, variants, batch: int, mode: str, world: int = 1) -> list[int]:
    """Global batch for each variant.

    constant: `batch` for every variant. scaled (Table 5d (i)): batch_v =
    batch * mean_F / F_v, with F_v the training-pass FLOPs of variant v and mean_F
    their mean, rounded to a multiple of the world size: cheap budgets get
    bigger batches, and the expected training FLOPs per iteration equal those
    of constant mode at the same `batch` (each iteration costs ~batch * mean_F).
    """
    if mode == "constant":
        return [batch] * len(variants)
    costs = [train_forward_flops(model, b, patch_size=p) for b, p in variants]
    mean = sum(costs) / len(costs)
    return [max(world, round(batch * mean / c / world) * world) for c in costs]


def _plain(value):
    """YAML/JSON-safe copy: tuples to lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# keys added after runs were stored, with their defaults: left out of the identity at the default, so those runs
# keep their ids and still resume
LATER_KEYS = {"init": None, "teacher": None, "distill_weight": None, "time_shift": 1.0, "sharding": "ddp"}


def identity(cfg: dict) -> dict:
    """What defines the training run: the resolved config minus run-control keys (and `LATER_KEYS` at their default)."""
    return {k: v for k, v in cfg.items()
            if k not in RUN_CONTROL_KEYS and not (k in LATER_KEYS and v == LATER_KEYS[k])}


def default_out(cfg: dict) -> str:
    data = cfg["data"]
    data_name = Path(data["name"]).name if data["kind"] == "latents" else data["name"]
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", f"{cfg['model']}-{data_name}-{data['resolution']}px")
    return str(Path("runs") / f"{slug}-{canonical_hash(identity(cfg), 8)}")


def check_writable_dir(out) -> Path:
    """The run directory must be creatable and writable; probes without touching existing files."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {str(path)!r} exists and is not a directory")
    probe_dir = path
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UserError(f"--out {str(path)!r} cannot be created: {str(probe_dir)!r} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe_dir, prefix=".elit-write-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UserError(f"--out {str(path)!r} is not writable ({exc}); choose another directory") from exc
    return path


def fill_defaults(config: dict, section: str = "", where: str = "") -> dict:
    """The config validated against the schema, every key filled (the data's own defaults first)."""
    data_spec = config.get("data", DEFAULTS["data"]) if isinstance(config, dict) else None
    data_name = data_spec.get("name") if isinstance(data_spec, dict) else data_spec
    defaults = DATA_DEFAULTS.get(data_name, {}) if isinstance(data_name, str) else {}
    cfg = check(section, TrainSettings, {**defaults, **config} if isinstance(config, dict) else config, where)
    cfg = cfg.model_dump()
    if not cfg["model"]:
        raise UserError(f"{where}no model given: pass --model NAME (e.g. --model ELIT-DiT-S/2; `elit-bench models` "
                        "lists them)")
    return cfg


def identity_hash(config: dict, length: int = 10) -> str:
    """Hash of what the run trains (model, data, optimisation, seed), never of run-control keys like `steps`."""
    return canonical_hash(identity(fill_defaults(config)), length)


def expected_train_tflops(model, cfg: dict) -> float:
    """Training TFLOPs of one iteration in expectation over the variants (budget, patch) drawn uniformly, with
    the teacher's forward per sample when distilling."""
    variants = training_variants(model, cfg)
    batches = variant_batches(model, variants, cfg["batch"], cfg["batch_mode"])
    teacher = teacher_forward_flops(cfg, model)
    return sum(train_tflops(train_forward_flops(model, b, patch_size=p), n) + teacher * n / 1e12
               for (b, p), n in zip(variants, batches)) / len(variants)


def resolve_config(config: dict, check_out: bool = True) -> dict:
    """Defaults + data description + model kwargs, all validated; raises UserError before any work.

    check_out=False leaves `out` as given (a suite validating its runs before it creates any directory).
    """
    cfg = fill_defaults(config)
    cfg["data"] = describe_data(config.get("data", DEFAULTS["data"]), cfg["resolution"])
    cfg["resolution"] = cfg["data"]["resolution"]
    cfg["model_kwargs"] = _model_kwargs(cfg)
    model = build_meta_model(cfg)
    budgets = training_budgets(model, cfg)
    if cfg["init"] is not None and not Path(cfg["init"]).expanduser().is_file():
        raise UserError(f"train.init {cfg['init']!r} is not a file: give the checkpoint (.pt) to fine-tune from")
    teacher_meta_model(cfg, model)
    check_sharding(cfg, model)
    if cfg["budget_range"] is not None:  # canonical "JMIN:JMAX"
        cfg["budget_range"] = f"{budgets[0]}:{budgets[-1]}"
    if cfg["logger"] == "wandb" and importlib.util.find_spec("wandb") is None:
        raise UserError("logger: wandb needs Weights & Biases: pip install wandb (or use logger: tensorboard)")
    if check_out:
        cfg["out"] = str(check_writable_dir(cfg["out"] if cfg["out"] is not None else default_out(cfg)))
    return _plain(cfg)
