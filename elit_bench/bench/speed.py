"""Model speed on this machine: training steps/s and MFU, forward latency across budgets.

Both run the harness's own code paths (`Trainer.train_step`, the models' forward at the
sampler's precision) on random inputs of the real shapes; `elit-bench bench train` and
`elit-bench bench latency` print them, suites use `latency_sweep` for the Fig. 9 points.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from elit_bench.errors import UserError
from elit_bench.models.precision import DEFAULT_SAMPLE_PRECISION, sample_precision


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- device peaks
# Dense bf16 tensor-core peaks in FLOP/s from the vendors' data sheets (no sparsity), matched as whole
# words in torch.cuda.get_device_name(), most specific first; `--peak-tflops` overrides.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
    ("GH200", 989e12), ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12),
)


def peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of `device`: the override, else the table's entry for a known GPU, else None."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if re.search(rf"\b{re.escape(key)}\b", name)), None)


# ---------------------------------------------------------------- training steps/s
def write_random_latents(out: Path, resolution: int, samples: int, num_classes: int = 1000) -> Path:
    """A latent data set of random model-space latents at `resolution` px (4 channels, 8x down, as the
    SD autoencoder): the token count, the data path and the loader are those of real training."""
    from elit_bench.data.latents import LatentWriter, latent_shape_for
    from elit_bench.models.registry import LATENT_DOWNSAMPLE

    shape = latent_shape_for(resolution, LATENT_DOWNSAMPLE)
    writer = LatentWriter(out, {"num_classes": num_classes, "channels": 4, "latent_shape": shape,
                                "resolution": resolution, "autoencoder": None})
    g = torch.Generator().manual_seed(0)
    writer.add(torch.randn(samples, 4, *shape, generator=g).numpy(), torch.randint(num_classes, (samples,), generator=g).numpy())
    return writer.close()


def train_speed(model: str, resolution: int, batch: int, steps: int, warmup: int, multi_budget: bool = False,
                model_kwargs: dict | None = None, compile: bool = False, peak_tflops: float | None = None) -> dict:
    """Steps/s of the real training step (`Trainer.train_step`: forward, backward, AdamW, EMA) on latents.

    The data are random latents at the model's latent resolution (256 px ->
    4x32x32), so the token count is the one of real training. `warmup`
    untimed steps first (allocation, first-call costs, compilation), then
    `steps` timed ones. Checkpointing and logging are not timed. Model FLOPs/s
    counts the analytic training FLOPs of the steps actually drawn (the budgets
    of multi-budget training included); MFU divides it by the device's peak
    dense bf16 FLOP/s (`peak_flops`; None where unknown, e.g. on CPU). With
    `compile`, dynamo's counts: graphs compiled (in all, and during the timed
    steps: a budget first drawn there compiled while timed), graph breaks and
    fallbacks to eager.
    """
    from elit_bench import distributed
    from elit_bench.flops import TRAIN_MULTIPLIER
    from elit_bench.models.compile import compile_stats, reset_compile_stats
    from elit_bench.training.config import build_meta_model, resolve_config
    from elit_bench.training.trainer import Trainer

    if warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {warmup}")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_random_latents(Path(tmp) / "latents", resolution, min(batch * (warmup + steps), 1024))
        spec = {"model": model, "data": str(data), "batch": batch, "steps": warmup + steps,
                "model_kwargs": model_kwargs or {}, "out": str(Path(tmp) / "run"), "progress": False,
                "compile": compile}
        cfg = resolve_config(spec)
        # multi-budget applies to the models that have budgets; a baseline beside them trains as usual
        multi_budget = multi_budget and getattr(build_meta_model(cfg), "max_budget", None) is not None
        if multi_budget:
            cfg = resolve_config({**spec, "multi_budget": True})
        reset_compile_stats()
        trainer = Trainer(cfg, distributed.join())
        for _ in range(warmup):
            trainer.train_step()
        _sync(trainer.device)
        warm = compile_stats()
        start, flops, images = time.perf_counter(), 0.0, 0
        for _ in range(steps):
            _, _, v = trainer.train_step()
            flops += trainer.flops[v] * TRAIN_MULTIPLIER * trainer.batches[v]
            images += trainer.batches[v]
        _sync(trainer.device)
        seconds = time.perf_counter() - start
    peak = peak_flops(trainer.device, peak_tflops)
    stats = compile_stats()
    latent_shape = [trainer.model.in_channels, *trainer.model.input_shape]
    return {"model": model, "resolution": resolution, "latent_shape": latent_shape, "batch": batch,
            "multi_budget": multi_budget, "compile": compile,
            "params": sum(p.numel() for p in trainer.model.parameters()), "steps_per_s": steps / seconds,
            "images_per_s": images / seconds, "model_tflops_per_s": flops / seconds / 1e12,
            "mfu": flops / seconds / peak if peak else None, "peak_tflops": peak / 1e12 if peak else None,
            **({"graphs": stats["graphs"], "graphs_compiled_while_timed": stats["graphs"] - warm["graphs"],
                "graph_breaks": stats["graph_breaks"], "fallbacks": stats["fallbacks"]} if compile else {}),
            "timed_steps": steps, "device": str(trainer.device)}


# ---------------------------------------------------------------- forward latency
def captured_forward(model: torch.nn.Module, x, t, y, budget=None):
    """One forward pass at `budget` captured as a CUDA graph -> a function that replays it on x, t, y.

    The plan (grid, tables, kept latents) is made once, before capture; the
    replay launches the whole pass at once, so low budgets are not bound by
    kernel launches. Cheap enough for the sampler, but only the benchmark uses it.
    """
    if x.device.type != "cuda":
        raise UserError("--cuda-graphs needs a CUDA device; drop it on CPU")
    plan = model.plan(x, budget)
    stream = torch.cuda.Stream(x.device)
    stream.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(stream):  # warm up on a side stream, as capture requires
        for _ in range(2):
            model.compute(x, t, y, plan)
    torch.cuda.current_stream(x.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model.compute(x, t, y, plan)
    return graph.replay


def forward_latency(model: torch.nn.Module, batch: int, budget=None, warmup: int = 2, repeats: int = 5,
                    precision: str = DEFAULT_SAMPLE_PRECISION, cuda_graph: bool = False) -> float:
    """Median wall seconds of one forward pass of `batch` samples at the sampler's `precision`.

    Each pass is timed between device synchronisations after `warmup` untimed
    ones; `cuda_graph` replays a captured graph (`captured_forward`) instead.
    """
    if repeats < 1 or warmup < 0:
        raise UserError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    device = next(model.parameters()).device
    x = torch.randn(batch, model.in_channels, *model.input_shape, device=device)
    t, y = torch.rand(batch, device=device), torch.zeros(batch, dtype=torch.long, device=device)
    times = []
    with torch.inference_mode(), sample_precision(precision, device):
        run = captured_forward(model, x, t, y, budget) if cuda_graph else lambda: model(x, t, y, budget=budget)
        for i in range(warmup + repeats):
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def latency_sweep(name: str, resolution: int, budgets: list, batch: int, warmup: int, repeats: int,
                  model_kwargs: dict | None = None, progress: bool = True, precision: str = DEFAULT_SAMPLE_PRECISION,
                  compile: bool = False, cuda_graphs: bool = False) -> list[dict]:
    """Forward ms per sample and analytic GFLOPs at each budget (None = the full budget) of one model.

    compile: `compile_model` with one graph per budget (compiled in the warmup passes); cuda_graphs: each
    budget's pass captured and replayed (CUDA only).
    """
    from elit_bench.flops import forward_flops
    from elit_bench.models import create_model
    from elit_bench.models.compile import compile_model, reset_compile_stats

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cuda_graphs and device.type != "cuda":
        raise UserError("--cuda-graphs needs a CUDA device; drop it on CPU")
    model = create_model(name, resolution=resolution, **(model_kwargs or {})).to(device).eval()
    for budget in budgets:
        model.macs(budget=budget)  # UserError for a budget outside 1..J before any timing
    if compile:
        reset_compile_stats()
        compile_model(model, graphs=len(budgets))
    rows = []
    for budget in tqdm(budgets, desc=f"bench latency {name}", unit="budget", dynamic_ncols=True, disable=not progress):
        seconds = forward_latency(model, batch, budget, warmup, repeats, precision, cuda_graphs)
        rows.append({"model": name, "resolution": resolution, "budget": budget or model.max_budget,
                     "batch": batch, "forward_ms": 1e3 * seconds / batch,
                     "forward_gflops": forward_flops(model, budget) / 1e9, "precision": precision,
                     "compile": compile, "cuda_graphs": cuda_graphs, "device": str(device)})
    return rows
