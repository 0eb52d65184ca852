"""`torch.compile` that holds across budgets, patch sizes and random dropping.

Every model's forward is `compute(x, t, y, plan(...))` (`backbones.PlannedModel`):
the plan (checks, token grid, budget, kept latents drawn from the caller's
generators, RoPE and merge tables cached on the device) runs eagerly, and only
`compute` is compiled. Shapes are static (`dynamic=False`): each distinct
(budget, patchifier, batch shape, TeaCache mode) is one graph, compiled the first
time it runs and reused after. Dynamo's recompile limit (8 by default, after which
a function silently runs eagerly) is raised to the number of graphs the caller
says it needs, and `fullgraph=True` turns any graph break, or a graph past the
limit, into an error rather than a quiet fallback to eager.
"""

from __future__ import annotations

import torch
import torch._dynamo
from torch._dynamo.utils import counters

DEFAULT_BACKEND = "inductor"  # what train.compile and the benchmarks use
_FALLBACK = "Dynamo recompile limit exceeded"
_requested = 0  # graphs asked for by every compile_model call of this process (they share `compute`'s code)


def compile_model(model: torch.nn.Module, graphs: int, backend: str | None = None, mode: str | None = None):
    """Compile `model.compute` in place (the instance attribute shadows the method); returns `model`.

    graphs: how many distinct calls the model will see, e.g. the number of
    training variants (budget, patchifier), or budgets x batch shapes when
    sampling. backend (default `DEFAULT_BACKEND`) / mode: as for `torch.compile`
    ("eager" and "aot_eager" check tracing without code generation). DDP may
    wrap the model before or after; deep-copy a model before compiling it, not after.
    """
    global _requested
    if isinstance(graphs, bool) or not isinstance(graphs, int) or graphs < 1:
        raise ValueError(f"graphs must be a positive integer, got {graphs!r}")
    _requested += graphs
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, _requested)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, _requested)
    name = "compute" if hasattr(model, "plan") else "forward"  # a model from outside: its whole forward
    setattr(model, name, torch.compile(getattr(model, name), backend=backend or DEFAULT_BACKEND, mode=mode,
                                       dynamic=False, fullgraph=True))
    return model


def compile_stats() -> dict[str, int]:
    """Dynamo's counts since the last `reset_compile_stats`: graphs compiled, graph breaks, fallbacks to eager."""
    return {"graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "fallbacks": int(sum(n for reason, n in counters["unimplemented"].items() if reason.startswith(_FALLBACK)))}


def reset_compile_stats() -> None:
    """Forget every compiled graph and count from zero (between benchmarked models)."""
    global _requested
    torch._dynamo.reset()
    counters.clear()
    _requested = 0
