"""How long a suite's runs will take on this machine: the estimate `elit-bench run SUITE --dry-run` prints.

Measured where it can be, on the device the run would use (CUDA when there is one, as training picks it):

- training: for each distinct model configuration (model and its kwargs, batch, the budgets and patch
  sizes it draws, precision), a warm-up step and then `TIMED_STEPS` timed steps of the training step's work
  (forward, rectified-flow loss, backward, gradient clipping, AdamW, EMA) on random tensors of the data's
  shape at the run's batch. Multi-budget (or multi-patch) training draws variants of different cost: the
  cheapest and the costliest are timed and the mean over the variants is interpolated linearly in their
  FLOPs. A run's training time is its remaining steps times that.
- sampling: one forward (after a warm-up one) at the evaluation's sample batch for each budget its plan
  uses; a sample set costs ceil(samples / batch) times the sum over the plan's passes (one per solver
  evaluation, two with CFG-like guidance, a cheaper second one with CCFG; TeaCache skips are not
  foreseen, so they count as computed).
- too slow to time: a configuration whose training step would take over `MAX_TIMED_SECONDS` at the FLOPs
  rate measured so far (decided by the analytic FLOPs of its step, `elit_bench.flops`; the first and
  smallest by `FIRST_TIMED_FLOPS`) is not run. Its step and forward times are its FLOPs over the training
  and forward FLOPs/s measured on the largest configuration that was timed (a small probe model when none
  could be), and the estimate says it was extrapolated, and from what.

Metric computation (feature extraction, bootstrap intervals) and the real-data floor are not included; a
run already done counts 0, one with a checkpoint only its remaining steps. Nothing is written.

Memory (`estimate_memory`): for every training run, the peak memory per GPU of a training step at the
micro-batch the run will use on a GPU of `--gpu-memory` GB, with activation checkpointing only if no
micro-batch fits without it (`elit_bench.training.memory`: the same plan a run with `train.micro_batch:
auto` makes when it starts on that GPU; activations measured by a fake-tensor trace of the real model).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import torch

from elit_bench.errors import UserError
from elit_bench.suites.spec import CheckpointRun, ComputeRun, TrainingRun

WARMUP_STEPS = 1
TIMED_STEPS = 2
MAX_TIMED_SECONDS = 1.0  # a training step predicted slower than this is extrapolated, not timed
FIRST_TIMED_FLOPS = {"cpu": 2e10, "cuda": 2e13}  # FLOPs of a step timed before any rate is known
PROBE = {"model": "DiT-S/2", "data": "digits", "resolution": 16, "batch": 16,
         "model_kwargs": {"hidden_size": 96, "depth": 6, "num_heads": 4}}
PROBE_LABEL = "probe DiT-S/2 (width 96, depth 6) on 16 px digits"
# what decides the cost of a training step (not lr, seed, steps, ...)
COST_KEYS = ("model", "model_kwargs", "data", "resolution", "batch", "batch_mode", "multi_budget", "budget_range",
             "precision")

_TRAIN_TIMES: dict = {}
_FORWARD_TIMES: dict = {}


def default_device() -> torch.device:
    """The device a local run trains and samples on (`distributed.local_device`)."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(name: str, kwargs: dict, device: torch.device):
    from elit_bench.models import create_model

    with torch.random.fork_rng(devices=[]):  # the caller's random streams stay as they were
        torch.manual_seed(0)
        return create_model(name, **kwargs).to(device)


def _key(*parts) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


