"""Peak GPU memory of a training step, and the micro-batch (and activation checkpointing) that fits a GPU.

Per GPU, a training step holds

- the training state: fp32 weights, their gradients, AdamW's two moments and the EMA copy (20 bytes a
  parameter), plus DDP's gradient buckets (4 more) when there are several processes. There is no separate
  fp32 master copy: the weights are fp32 and autocast casts them per op (the bf16 casts it keeps for
  backward are in the activations' fixed part below). Under `train.sharding: fsdp` (`training.sharding`)
  a GPU holds 1/world of those 20 bytes a parameter, plus the parameters FSDP gathers whole at a time:
  the root's (embeddings, final layer, Read/Write: gathered for the whole step) and two blocks' (the one
  running and the next, prefetched) in the compute dtype, and one block's gradients before their
  reduce-scatter (fp32);
- the activations saved for backward: `fixed + per_sample * micro_batch`.

The activations are measured, not modelled: one forward of the run's real model at its real input size
and costliest variant (full budget, finest patch), under the run's autocast, on fake tensors
(`torch._subclasses.fake_tensor.FakeTensorMode`: shapes and dtypes propagate, nothing is computed or
allocated, so DiT-XL/2 at 512 px takes a second or two on a CPU), with a saved-tensor hook summing the
distinct storages autograd keeps for backward (the weights themselves excluded). Two batch sizes give
the per-sample and the fixed part. CPU autocast stands in for CUDA's (same bf16 casts for matmuls, fp32
norms); attention is traced as the fused kernel that keeps only its output and log-sum-exp, which is
what CUDA runs in bf16.

With activation checkpointing (`Backbone.run_blocks`, one checkpoint per block) a block keeps only its
input, and backward recomputes one block at a time: saved = outside the blocks + every block's input +
the largest block's own saved tensors, each attributed from the same trace.

A GPU's memory is not all usable: `USABLE_FRACTION` of it is planned for, the rest left to the CUDA
context, the allocator's fragmentation and backward's transient buffers.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import warnings
from dataclasses import dataclass

import torch
import torch.utils._pytree

USABLE_FRACTION = 0.85
GiB = 2 ** 30
STATE_BYTES_PER_PARAM = 4 + 4 + 8 + 4  # weights, gradients, AdamW moments, EMA (all fp32)
DDP_BYTES_PER_PARAM = 4  # DDP's gradient buckets


@dataclass(frozen=True)
class Activations:
    """Bytes saved for backward by one forward: fixed + per_sample * batch, without and with checkpointing."""

    per_sample: int
    fixed: int
    per_sample_checkpointed: int
    fixed_checkpointed: int

    def at(self, batch: int, checkpointing: bool) -> int:
        if checkpointing:
            return self.fixed_checkpointed + self.per_sample_checkpointed * batch
        return self.fixed + self.per_sample * batch


@contextlib.contextmanager
def _device_tables_restored():
    """Empty the models' caches of device tables (RoPE, merge indices) after a fake trace, which fills them
    with fake tensors that a real forward must not get."""
    from elit_bench.models import backbones

    try:
        yield
    finally:
        for cache in (getattr(backbones, name, None) for name in ("device_rope", "device_unmerge")):
            if cache is not None:
                cache.cache_clear()


def _trace(name: str, kwargs: dict, variant: tuple, bf16: bool, batches=(1, 2)) -> list[tuple[int, int, list[int]]]:
    """Fake forwards at each batch size -> [(bytes saved outside the blocks, sum of the blocks' input bytes,
    bytes each block saves)]. The blocks of a backbone are alike: each distinct input shape is traced once."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from elit_bench.models import create_model
    from elit_bench.models.backbones import Backbone

    current, seen, tally, done = None, {}, {}, {}  # seen: storage -> bytes
    touched, held = set(), []  # storages saved during the block being traced; tensors credited as saved

    def enter(module, args):
        nonlocal current
        current = id(module)
        tally["inputs"] += args[0].numel() * args[0].element_size()

    def leave(module, args, output):
        nonlocal current
        current = None

    def memoised(block, key_prefix):
        """The block's forward, run once per input shape: a block like one already traced (same backbone,
        same input shape and dtype) is credited with its bytes and returns a stand-in of its output. The
        storages of its arguments (tokens, conditioning, RoPE tables) and output are kept apart: other blocks
        share them, and a storage is held once."""
        run = block.forward

        def forward(x, *args, **kw):
            shared = [t for t in torch.utils._pytree.tree_leaves((x, args, kw)) if isinstance(t, torch.Tensor)]
            key = (key_prefix, *((tuple(t.shape), t.dtype) for t in shared))
            if key not in done:
                before = set(seen)
                touched.clear()
                out = run(x, *args, **kw)
                new = seen.keys() - before
                apart = [t.untyped_storage()._cdata for t in (*shared, out)]
                own = sum(seen[k] for k in new - set(apart))
                done[key] = (own, [k in touched for k in apart], out.dtype)
                return out
            own, saved, dtype = done[key]
            out = x.to(dtype).clone()  # shape and dtype are all later ops see; clone saves nothing
            for was_saved, tensor in zip(saved, (*shared, out)):
                storage = tensor.untyped_storage()
                if was_saved and storage._cdata not in seen:
                    seen[storage._cdata] = storage.nbytes()
                    own += storage.nbytes()
                    held.append(tensor)  # as autograd would: a freed storage's address could come back
            tally[id(block)] = own
            return out
        return forward

    def pack(tensor):
        storage = tensor.untyped_storage()
        touched.add(storage._cdata)
        if storage._cdata not in seen:  # a storage saved by several ops is held once
            seen[storage._cdata] = storage.nbytes()
            key = "outside" if current is None else current
            tally[key] = tally.get(key, 0) + storage.nbytes()
        return tensor

    with torch.device("meta"):  # built without initialising weights, then made fake
        model = create_model(name, **kwargs).train()
    budget, patch = variant
    forward = {k: v for k, v in (("budget", budget), ("patch_size", patch)) if v is not None}
    results = []
    # real tensors the models cache (position tables) enter as fake; the fake tables made here leave no trace
    with FakeTensorMode(allow_non_fake_inputs=True), torch.random.fork_rng(devices=[]), _device_tables_restored(), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CPU kernels' notes on bf16 paths: not the GPU's concern
        model = model.to_empty(device="cpu")
        weights = {p.untyped_storage()._cdata for p in model.parameters()}  # weights are not activations
        for backbone in (m for m in model.modules() if isinstance(m, Backbone)):
            for block in backbone.blocks:
                block.register_forward_pre_hook(enter)
                block.register_forward_hook(leave)
                block.forward = memoised(block, id(backbone))
        for batch in batches:
            seen, tally = dict.fromkeys(weights, 0), {"outside": 0, "inputs": 0}
            x = torch.empty(batch, model.in_channels, *model.input_shape)
            t, y = torch.rand(batch), torch.zeros(batch, dtype=torch.long)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), \
                    torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                out = model(x, t, y, **forward)
            del out
            outside, inputs = tally.pop("outside"), tally.pop("inputs")
            results.append((outside, inputs, list(tally.values())))
    return results


