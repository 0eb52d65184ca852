"""Guidance (paper Sec. 3.4, Eq. 3; docs/conventions.md#guidance) and the plan of model passes of a sampling run.

With G(x | y; J) the model at budget J (latents per group) and 0 the null
label (`model.num_classes`):

    none : v = G(x|c; J)
    CFG  : v = (l+1) G(x|c; J) - l G(x|0; J)
    AG   : v = (l+1) G(x|c; J) - l G(x|c; J_w)     (autoguidance by a cheaper budget)
    CCFG : v = (l+1) G(x|c; J) - l G(x|0; J_w)     (cheap CFG), J_w <= J

Scale convention: `scale` is the paper's l (Table 1 "+G" is CFG with
l = 0.25); the common "guidance scale" w of `w * cond + (1 - w) * uncond` is
w = l + 1, so l = 0 is unguided. We evaluate Eq. 3 as
`main + l * (main - guide)`, the same expression, which returns `main`
exactly when l = 0 or when the guide equals the main pass (AG at J_w = J).

Each term has its own budget: the main pass uses the step's budget (constant
or a schedule), the guide pass the guide budget J_w (AG, CCFG) or the
step's budget (CFG). A guidance interval [t_lo, t_hi] limits guidance to the
evaluations with t inside it; outside, only the main pass runs.
Baselines (no latent interface) support none and CFG only.

`build_plan` fixes, before sampling, every pass of every evaluation (label,
budget, and whether it runs in full, reuses the trunk residual (TeaCache) or
forecasts the blocks' sublayers (TaylorSeer)); `plan_flops` prices it with
the analytic FLOPs model; `GuidedVelocity` executes it for one batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from elit_bench.errors import UserError, choices_error
from elit_bench.flops import FLOPS_PER_MAC, forward_flops
from elit_bench.flow.sampling import evaluation_times
from elit_bench.flow.schedules import check_budgets
from elit_bench.flow.taylorseer import PassForecast, TaylorSeer, check_alone, grid_positions, modulation_macs
from elit_bench.flow.teacache import cached_forward, skip_plan

MODES = ("none", "cfg", "ag", "ccfg")
BASELINE_MODES = ("none", "cfg")


@dataclass(frozen=True)
class Guidance:
    """mode in MODES; scale = l (w = l + 1); guide_budget = J_w for AG / CCFG; interval = (t_lo, t_hi) or None."""

    mode: str = "none"
    scale: float = 0.0
    guide_budget: int | None = None
    interval: tuple[float, float] | None = None

    def check(self, model, budgets: Sequence[int | None]) -> None:
        """UserError unless this guidance is valid for `model` with the per-step `budgets` (already checked)."""
        if self.mode not in MODES:
            raise choices_error("guidance mode", self.mode, MODES)
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale >= 0):
            raise UserError(f"guidance scale {self.scale!r} must be a number >= 0 (l in Eq. 3; w = l + 1)")
        if self.mode == "none" and (self.scale or self.interval is not None):
            # otherwise ignored, yet recorded (scale l, w = l + 1) as if it had guided the samples
            raise UserError(f"guidance scale {self.scale!r} / interval {self.interval!r} given without guidance: "
                            "choose cfg, ag or ccfg, or drop them")
        if self.interval is not None:
            lo, hi = self.interval
            if not 0.0 <= lo <= hi <= 1.0:
                raise UserError(f"guidance interval {self.interval} must satisfy 0 <= t_lo <= t_hi <= 1")
        if getattr(model, "max_budget", None) is None and self.mode not in BASELINE_MODES:
            raise UserError(f"guidance {self.mode!r} needs a model with budgets (ELIT); "
                            f"{getattr(model, 'name', type(model).__name__)} supports {', '.join(BASELINE_MODES)}")
        if self.mode in ("ag", "ccfg"):
            if self.guide_budget is None:
                raise UserError(f"guidance {self.mode!r} needs a guide budget J_w (--guide-budget), e.g. J/4")
            check_budgets(model, [self.guide_budget], "guide budget")
            low = min(budgets)
            if self.guide_budget > low:
                raise UserError(f"guide budget {self.guide_budget} is above the budget {low}: "
                                f"{self.mode} guides with a cheaper pass, J_w <= J")
        elif self.guide_budget is not None:
            hint = "use ccfg for a cheaper unconditional pass" if self.mode == "cfg" else "choose ag or ccfg"
            raise UserError(f"a guide budget does not apply to guidance {self.mode!r} ({hint})")

    def active(self, t: float) -> bool:
        if self.mode == "none":
            return False
        return self.interval is None or self.interval[0] <= t <= self.interval[1]

    def guide_pass(self, budget: int | None) -> Pass:
        if self.mode == "cfg":
            return Pass(conditional=False, budget=budget)
        return Pass(conditional=self.mode == "ag", budget=self.guide_budget)


@dataclass(frozen=True)
class Pass:
    """One model call: class label or null label, budget, and whether it skips the blocks' work.

    order None (TeaCache, or no caching): a skipped pass adds the trunk
    residual of this pass's last full evaluation to the embedded tokens. order
    O (every pass of a TaylorSeer plan): full passes record each block's
    sublayer outputs; a skipped pass forecasts them by a Taylor expansion of
    order O from this pass's full evaluations (`taylorseer.PassForecast`).
    """

    conditional: bool
    budget: int | None
    skip: bool = False
    order: int | None = None


@dataclass(frozen=True)
class Evaluation:
    """One velocity evaluation of the solver: its step, time, passes (main, then guide if guided) and
    position (the index of t in the time grid: TaylorSeer's expansion variable)."""

    step: int
    t: float
    passes: tuple[Pass, ...]
    position: int


def combine(main: torch.Tensor, guide: torch.Tensor, scale: float) -> torch.Tensor:
    """Eq. 3: (l+1) main - l guide, written main + l (main - guide)."""
    return main + scale * (main - guide)


def build_plan(model, times: list[float], solver: str, budgets: Sequence[int | None], guidance: Guidance,
               teacache: float | None = None, taylorseer: TaylorSeer | None = None) -> list[Evaluation]:
    """Every evaluation of a solve over `times` with its passes; `budgets` has one entry per step.

    TeaCache (its criterion) or TaylorSeer (its schedule) says which
    evaluations skip; a pass skips only if the same pass ran at the previous
    evaluation (a guide pass entering the guidance interval has nothing to
    reuse or forecast from), and with TaylorSeer at the same budget (a budget
    schedule changes the core's latents: the pass runs in full and starts over).
    """
    evals = evaluation_times(times, solver)
    check_alone(teacache, taylorseer)
    if taylorseer is not None:
        skips, order = [not full for full in taylorseer.full(len(evals))], taylorseer.order
    else:
        skips, order = skip_plan(model.t_embedder, [t for _, t in evals], teacache), None
    positions = grid_positions(times, evals)
    plan: list[Evaluation] = []
    for i, (step, t) in enumerate(evals):
        wanted = [Pass(True, budgets[step])]
        if guidance.active(t):
            wanted.append(guidance.guide_pass(budgets[step]))
        before = plan[-1].passes if plan else ()
        passes = tuple(Pass(p.conditional, p.budget, skips[i] and j < len(before)
                            and (order is None or before[j].budget == p.budget), order)
                       for j, p in enumerate(wanted))
        plan.append(Evaluation(step, t, passes, positions[i]))
    if taylorseer is not None:
        check_forecastable(model, plan)
    return plan


def check_forecastable(model, plan: Sequence[Evaluation]) -> None:
    """UserError unless TaylorSeer can forecast every pass of `plan` on `model`, block by block."""
    if not model.runs_dit_blocks:
        raise UserError(f"TaylorSeer forecasts the attention and MLP outputs of each DiT block, but "
                        f"{type(model).__name__} runs its blocks its own way: sample it without TaylorSeer")
    if any(uses_sample_rng(model, p.budget) for ev in plan for p in ev.passes):
        raise UserError("TaylorSeer forecasts each kept latent from earlier evaluations, but random dropping "
                        "keeps other latents at every evaluation: use tail dropping or the full budget")


def plan_flops(model, plan: Sequence[Evaluation], patch_size=None) -> int:
    """Analytic FLOPs per sample of a plan: the sum of its passes' `pass_flops`."""
    total, cache = 0, {}
    for ev in plan:
        for p in ev.passes:
            key = (p.budget, p.skip, p.order is None)
            if key not in cache:
                cache[key] = pass_flops(model, p, patch_size)
            total += cache[key]
    return total


def pass_flops(model, p: Pass, patch_size=None) -> int:
    """Analytic FLOPs per sample of one pass: a full forward, or what a skipped pass still runs.

    TeaCache skip: embed + final. TaylorSeer forecast: everything but the blocks' attention and MLP
    (embed, final, token ops, ELIT's Read and Write) plus each block's adaLN projection. Reusing or
    forecasting features is element-wise work, outside the MAC count (as the model's norms and
    activations are)."""
    if not p.skip:
        return forward_flops(model, p.budget, patch_size=patch_size)
    macs = model.macs(budget=p.budget, patch_size=patch_size)
    if p.order is None:
        return FLOPS_PER_MAC * (macs["embed"] + macs["final"])
    return FLOPS_PER_MAC * (sum(macs.values()) - macs["blocks"] + modulation_macs(model))


def skipped_evaluations(plan: Sequence[Evaluation]) -> int:
    """Evaluations whose main pass skipped its blocks' work (TeaCache reuse, TaylorSeer forecast)."""
    return sum(ev.passes[0].skip for ev in plan)


def guidance_flops_ratio(model, mode: str, budget: int | None = None, guide_budget: int | None = None,
                         patch_size=None) -> float:
    """FLOPs of one guided evaluation in `mode` over CFG's at the same budget.

    E.g. CCFG vs CFG = (F(J) + F(J_w)) / (2 F(J)). For `elit-bench flops`:
    `with torch.device("meta"): m = create_model("ELIT-DiT-XL/2", resolution=256)`,
    then `guidance_flops_ratio(m, "ccfg", 16, 4)`.
    """
    budgets = [budget if budget is not None else getattr(model, "max_budget", None)]
    check_budgets(model, budgets)
    guidance = Guidance(mode, 1.0, guide_budget)
    guidance.check(model, budgets)
    times = [0.0, 1.0]
    ours = plan_flops(model, build_plan(model, times, "euler", budgets, guidance), patch_size)
    cfg = plan_flops(model, build_plan(model, times, "euler", budgets, Guidance("cfg", 1.0)), patch_size)
    return ours / cfg


def uses_sample_rng(model, budget: int | None) -> bool:
    """True when the model draws random latents at this budget (ELIT random dropping below full budget)."""
    interface = getattr(model, "interface", None)
    return getattr(interface, "drop", None) == "random" and budget is not None and budget < model.max_budget


class GuidedVelocity:
    """The velocity the solver integrates for one batch: the plan's passes combined by Eq. 3.

    y (B,) labels; generators: one torch.Generator per sample (its seed's),
    passed to models that draw random latents so that each sample's draws come
    from its own generator, whatever the batch. Each pass keeps its own cache,
    dropped when the pass leaves the plan: TeaCache its last trunk residual,
    TaylorSeer a `PassForecast` of every block's sublayers (started over by a
    full pass at another budget), fed by its full passes, read by its skipped ones.
    """

    def __init__(self, model, y: torch.Tensor, plan: Sequence[Evaluation], scale: float,
                 generators: Sequence[torch.Generator] | None = None, patch_size=None):
        self.model, self.y, self.plan, self.scale = model, y, plan, scale
        self.null = torch.full_like(y, model.num_classes)
        self.generators, self.patch_size = generators, patch_size
        self.uses_rng = generators is not None and any(
            uses_sample_rng(model, p.budget) for ev in plan for p in ev.passes)
        self.keep_residuals = any(p.skip and p.order is None for ev in plan for p in ev.passes)
        self.residuals: dict[int, torch.Tensor] = {}  # TeaCache, by pass
        self.forecasts: dict[int, PassForecast] = {}  # TaylorSeer, by pass

    def __call__(self, x: torch.Tensor, t: float, i: int) -> torch.Tensor:
        ev = self.plan[i]
        for cache in (self.residuals, self.forecasts):
            for j in [j for j in cache if j >= len(ev.passes)]:  # a pass this evaluation does not run
                del cache[j]
        outs = [self._run(x, t, j, p, ev.position) for j, p in enumerate(ev.passes)]
        return outs[0] if len(outs) == 1 else combine(outs[0], outs[1], self.scale)

    def _run(self, x: torch.Tensor, t: float, j: int, p: Pass, position: int) -> torch.Tensor:
        y = self.y if p.conditional else self.null
        tt = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
        generator = list(self.generators) if self.uses_rng else None
        if p.order is not None:  # TaylorSeer: the blocks record or forecast their sublayers
            if not p.skip and (j not in self.forecasts or self.forecasts[j].budget != p.budget):
                self.forecasts[j] = PassForecast(self.model, p.order, p.budget)
            with self.forecasts[j].attached(position, forecasting=p.skip):
                return self.model(x, tt, y, p.budget, self.patch_size, generator)
        out, residual = cached_forward(
            self.model, x, tt, y, p.budget, residual=self.residuals[j] if p.skip else None,
            keep_residual=self.keep_residuals, generator=generator, patch_size=self.patch_size)
        if residual is not None and not p.skip:
            self.residuals[j] = residual
        return out