# ---------------------------------------------------------------- the two measurements (tests replace these)
def time_train_step(name: str, kwargs: dict, cfg: dict, variant: tuple, batch: int, device: torch.device) -> float:
    """Seconds of one training step of the model at `batch` and `variant` (budget, patch size) on `device`."""
    from elit_bench.flow.loss import sample_timesteps
    from elit_bench.training.trainer import autocast_for, optimization_step

    key = _key(name, kwargs, {k: cfg.get(k) for k in ("precision", "timesteps", "grad_clip")}, variant, batch,
               str(device))
    if key in _TRAIN_TIMES:
        return _TRAIN_TIMES[key]
    model = _build(name, kwargs, device).train()
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.get("lr", 1e-4), weight_decay=cfg.get("weight_decay", 0))
    budget, patch = variant
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, model.in_channels, *model.input_shape, generator=gen, device=device)
    y = torch.randint(model.num_classes, (batch,), generator=gen, device=device)
    forward = {"generator": gen}
    if budget is not None:
        forward["budget"] = budget
    if patch is not None:
        forward["patch_size"] = patch
    autocast = autocast_for(cfg.get("precision", "auto"), device)

    def step():  # the trainer's own iteration, on random data of the run's shape
        t = sample_timesteps(batch, cfg.get("timesteps", "logit_normal"), cfg.get("timestep_mean", 0.0),
                             cfg.get("timestep_std", 1.0), generator=gen)
        noise = torch.randn(x.shape, generator=gen, device=device)
        optimization_step(model, model, ema, optimizer, autocast, x1=x, y=y, t=t, noise=noise,
                          grad_clip=cfg.get("grad_clip"), ema_decay=0.999, **forward)

    with torch.random.fork_rng(devices=[]):
        for _ in range(WARMUP_STEPS):
            step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(TIMED_STEPS):
            step()
        _sync(device)
    _TRAIN_TIMES[key] = seconds = (time.perf_counter() - start) / TIMED_STEPS
    return seconds


@torch.inference_mode()
def time_forward(name: str, kwargs: dict, budget, patch, batch: int, device: torch.device) -> float:
    """Seconds of one sampling forward (fp32, as sampling runs) of `batch` samples at `budget` on `device`."""
    key = _key(name, kwargs, budget, patch, batch, str(device))
    if key in _FORWARD_TIMES:
        return _FORWARD_TIMES[key]
    model = _build(name, kwargs, device).eval()
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, model.in_channels, *model.input_shape, generator=gen, device=device)
    t = torch.rand(batch, generator=gen, device=device)
    y = torch.randint(model.num_classes, (batch,), generator=gen, device=device)
    forward = {}
    if budget is not None:
        forward["budget"] = budget
    if patch is not None:
        forward["patch_size"] = patch
    with torch.random.fork_rng(devices=[]):
        model(x, t, y, **forward)
        _sync(device)
        start = time.perf_counter()
        model(x, t, y, **forward)
        _sync(device)
    _FORWARD_TIMES[key] = seconds = time.perf_counter() - start
    return seconds


# ---------------------------------------------------------------- what each run costs
@dataclass
class Config:
    """One distinct model configuration: what its training step and its forwards cost, and how it was found."""

    label: str  # the first run that uses it
    name: str
    kwargs: dict
    cfg: dict | None  # the filled training config (None: an evaluated checkpoint)
    model: object  # on the meta device
    variants: list = field(default_factory=lambda: [(None, None)])
    batches: list = field(default_factory=list)
    step_flops: list = field(default_factory=list)  # per variant: training FLOPs of one step
    step_seconds: float | None = None
    how: str = "measured"
    source: str = ""  # extrapolated: whose rate
    forward: dict = field(default_factory=dict)  # (budget, patch, batch) -> seconds

    @property
    def mean_step_flops(self) -> float:
        return sum(self.step_flops) / len(self.step_flops) if self.step_flops else 0.0

    @property
    def max_step_flops(self) -> float:
        return max(self.step_flops) if self.step_flops else 0.0


def forward_flops_of(model, budget, patch) -> float:
    from elit_bench.flops import forward_flops

    return float(forward_flops(model, budget, patch_size=patch))


def _train_config(run: TrainingRun) -> Config:
    from elit_bench.flops import TRAIN_MULTIPLIER, train_forward_flops
    from elit_bench.training.config import training_variants, variant_batches

    name, kwargs, cfg = run.model_args
    model = run.meta_model()
    variants = training_variants(model, cfg)
    batches = variant_batches(model, variants, cfg["batch"], cfg["batch_mode"])
    flops = [train_forward_flops(model, b, patch_size=p) * TRAIN_MULTIPLIER * n for (b, p), n in zip(variants, batches)]
    return Config(run.label, name, kwargs, cfg, model, variants, batches, flops)


def _checkpoint_config(run: CheckpointRun) -> Config:
    from elit_bench.checkpoint import checkpoint_config

    config, _ = checkpoint_config(run.checkpoint)
    return Config(run.label, config["model"], dict(config.get("model_kwargs", {})), None, run.meta_model())


def _cost_key(config: Config) -> str:
    if config.cfg is None:
        return _key("checkpoint", config.name, config.kwargs)
    return _key(config.name, config.kwargs, {k: config.cfg.get(k) for k in COST_KEYS})


