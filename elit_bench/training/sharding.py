"""Sharded training (`train.sharding: fsdp`): PyTorch FSDP2 for models whose training state does not fit one GPU.

Under DDP (the default) every rank holds the whole training state: fp32 weights, gradients, AdamW's two
moments and the EMA, 20 bytes a parameter (a 20B-parameter MM-DiT: 400 GB). Under FSDP each rank holds
1/world of each: `fully_shard` is applied to every block of every backbone, then to the root (the
embeddings, the final layer, ELIT's Read and Write), so a block's parameters are all-gathered just before
its forward (and again for its backward) and freed after, and its gradients are reduce-scattered as soon
as they are computed. The EMA is sharded the same way (it is never run in training: its shards are
updated from the model's, element by element), and so is AdamW's state, since the optimizer is built
over the sharded parameters.

Mixed precision follows `train.precision`: where the run computes in bf16 (`trainer.computes_in_bf16`)
the gathered parameters are bf16 and gradients are reduced in fp32; the sharded parameters, AdamW's state
and the EMA stay fp32. Module inputs are not cast (autocast stays on, as under DDP): the timestep and
the residual stream stay fp32, and the matmuls see the same bf16 weights autocast would give them.

Micro-batches: every chunk's backward reduce-scatters its gradients into the fp32 shards (FSDP2's
default), instead of deferring the reduction to the last chunk as DDP's `no_sync` does: deferring would
keep the whole model's unsharded gradients on every GPU, what sharding exists to avoid.

Checkpoints: each save writes a sharded checkpoint (`torch.distributed.checkpoint`, every rank writing
its shards) of model, EMA and optimizer to `checkpoints/sharded/step_XXXXXXX/`, then rank 0 writes the
harness's single-file `last.pt` with the model and EMA gathered (what sampling and evaluation read),
the small state (scheduler, step, data position, RNG) and the sharded folder's name in `sharded`, no
optimizer. last.pt is replaced atomically, so it always names a complete sharded folder; folders it no
longer names are removed, except those of `step_XXXXXXX.pt` snapshots (each stays resumable). A sharded
checkpoint loads at any world size, one process included: it is resharded on load. One process
(no process group) runs the model unsharded and reads and writes the same checkpoints.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path

import torch

from elit_bench.distributed import Dist
from elit_bench.errors import UserError

SHARDED = "sharded"  # checkpoints/sharded/step_XXXXXXX: one sharded checkpoint per saved step


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The units FSDP shards apart from the root: every block of every backbone in `model`."""
    from elit_bench.models.backbones import Backbone

    return [block for module in model.modules() if isinstance(module, Backbone) for block in module.blocks]


def check_sharding(cfg: dict, model: torch.nn.Module) -> None:
    """UserError for what `sharding: fsdp` cannot run (model: the run's model, on the meta device)."""
    if cfg["sharding"] != "fsdp":
        return
    if not getattr(model, "calls_blocks", True):  # DyDiT's training pass calls its blocks' layers directly
        raise UserError(f"train.sharding: fsdp gathers each block's weights in the block's forward, but {cfg['model']} "
                        "runs its blocks' sublayers itself; use sharding: ddp")
    if cfg["compile"]:
        raise UserError("train.sharding: fsdp with train.compile is not supported (the compiled step would trace "
                        "FSDP's gathers); set compile: false, or sharding: ddp")


def shard(modules: list[torch.nn.Module | None], dist: Dist, bf16: bool) -> None:
    """`fully_shard` each block, then the root, of every module given (model, EMA, teacher; None skipped), in
    place, over all ranks; parameters become DTensors holding this rank's shard, on `dist.device`. Modules are
    left whole when there is one process. bf16: gather parameters in bf16, reduce gradients in fp32."""
    if dist.world == 1:
        return
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(dist.device.type, (dist.world,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32,
                                  cast_forward_inputs=False)
    for module in (m for m in modules if m is not None):
        for block in blocks(module):
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(module, mesh=mesh, mp_policy=policy)


def gathered(module: torch.nn.Module) -> dict:
    """The full state dict of a (sharded) module on rank 0, on the CPU; {} on the other ranks. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def folder_name(step: int) -> str:
    """The sharded checkpoint of `step`, relative to the checkpoints folder."""
    return f"{SHARDED}/step_{step:07d}"


def _sharded_state(model, ema, optimizer) -> dict:
    """Model, EMA and optimizer state dicts keyed by parameter name, holding this rank's shards: what the
    sharded checkpoint stores, and what it loads into (which initialises AdamW's state if still empty)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "ema": get_model_state_dict(ema), "optimizer": optimizer_state}


@contextlib.contextmanager
def _one_process_quiet(dist: Dist):
    """Silence torch's warning that a checkpoint without a process group is read or written by one process:
    that is what one process means here."""
    with warnings.catch_warnings():
        if dist.world == 1:
            warnings.filterwarnings("ignore", message=".*assuming the intent is to (save|load) in a single process")
        yield


def save_sharded(model, ema, optimizer, folder: Path, dist: Dist) -> None:
    """Every rank writes its shards of model, EMA and optimizer to `folder` (a leftover there, from a save
    killed before last.pt named it, is removed first). Collective."""
    import torch.distributed.checkpoint as dcp

    if dist.is_main and folder.exists():
        shutil.rmtree(folder)
    dist.barrier()
    with _one_process_quiet(dist):
        dcp.save(_sharded_state(model, ema, optimizer), checkpoint_id=folder, no_dist=dist.world == 1)


def load_sharded(model, ema, optimizer, folder: Path, dist: Dist) -> None:
    """Load model, EMA and optimizer from the sharded checkpoint `folder`, written at any world size. Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    if not (folder / ".metadata").is_file():
        raise UserError(f"sharded checkpoint {str(folder)!r} is missing or incomplete (no .metadata): its last.pt "
                        "cannot be resumed; restore the folder, or delete the run directory and retrain")
    state = _sharded_state(model, ema, optimizer)
    with _one_process_quiet(dist):
        dcp.load(state, checkpoint_id=folder, no_dist=dist.world == 1)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    set_model_state_dict(ema, state["ema"])


def prune(checkpoints: Path, keep: str) -> None:
    """Remove the sharded checkpoints other than `keep` (relative to `checkpoints`) and those of snapshots."""
    for folder in sorted((checkpoints / SHARDED).glob("step_*")):
        if folder.relative_to(checkpoints).as_posix() != keep and not (checkpoints / f"{folder.name}.pt").exists():
            shutil.rmtree(folder)
