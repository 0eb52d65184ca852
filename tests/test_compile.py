"""torch.compile across budgets: every budget (tail and random dropping) keeps a compiled graph, no graph
breaks, no silent fallback to eager, outputs equal to eager. Dynamo's "eager" backend traces exactly what
inductor would compile, without the slow CPU code generation."""

import pytest
import torch
import torch._dynamo

from elit_bench.models import create_model
from elit_bench.models.compile import compile_model, compile_stats, reset_compile_stats

TINY = dict(input_size=8, in_channels=4, num_classes=10, hidden_size=32, depth=3, num_heads=2)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    reset_compile_stats()
    with torch._dynamo.config.patch(recompile_limit=8, accumulated_recompile_limit=256):
        yield
    reset_compile_stats()


def inputs(seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, 8, 8, generator=g), torch.rand(batch, generator=g),
            torch.randint(10, (batch,), generator=g))


@pytest.mark.slow
def test_sixteen_budgets_and_random_dropping_all_run_compiled_and_match_eager():
    torch.manual_seed(0)
    # J = 16 latents for one 4x4 group: 16 tail budgets, twice dynamo's default limit of 8 graphs; one
    # block (the latent core) keeps the tracing short
    small = {**TINY, "depth": 1, "blocks": (0, 1, 0), "group_size": 4}
    model = create_model("ELIT-DiT-S/2", **small, drop="tail")
    random = create_model("ELIT-DiT-S/2", **small, drop="random")
    random.load_state_dict(model.state_dict())
    x, t, y = inputs()
    tail_budgets, random_budgets = list(range(1, 17)), [1, 6, 11, 15]
    gen = lambda b: [torch.Generator().manual_seed(100 + b), torch.Generator().manual_seed(200 + b)]  # noqa: E731
    with torch.no_grad():
        eager = {("tail", b): model(x, t, y, budget=b) for b in tail_budgets}
        eager.update({("random", b): random(x, t, y, budget=b, generator=gen(b)) for b in random_budgets})
        compile_model(model, graphs=len(tail_budgets), backend="eager")
        compile_model(random, graphs=len(random_budgets), backend="eager")
        for b in tail_budgets:
            torch.testing.assert_close(model(x, t, y, budget=b), eager["tail", b], rtol=1e-5, atol=1e-6)
        for b in random_budgets:  # the keep indices come from the plan, drawn by the per-sample generators
            torch.testing.assert_close(random(x, t, y, budget=b, generator=gen(b)), eager["random", b],
                                       rtol=1e-5, atol=1e-6)
        after_first = compile_stats()
        for b in tail_budgets:  # a second round reuses every graph
            model(x, t, y, budget=b)
    assert after_first == {"graphs": 20, "graph_breaks": 0, "fallbacks": 0}
    assert compile_stats() == after_first


@pytest.mark.parametrize("name, calls", [
    ("DiT-S/2", [{}]),
    ("UViT-S/2", [{}]),
    ("HDiT-S/2", [{}]),
    ("SiT-S/2", [{}]),
    ("MultiPatch-DiT-S/2", [{}, {"patch_size": 4}]),
    ("ELIT-HDiT-S/2", [{"budget": 2}, {"budget": 5}]),  # latent merges in the core
    ("ELIT-UViT-S/2", [{"budget": 1}, {}]),
])
def test_every_model_compiles_in_one_graph_per_call_shape_and_matches_eager(name, calls):
    torch.manual_seed(0)
    kwargs = {"ELIT-HDiT-S/2": dict(depth=4, blocks=(1, 2, 1), merge_at=1, split_at=2, latents_per_group=8),
              "ELIT-UViT-S/2": dict(group_size=2)}.get(name, {})
    model = create_model(name, **{**TINY, **kwargs})
    x, t, y = inputs()
    with torch.no_grad():
        eager = [model(x, t, y, **c) for c in calls]
        compile_model(model, graphs=len(calls), backend="eager")
        for c, want in zip(calls, eager):
            torch.testing.assert_close(model(x, t, y, **c), want, rtol=1e-5, atol=1e-6)
    assert compile_stats() == {"graphs": len(calls), "graph_breaks": 0, "fallbacks": 0}


def test_training_step_compiles_and_gradients_match_eager():
    torch.manual_seed(0)
    model = create_model("ELIT-DiT-S/2", **TINY, group_size=2, drop="random")
    x, t, y = inputs()

    def grads(m):
        m.zero_grad()
        m(x, t, y, budget=2, generator=torch.Generator().manual_seed(5)).square().mean().backward()
        return [p.grad.clone() for p in m.parameters() if p.grad is not None]

    eager = grads(model)
    compile_model(model, graphs=1, backend="aot_eager")  # aot_eager: the compiled backward too
    for got, want in zip(grads(model), eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert compile_stats()["graphs"] == 1 and compile_stats()["graph_breaks"] == 0


def test_more_call_shapes_than_declared_fail_loudly_instead_of_running_eager():
    model = create_model("ELIT-DiT-S/2", **TINY, group_size=2)
    x, t, y = inputs()
    with torch._dynamo.config.patch(recompile_limit=1):
        compile_model(model, graphs=1, backend="eager")
        with torch.no_grad():
            model(x, t, y, budget=1)
            with pytest.raises(Exception, match="fullgraph"):  # dynamo's FailOnRecompileLimitHit
                model(x, t, y, budget=2)
    assert compile_stats()["fallbacks"] == 1