def sample_plan(run, model) -> list[dict]:
    """Per evaluation: samples, batch, passes {(budget, patch): count per batch} and FLOPs per sample."""
    import dataclasses

    from elit_bench.sampling.generate import prepare

    out = []
    for ev in run.evals:
        sample, n = ev.sample_settings, ev.metrics_settings.num_samples
        recipe = dataclasses.replace(sample.recipe(getattr(model, "max_budget", None)), teacache=None)
        setup = prepare(model, recipe)
        passes = Counter((p.budget, recipe.patch_size) for e in setup.plan for p in e.passes)
        out.append({"label": ev.label, "samples": n, "batch": min(sample.batch, n),
                    "batches": math.ceil(n / sample.batch), "passes": dict(passes),
                    "flops_per_sample": float(setup.flops_per_sample)})
    return out


class Rates:
    """Training and forward FLOPs/s measured on the largest configuration timed so far (for extrapolation)."""

    def __init__(self):
        self.train = self.forward = None
        self.train_flops = self.forward_flops = -1.0
        self.train_source = self.forward_source = ""

    def add_train(self, flops: float, seconds: float, source: str) -> None:
        if flops > self.train_flops and seconds > 0:
            self.train, self.train_flops, self.train_source = flops / seconds, flops, source

    def add_forward(self, flops: float, seconds: float, source: str) -> None:
        if flops > self.forward_flops and seconds > 0:
            self.forward, self.forward_flops, self.forward_source = flops / seconds, flops, source


def _measure_train(config: Config, device, rates: Rates) -> None:
    """Time the cheapest and the costliest variant; the mean step over the variants, linear in FLOPs between."""
    order = sorted(range(len(config.variants)), key=lambda i: config.step_flops[i])
    ends = list(dict.fromkeys([order[0], order[-1]]))
    seconds = {i: time_train_step(name=config.name, kwargs=config.kwargs, cfg=config.cfg, variant=config.variants[i],
                                  batch=config.batches[i], device=device) for i in ends}
    lo, hi = ends[0], ends[-1]
    f_lo, f_hi = config.step_flops[lo], config.step_flops[hi]
    if hi == lo or f_hi == f_lo:
        config.step_seconds = sum(seconds.values()) / len(seconds)
    else:
        slope = (seconds[hi] - seconds[lo]) / (f_hi - f_lo)
        config.step_seconds = seconds[lo] + slope * (config.mean_step_flops - f_lo)
    rates.add_train(f_hi, seconds[hi], config.label)


def _measure_forward(config: Config, plans: list[dict], device, rates: Rates) -> None:
    for plan in plans:
        for budget, patch in plan["passes"]:
            key = (budget, patch, plan["batch"])
            if key not in config.forward:
                config.forward[key] = time_forward(name=config.name, kwargs=config.kwargs, budget=budget, patch=patch,
                                                   batch=plan["batch"], device=device)
                rates.add_forward(forward_flops_of(config.model, budget, patch) * plan["batch"], config.forward[key],
                                  config.label)


def _probe(device, rates: Rates) -> None:
    """Rates from a small model, when even the smallest configuration of the suite is too big to time."""
    config = _train_config(TrainingRun("probe", "probe", PROBE_LABEL, train=dict(PROBE)))
    _measure_train(config, device, rates)
    plan = {"batch": PROBE["batch"], "passes": {(None, None): 1}}
    _measure_forward(config, [plan], device, rates)
    rates.train_source = rates.forward_source = PROBE_LABEL


def _remaining_steps(run, out, steps: int) -> tuple[int, str]:
    """(steps still to train, why): all of them, or those after an existing checkpoint of this run."""
    from elit_bench.checkpoint import checkpoint_config
    from elit_bench.suites.runner import run_dir

    if out is None:
        return steps, ""
    ckpt = run_dir(out, run) / "train" / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        return steps, ""
    try:
        _, done = checkpoint_config(ckpt)
    except UserError:
        return steps, ""
    return max(0, steps - int(done or 0)), f"resumes at step {done}"