@functools.cache
def _measure(key: str) -> Activations:
    name, kwargs, variant, bf16 = json.loads(key)
    full, checkpointed = [], []
    for outside, inputs, blocks in _trace(name, kwargs, tuple(variant), bf16):
        full.append(outside + sum(blocks))
        checkpointed.append(outside + inputs + max(blocks, default=0))
    return Activations(full[1] - full[0], 2 * full[0] - full[1],
                       checkpointed[1] - checkpointed[0], 2 * checkpointed[0] - checkpointed[1])


def measure_activations(name: str, kwargs: dict, variant: tuple = (None, None), bf16: bool = True) -> Activations:
    """Activations saved for backward by `create_model(name, **kwargs)` at `variant` (budget, patch size);
    measured once per process and configuration."""
    return _measure(json.dumps([name, kwargs, list(variant), bf16], sort_keys=True))


@dataclass(frozen=True)
class MemoryPlan:
    """What one GPU holds at the chosen micro-batch: bytes by part, and whether it fits."""

    micro_batch: int
    checkpointing: bool
    state: int  # weights, gradients, AdamW, EMA (+ DDP buckets)
    activations: int
    capacity: int  # the usable bytes of the GPU (USABLE_FRACTION of its memory)
    per_rank_batch: int

    @property
    def peak(self) -> int:
        return self.state + self.activations

    @property
    def fits(self) -> bool:
        return self.peak <= self.capacity

    @property
    def accumulation(self) -> int:
        return math.ceil(self.per_rank_batch / self.micro_batch)