@dataclass
class Costs:
    """What the runs of a suite cost to run: each distinct model configuration once (`Config`), the sample plan
    of each run's evaluations, and why a run is not estimated."""

    configs: dict = field(default_factory=dict)  # cost key -> Config
    key_of: dict = field(default_factory=dict)  # run id -> cost key
    plans: dict = field(default_factory=dict)  # run id -> `sample_plan`
    notes: dict = field(default_factory=dict)  # run id -> why it is not estimated

    @classmethod
    def of(cls, runs) -> Costs:
        costs = cls()
        for run in runs:
            if isinstance(run, ComputeRun):
                continue
            try:
                config = _train_config(run) if isinstance(run, TrainingRun) else _checkpoint_config(run)
            except UserError as exc:  # e.g. a checkpoint named by a variable that is not set
                costs.notes[run.id] = f"not estimated: {exc}"
                continue
            key = _cost_key(config)
            config = costs.configs.setdefault(key, config)
            costs.key_of[run.id] = key
            costs.plans[run.id] = sample_plan(run, config.model)
        return costs

    def plans_of(self, config: Config) -> list[dict]:
        return [p for rid, key in self.key_of.items() if self.configs[key] is config for p in self.plans[rid]]


def _should_time(config: Config, worst_forward: float, rates: Rates, device) -> bool:
    """Time a configuration when its step and forwards are predicted to take at most MAX_TIMED_SECONDS at the rates
    measured so far; before any rate, when its FLOPs are under FIRST_TIMED_FLOPS (else a probe sets the rates)."""
    if rates.train is None and rates.forward is None:
        cap = FIRST_TIMED_FLOPS.get(device.type, FIRST_TIMED_FLOPS["cpu"])
        if config.max_step_flops <= cap and worst_forward <= cap:
            return True
        _probe(device, rates)
        return False
    trains = config.cfg is not None
    predicted = max(config.max_step_flops / rates.train if trains and rates.train else 0.0,
                    worst_forward / rates.forward if rates.forward else 0.0)
    return predicted <= MAX_TIMED_SECONDS


def _time_configs(costs: Costs, device, rates: Rates) -> None:
    """Time (or extrapolate) every configuration, smallest first: the rate of what was timed decides whether the
    next is timed or extrapolated."""
    for config in sorted(costs.configs.values(), key=lambda c: (c.max_step_flops, c.label)):
        plans = costs.plans_of(config)
        worst_forward = max((forward_flops_of(config.model, b, pt) * p["batch"] for p in plans
                             for b, pt in p["passes"]), default=0.0)
        trains = config.cfg is not None
        if _should_time(config, worst_forward, rates, device):
            if trains:
                _measure_train(config, device, rates)
            _measure_forward(config, plans, device, rates)
            continue
        config.how = "extrapolated"
        config.source = rates.train_source if trains else rates.forward_source
        if trains:
            config.step_seconds = config.mean_step_flops / rates.train


def _eval_estimate(plan: dict, config: Config, rates: Rates) -> dict:
    """One evaluation's sampling time: its batches times the timed forwards, or its FLOPs at the forward rate."""
    if config.how == "measured":
        per_batch = sum(count * config.forward[(b, pt, plan["batch"])] for (b, pt), count in plan["passes"].items())
        seconds = plan["batches"] * per_batch
    else:
        seconds = plan["samples"] * plan["flops_per_sample"] / rates.forward
    return {"label": plan["label"], "seconds": seconds, "samples": plan["samples"], "batch": plan["batch"],
            "batches": plan["batches"], "passes_per_batch": sum(plan["passes"].values())}


def _not_estimated(run, why: str) -> dict:
    return {"label": run.label, "how": why, "seconds": 0.0, "train_seconds": 0.0, "sample_seconds": 0.0}


def _run_estimate(run, costs: Costs, rates: Rates, out, device) -> dict:
    """A run's estimate: its remaining training steps and its sample sets (0 when it is done)."""
    from elit_bench.suites.runner import is_done

    if isinstance(run, ComputeRun):
        return _not_estimated(run, "not estimated: a measurement without training")
    if run.id in costs.notes:
        return _not_estimated(run, costs.notes[run.id])
    config = costs.configs[costs.key_of[run.id]]
    evals = [_eval_estimate(plan, config, rates) for plan in costs.plans[run.id]]
    steps = config.cfg["steps"] if config.cfg is not None else 0
    steps_left, resumes = _remaining_steps(run, out, steps) if steps else (0, "")
    done = out is not None and is_done(out, run)
    train_seconds = 0.0 if done else steps_left * (config.step_seconds or 0.0)
    sample_seconds = 0.0 if done else sum(e["seconds"] for e in evals)
    return {"label": run.label, "how": "done" if done else config.how, "extrapolated_from": config.source or None,
            "device": str(device), "step_seconds": config.step_seconds, "steps": steps,
            "steps_left": 0 if done else steps_left, "resumes": resumes or None, "train_seconds": train_seconds,
            "sample_seconds": sample_seconds, "seconds": train_seconds + sample_seconds, "evals": evals}