def device_memory(device: torch.device) -> int | None:
    """Total memory of a CUDA device in bytes; None for the CPU (no limit planned for)."""
    return torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None


def gathered_bytes(model, bf16: bool) -> int:
    """Bytes of the parameters (and gradients) FSDP holds whole at a time, on top of the shards: the root's own
    and two blocks' in the compute dtype, and one block's fp32 gradients (see the module docstring)."""
    from elit_bench.training.sharding import blocks

    sizes = [sum(p.numel() for p in block.parameters()) for block in blocks(model)]
    root = sum(p.numel() for p in model.parameters()) - sum(sizes)
    largest = max(sizes, default=0)
    return (root + 2 * largest) * (2 if bf16 else 4) + 4 * largest


def state_bytes(num_params: int, world: int, gathered: int | None = None) -> int:
    """Training state on one GPU; `gathered`: FSDP's whole parameters (`gathered_bytes`), None under DDP."""
    if gathered is not None and world > 1:
        return math.ceil(num_params * STATE_BYTES_PER_PARAM / world) + gathered
    return num_params * (STATE_BYTES_PER_PARAM + (DDP_BYTES_PER_PARAM if world > 1 else 0))


def plan_memory(activations: Activations, num_params: int, per_rank_batch: int, world: int, gpu_bytes: float,
                micro_batch="auto", checkpointing="auto", gathered: int | None = None) -> MemoryPlan:
    """The micro-batch and checkpointing a run uses on a GPU of `gpu_bytes`.

    micro_batch / checkpointing: the run's settings; "auto" picks. An automatic micro-batch is the largest
    that fits, then evened out over the same number of chunks (a rank batch of 48 that fits 20 at a time
    runs as 3 x 16); automatic checkpointing is on only when not even a micro-batch of 1 fits without it.
    When nothing fits, the plan says so (`fits` False) at a micro-batch of 1. gathered: as for `state_bytes`.
    """
    state, capacity = state_bytes(num_params, world, gathered), int(gpu_bytes * USABLE_FRACTION)

    def largest(ckpt: bool) -> int:
        if micro_batch != "auto":
            return min(micro_batch, per_rank_batch)
        free = capacity - state - activations.at(0, ckpt)
        per_sample = activations.per_sample_checkpointed if ckpt else activations.per_sample
        return min(per_rank_batch, max(0, free // max(per_sample, 1)))

    options = [checkpointing] if checkpointing != "auto" else [False, True]
    for ckpt in options:
        micro = largest(ckpt)
        if micro >= 1 and state + activations.at(micro, ckpt) <= capacity:
            break
    else:
        ckpt, micro = options[-1], max(1, largest(options[-1]))
    if micro_batch == "auto":
        micro = math.ceil(per_rank_batch / math.ceil(per_rank_batch / micro))
    return MemoryPlan(micro, ckpt, state, activations.at(micro, ckpt), capacity, per_rank_batch)


def run_memory_plan(name: str, kwargs: dict, model, cfg: dict, world: int, gpu_bytes: float) -> MemoryPlan:
    """`plan_memory` for a training config `cfg` of `create_model(name, **kwargs)` (`model`, on any device, gives
    the parameter count and variants): the costliest variant's activations under the run's GPU precision, its
    largest rank batch, the training state sharded under `sharding: fsdp`."""
    from elit_bench.flops import forward_flops
    from elit_bench.training.config import training_variants, variant_batches

    variants = training_variants(model, cfg)
    batches = variant_batches(model, variants, cfg["batch"], cfg["batch_mode"], world)
    costliest = max(variants, key=lambda v: forward_flops(model, v[0], patch_size=v[1]))
    bf16 = cfg["precision"] in ("auto", "bf16")  # what the run computes in on a GPU (`trainer.autocast_for`)
    activations = measure_activations(name, kwargs, costliest, bf16)
    num_params = sum(p.numel() for p in model.parameters())
    gathered = gathered_bytes(model, bf16) if cfg.get("sharding") == "fsdp" else None
    return plan_memory(activations, num_params, max(batches) // world, world, gpu_bytes, cfg["micro_batch"],
                       cfg["activation_checkpointing"], gathered)