def estimate_runs(runs, out=None, device=None) -> dict:
    """{"runs": {run id: estimate}, "total_seconds", "device", "threads", ...}; see the module docstring."""
    device = torch.device(device) if device is not None else default_device()
    rates, costs = Rates(), Costs.of(runs)
    _time_configs(costs, device, rates)
    result = {run.id: _run_estimate(run, costs, rates, out=out, device=device) for run in runs}
    return {"runs": result, "total_seconds": sum(r["seconds"] for r in result.values()),
            "train_seconds": sum(r["train_seconds"] for r in result.values()),
            "sample_seconds": sum(r["sample_seconds"] for r in result.values()),
            "device": str(device), "threads": torch.get_num_threads(),
            "not_included": "metric computation (features, bootstrap intervals) and the real-data floor"}


def estimate_memory(runs, gpu_gb: float = 80.0, world: int = 1) -> dict:
    """{run id: memory plan} of every training run on GPUs of `gpu_gb` GB (1e9 bytes), `world` processes:
    peak_gib, micro_batch, accumulation (micro-batches per step and GPU), checkpointing, fits, and the parts."""
    from elit_bench.training.memory import GiB, run_memory_plan

    out = {}
    for run in (r for r in runs if isinstance(r, TrainingRun)):
        name, kwargs, cfg = run.model_args
        if cfg["batch"] % world:  # training would refuse it: say so in the plan
            out[run.id] = {"error": f"batch {cfg['batch']} is not divisible by {world} processes"}
            continue
        plan = run_memory_plan(name, kwargs, run.meta_model(), cfg, world, gpu_gb * 1e9)
        out[run.id] = {"peak_gib": plan.peak / GiB, "state_gib": plan.state / GiB,
                       "activations_gib": plan.activations / GiB, "usable_gib": plan.capacity / GiB,
                       "micro_batch": plan.micro_batch, "rank_batch": plan.per_rank_batch,
                       "accumulation": plan.accumulation, "checkpointing": plan.checkpointing, "fits": plan.fits,
                       "gpu_gb": gpu_gb, "world": world}
    return out


def describe_memory(memory: dict) -> str:
    """One line of a run's memory plan for the dry-run plan."""
    if "error" in memory:
        return f"memory/GPU: not planned: {memory['error']}"
    verdict = "fits" if memory["fits"] else "DOES NOT FIT"
    return (f"memory/GPU {memory['peak_gib']:.1f} GiB ({memory['state_gib']:.1f} weights+grads+AdamW+EMA, "
            f"{memory['activations_gib']:.1f} activations) at micro-batch {memory['micro_batch']} "
            f"({memory['accumulation']} per step for a rank batch of {memory['rank_batch']}), activation checkpointing "
            f"{'on' if memory['checkpointing'] else 'off'}: {verdict} {memory['usable_gib']:.1f} GiB usable of a "
            f"{memory['gpu_gb']:g} GB GPU x {memory['world']}")


def duration(seconds: float | None) -> str:
    """3725 -> '1h02m', 800 -> '13m20s', 42.3 -> '42s', 0.25 -> '0.25s', 9e6 -> '104 days'."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:,.0f} days"
    if seconds < 10:
        return f"{seconds:.2g}s"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def describe(estimate: dict) -> str:
    """One line of a run's estimate for the dry-run plan."""
    how = estimate["how"]
    if how == "done" or how.startswith("not estimated"):
        return f"est. {duration(estimate['seconds'])} ({how})"
    parts = []
    if estimate.get("steps"):
        left = estimate["steps_left"]
        steps = f"{left} steps" + (f", {estimate['resumes']}" if estimate.get("resumes") else "")
        parts.append(f"train {duration(estimate['train_seconds'])} = {steps} x {estimate['step_seconds']:.3g} s")
    if estimate["evals"]:
        parts.append(f"sample {duration(estimate['sample_seconds'])} ({len(estimate['evals'])} eval(s))")
    what = "measured" if how == "measured" else f"extrapolated from FLOPs at the rate of {estimate['extrapolated_from']}"
    return f"est. {duration(estimate['seconds'])}: {', '.join(parts)} [{what}, {estimate['device']}]"
