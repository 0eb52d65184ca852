"""The training loop: rectified flow, multi-budget / multi-patch draws, EMA, DDP, exact resume.

Every random choice of an iteration comes from generators seeded by
(seed, step) (`derive_seed`), never from global RNG state:

- the variant (budget J~, patchifier) and hence the batch size, identical on
  every rank;
- t, noise and class dropout, drawn for the whole global batch and sliced
  per rank, so N processes see exactly the samples one process would;
- the kept latents of random dropping;
- the data order: a seeded permutation per epoch (and, for data stored with
  flips, which view of each sample), consumed by global batches and sharded
  over ranks, so the data position is just (epoch, index);
- for data stored as posteriors, the latent drawn from each (like the noise).

None of them depends on `micro_batch` (gradient accumulation): a rank's
batch is drawn whole and then run in chunks. A step whose gradient is not
finite is skipped (no weight or EMA update) but still spends its step, its
data and its learning-rate schedule, so resume stays exact;
`max_nonfinite_steps` such steps in a row stop the run.

Resume is therefore exact: a checkpoint holds model, EMA, optimizer,
scheduler, step and data position (and the global RNG states, for code that
does use them), and a resumed run replays the same stream bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from elit_bench import distributed
from elit_bench.checkpoint import atomic_write, checkpoint_config, load_checkpoint, read_text, save_checkpoint
from elit_bench.data import build_dataset, prompt_table
from elit_bench.data.base import Prefetcher
from elit_bench.errors import UserError
from elit_bench.flops import TRAIN_MULTIPLIER, train_forward_flops
from elit_bench.flow.loss import distilled_flow_loss, rectified_flow_loss, sample_timesteps
from elit_bench.tracking import Tracker
from elit_bench.training import sharding
from elit_bench.training.config import (
    identity,
    resolve_config,
    teacher_forward_flops,
    training_variants,
    variant_batches,
)
from elit_bench.training.memory import GiB, device_memory, run_memory_plan
from elit_bench.yamlconfig import parse_yaml

# independent random streams derived from the run seed
STREAM_INIT, STREAM_DATA, STREAM_VARIANT, STREAM_NOISE, STREAM_DROP, STREAM_LATENT = range(6)
CONFIG_FILE, CHECKPOINT = "config.yaml", Path("checkpoints") / "last.pt"


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from non-negative integers (run seed, stream, step ...), well mixed."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def generator(device, *parts: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))


class DataOrder:
    """Seeded permutation per epoch, consumed in order across epoch boundaries.

    With `views` > 1 (data stored also flipped) each epoch also draws which view each sample is seen in,
    and indices come as sample + view * size (`data.base.Dataset.views`).
    """

    def __init__(self, size: int, seed: int, epoch: int = 0, index: int = 0, views: int = 1):
        self.size, self.seed, self.epoch, self.index, self.views = size, seed, epoch, index, views
        self._perm_epoch, self._perm = None, None

    def perm(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            gen = generator("cpu", self.seed, STREAM_DATA, self.epoch)
            perm = torch.randperm(self.size, generator=gen)
            if self.views > 1:  # drawn after the permutation: data with one view keeps its order
                perm = perm + self.size * torch.randint(self.views, (self.size,), generator=gen)
            self._perm, self._perm_epoch = perm.numpy(), self.epoch
        return self._perm

    def take(self, n: int) -> np.ndarray:
        """The next n dataset indices."""
        out = []
        while n:
            chunk = self.perm()[self.index:self.index + n]
            out.append(chunk)
            n -= len(chunk)
            self.index += len(chunk)
            if self.index == self.size:
                self.epoch, self.index = self.epoch + 1, 0
        return np.concatenate(out)

    def peek(self, n: int) -> np.ndarray:
        """The next n dataset indices, without consuming them (for prefetching)."""
        epoch, index = self.epoch, self.index
        try:
            return self.take(n)
        finally:
            self.epoch, self.index = epoch, index

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}


# ---------------------------------------------------------------- RNG state as plain containers (weights_only)
def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss],
             "numpy": [name, keys.tolist(), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def warmup_factor(warmup: int):
    """LR multiplier: linear warmup over `warmup` steps, then constant (the paper's schedule)."""
    return lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0


def computes_in_bf16(precision: str, device: torch.device) -> bool:
    """Whether a run computes in bf16: for "bf16", and for "auto" on CUDA."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_for(precision: str, device: torch.device):
    """bf16 autocast where the run computes in bf16 (`computes_in_bf16`); fp32 (no autocast) otherwise."""
    bf16 = computes_in_bf16(precision, device)
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def optimization_step(net, model, ema, optimizer, autocast, x1, y, t, noise, mask=None, grad_clip=None,
                      ema_decay: float = 0.9999, micro_batch: int | None = None, teacher=None,
                      distill_weight: float | None = None, parts: dict | None = None,
                      **forward_kwargs) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One iteration's work after the batch is drawn: forward and rectified-flow loss (under `autocast`) and
    backward, gradient clipping, then the optimizer step and the EMA update, unless the gradient is not finite.

    `net` runs the forward (the model, or its DDP / compiled wrapper). The batch runs in chunks of
    `micro_batch` samples (None: at once), each chunk's loss weighted by its share of the batch, so the
    accumulated gradient is the whole batch's up to float rounding; DDP all-reduces once, in the last
    chunk's backward. A `generator` in forward_kwargs (random dropping's kept latents, one draw shared by
    the batch) restarts from its state for every chunk, so every chunk keeps the latents the whole batch
    would. A non-finite gradient norm (a non-finite loss gives one; under DDP the norm is the same on every
    rank, so all ranks agree) skips the optimizer and EMA updates: deciding that costs one host sync per
    step. With a `teacher` the loss is the rectified-flow loss plus `distill_weight` x the distillation loss
    (`flow.loss.distillation_loss`, one student forward for both), and `parts`, if given, receives the two
    terms as "rf_loss" and "distill_loss". Returns (loss, grad norm before clipping, whether the weights were
    updated)."""
    n = len(x1)
    size = micro_batch or n
    generator = forward_kwargs.get("generator")
    generator_state = generator.get_state() if isinstance(generator, torch.Generator) else None
    no_sync = getattr(net, "no_sync", None)
    optimizer.zero_grad(set_to_none=True)
    loss, terms = 0.0, {}
    for start in range(0, n, size):
        chunk = slice(start, start + size)
        if generator_state is not None:
            generator.set_state(generator_state)
        last, weight = start + size >= n, min(size, n - start) / n
        with contextlib.nullcontext() if last or no_sync is None else no_sync():
            with autocast:
                batch = (net, x1[chunk], y[chunk], t[chunk], noise[chunk], mask)
                if teacher is None:
                    part = rectified_flow_loss(*batch, **forward_kwargs)
                else:
                    rf, distill = distilled_flow_loss(*batch, teacher=teacher, **forward_kwargs)
                    part = rf + distill_weight * distill
                    for name, term in (("rf_loss", rf), ("distill_loss", distill)):
                        terms[name] = terms.get(name, 0.0) + term.detach() * weight
                extra = model.auxiliary_loss() if hasattr(model, "auxiliary_loss") else None
                if extra is not None:  # a loss the model adds to its own forward (DyDiT's FLOPs target)
                    part = part + extra
            (part * weight).backward()
        loss = loss + part.detach() * weight
    if parts is not None:
        parts.update(terms)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip is not None else float("inf"))
    finite = bool(torch.isfinite(grad_norm))
    if finite:
        optimizer.step()
        update_ema(ema, model, ema_decay)
    return loss, grad_norm, finite


class Trainer:
    """State of one run on one rank; `run()` trains from the current step to `config["steps"]`."""

    def __init__(self, cfg: dict, dist: distributed.Dist):
        from elit_bench.models import create_model
        from elit_bench.models.backbones import Backbone
        from elit_bench.models.compile import compile_model
        from elit_bench.models.loading import load_init_weights, model_from_checkpoint
        from elit_bench.models.mmdit import prompt_embedder

        self.cfg, self.dist, self.device = cfg, dist, dist.device
        torch.manual_seed(derive_seed(cfg["seed"], STREAM_INIT))  # same initial weights on every rank
        fsdp = cfg["sharding"] == "fsdp" and dist.world > 1  # built on the CPU: `shard` moves the shards to the GPU
        self.model = create_model(cfg["model"], **cfg["model_kwargs"]).to("cpu" if fsdp else self.device)
        if cfg["init"] is not None:  # fine-tuning: start from a trained checkpoint's weights
            load_init_weights(self.model, cfg["init"])
        # text-to-image data: labels are prompt ids into this table; set after init, whose checkpoint carries its
        # own table (a converted Qwen-Image's is empty)
        prompts = prompt_table(cfg["data"])
        if prompts is not None:
            prompt_embedder(self.model).set_prompts(prompts.tokens, prompts.mask)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.teacher = None  # distillation (`train.teacher`): its EMA weights, frozen, in eval mode
        if cfg["teacher"] is not None:
            try:
                self.teacher = model_from_checkpoint(load_checkpoint(cfg["teacher"]), device=self.device)
            except UserError as exc:
                raise UserError(f"train.teacher {cfg['teacher']!r}: {exc}") from None
            self.teacher.requires_grad_(False)
        self.teacher_flops = teacher_forward_flops(cfg, self.model)  # its forward per sample, in the throughput
        self.loss_parts = {}  # the last step's rectified-flow and distillation terms, when distilling
        self.dataset = build_dataset(cfg["data"])
        self.loader = Prefetcher(self.dataset, pin=self.device.type == "cuda")
        mask = self.dataset.loss_mask
        self.loss_mask = mask.to(self.device) if mask is not None else None
        self.order = DataOrder(len(self.dataset), cfg["seed"], views=self.dataset.views)
        self.step = 0
        self.nonfinite_steps, self.nonfinite_in_a_row = 0, 0

        if cfg["batch"] % dist.world:
            raise UserError(f"batch {cfg['batch']} must be divisible by the number of processes {dist.world}")
        self.variants = training_variants(self.model, cfg)
        self.batches = variant_batches(self.model, self.variants, cfg["batch"], cfg["batch_mode"], dist.world)
        self.flops = [train_forward_flops(self.model, b, patch_size=p) for b, p in self.variants]
        self.micro_batch, self.checkpointing = self.plan_memory()
        for module in self.model.modules():
            if isinstance(module, Backbone):
                module.checkpoint_blocks = self.checkpointing

        self.net = self.model
        if cfg["sharding"] == "fsdp":
            sharding.shard([self.model, self.ema, self.teacher], dist, computes_in_bf16(cfg["precision"], self.device))
        elif dist.world > 1:
            # the multi-patch model leaves the other patchifier unused in each iteration
            unused = getattr(self.model, "patch_options", None) is not None
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=unused)
        # built over the parameters as sharded (under FSDP AdamW's state is sharded with them)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                           fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_factor(cfg["warmup"]))
        if cfg["compile"]:  # the tensor step, one graph per variant and micro-batch shape (at most 2 each)
            compile_model(self.model, graphs=2 * len(self.variants))
        self.autocast = autocast_for(cfg["precision"], self.device)

    def plan_memory(self) -> tuple[int | None, bool]:
        """(micro-batch, activation checkpointing): as configured, "auto" fitted to this GPU's memory
        (`training.memory`, what `elit-bench run --dry-run` prints); on CPU "auto" is the whole rank batch
        without checkpointing."""
        micro, checkpointing = self.cfg["micro_batch"], self.cfg["activation_checkpointing"]
        memory = device_memory(self.device)
        if "auto" in (micro, checkpointing) and memory is not None:
            plan = run_memory_plan(self.cfg["model"], self.cfg["model_kwargs"], self.model, self.cfg,
                                   self.dist.world, memory)
            micro, checkpointing = plan.micro_batch, plan.checkpointing
            if self.dist.is_main:
                print(f"micro-batch {micro} ({plan.accumulation} chunk(s) per step and GPU), activation checkpointing "
                      f"{'on' if checkpointing else 'off'}: estimated peak {plan.peak / GiB:.1f} GiB of "
                      f"{plan.capacity / GiB:.1f} GiB usable" + ("" if plan.fits else "; it may not fit"))
        return (None if micro == "auto" else micro), checkpointing is True

    # -- checkpoints
    def state_dict(self) -> dict:
        """What last.pt holds. Under FSDP (collective): model and EMA gathered on rank 0, and instead of the
        optimizer the name of the sharded checkpoint of this step (`training.sharding`)."""
        if self.cfg["sharding"] == "fsdp":
            weights = {"model": sharding.gathered(self.model), "ema": sharding.gathered(self.ema),
                       "sharded": sharding.folder_name(self.step)}
        else:
            weights = {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                       "optimizer": self.optimizer.state_dict()}
        return {**weights, "step": self.step, "config": self.cfg, "scheduler": self.scheduler.state_dict(),
                "data_position": self.order.state(), "rng": rng_state(), "nonfinite_steps": self.nonfinite_steps}

    def load_state_dict(self, ckpt: dict) -> None:
        if "sharded" in ckpt:  # resharded to this run's world size
            sharding.load_sharded(self.model, self.ema, self.optimizer,
                                  Path(self.cfg["out"]) / CHECKPOINT.parent / ckpt["sharded"], self.dist)
        else:
            self.model.load_state_dict(ckpt["model"])
            self.ema.load_state_dict(ckpt["ema"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = ckpt["step"]
        self.order.epoch, self.order.index = ckpt["data_position"]["epoch"], ckpt["data_position"]["index"]
        self.nonfinite_steps = ckpt.get("nonfinite_steps", 0)
        set_rng_state(ckpt["rng"])

    def save(self) -> None:
        """Rank 0 writes last.pt (atomically) and, on snapshot steps, a step_XXXXXXX.pt copy too; never
        non-finite weights (a diverged run keeps its last good checkpoint). Under FSDP every rank first writes
        its shards of the sharded checkpoint that last.pt will name."""
        if not bool(torch.stack([p.isfinite().all() for p in self.model.parameters()]).all()):
            raise UserError(f"training diverged at step {self.step}: the weights are no longer finite; lower "
                            "train.lr, set train.grad_clip or lengthen train.warmup (the last checkpoint holds the "
                            "last finite weights)")
        out = Path(self.cfg["out"])
        if self.cfg["sharding"] == "fsdp":
            sharding.save_sharded(self.model, self.ema, self.optimizer,
                                  out / CHECKPOINT.parent / sharding.folder_name(self.step), self.dist)
        state = self.state_dict()
        if self.dist.is_main:
            save_checkpoint(out / CHECKPOINT, state)
            every = self.cfg["snapshot_every"]
            if every and self.step % every == 0:
                save_checkpoint(out / CHECKPOINT.parent / f"step_{self.step:07d}.pt", state)
            if "sharded" in state:
                sharding.prune(out / CHECKPOINT.parent, state["sharded"])
        self.dist.barrier()

    # -- one iteration
    def draw_variant(self, step: int) -> int:
        """Index of this iteration's (budget, patch): from (seed, step) only, so identical on every rank."""
        gen = generator("cpu", self.cfg["seed"], STREAM_VARIANT, step)
        return int(torch.randint(len(self.variants), (1,), generator=gen))

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One optimizer step; returns (loss averaged over ranks, grad norm, variant index)."""
        cfg, dev, step = self.cfg, self.device, self.step
        v = self.draw_variant(step)
        budget, patch = self.variants[v]
        batch = self.batches[v]
        x, y = self.loader.get(self.order.take(batch)[self.shard(batch)])
        if step + 1 < cfg["steps"]:  # the next step's batch loads while this one computes
            following = self.batches[self.draw_variant(step + 1)]
            self.loader.ahead(self.order.peek(following)[self.shard(following)])
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        mine = self.shard(batch)

        # t, noise and label dropout for the global batch; this rank keeps its slice
        gen = generator(dev, cfg["seed"], STREAM_NOISE, step)
        t = sample_timesteps(batch, cfg["timesteps"], cfg["timestep_mean"], cfg["timestep_std"], generator=gen,
                             shift=cfg["time_shift"])[mine]
        if self.dataset.posterior:  # a latent from each sample's posterior, drawn for the global batch too
            mean, std = x.chunk(2, dim=1)
            eps = torch.randn((batch, *mean.shape[1:]), generator=generator(dev, cfg["seed"], STREAM_LATENT, step),
                              device=dev)[mine]
            x = mean + std * eps
        noise = torch.randn((batch, *x.shape[1:]), generator=gen, device=dev)[mine]
        dropped = torch.rand(batch, generator=gen, device=dev)[mine] < cfg["class_dropout"]
        y = torch.where(dropped, torch.full_like(y, self.model.num_classes), y)

        kwargs = {"generator": generator(dev, cfg["seed"], STREAM_DROP, step)}  # random dropping's kept latents
        if budget is not None:
            kwargs["budget"] = budget
        if patch is not None:
            kwargs["patch_size"] = patch
        parts = {}
        loss, grad_norm, stepped = optimization_step(
            self.net, self.model, self.ema, self.optimizer, self.autocast, x, y, t, noise, self.loss_mask,
            cfg["grad_clip"], cfg["ema_decay"], self.micro_batch, self.teacher, cfg["distill_weight"], parts,
            **kwargs)
        self.scheduler.step()
        self.step += 1
        loss = self.dist.mean(loss.detach())
        self.loss_parts = {name: self.dist.mean(value) for name, value in parts.items()}
        self.nonfinite_in_a_row = 0 if stepped else self.nonfinite_in_a_row + 1
        self.nonfinite_steps += not stepped
        if self.nonfinite_in_a_row >= cfg["max_nonfinite_steps"]:
            raise UserError(f"training diverged at step {self.step}: loss {float(loss):.4g}, gradient norm "
                            f"{float(grad_norm):.4g}, non-finite for {self.nonfinite_in_a_row} steps in a row (each "
                            "skipped); lower train.lr, set train.grad_clip or lengthen train.warmup "
                            "(train.max_nonfinite_steps sets how many are tolerated)")
        return loss, grad_norm.detach(), v

    def shard(self, batch: int) -> slice:
        """This rank's part of a global batch."""
        per_rank = batch // self.dist.world
        return slice(self.dist.rank * per_rank, (self.dist.rank + 1) * per_rank)

    # -- the loop
    def run(self) -> dict:
        cfg, main = self.cfg, self.dist.is_main
        start, total = self.step, cfg["steps"]
        # on resume, drop events logged past the checkpoint (they are replayed); those at its step (evals) stay
        writer = Tracker(cfg["out"], cfg["logger"], cfg, purge_step=start + 1 if start else None) if main else None
        bar = tqdm(total=total, initial=start, unit="step", desc="train", dynamic_ncols=True,
                   disable=not (main and cfg["progress"]))
        losses, budgets, batches, pending, pending_parts = [], [], [], [], {}
        window = {"time": time.perf_counter(), "images": 0, "flops": 0.0}
        t_begin = t_first = time.perf_counter()
        try:
            while self.step < total:
                loss, grad_norm, v = self.train_step()
                budget, batch = self.variants[v][0], self.batches[v]
                pending.append(loss)
                for name, value in self.loss_parts.items():
                    pending_parts.setdefault(name, []).append(value)
                budgets.append(budget)
                batches.append(batch)
                window["images"] += batch
                window["flops"] += (self.flops[v] * TRAIN_MULTIPLIER + self.teacher_flops) * batch
                if writer is not None and budget is not None:
                    writer.scalars({"train/budget": budget}, self.step)
                if self.step == start + 1:
                    t_first = time.perf_counter()
                if self.step % cfg["log_every"] == 0 or self.step == total:
                    values = torch.stack(pending).tolist()  # one device sync per window
                    parts = {name: float(torch.stack(part).mean()) for name, part in pending_parts.items()}
                    losses += values
                    pending, pending_parts = [], {}
                    now = time.perf_counter()
                    seconds = max(now - window["time"], 1e-9)
                    if writer is not None:
                        scalars = {"loss": sum(values) / len(values), "lr": self.scheduler.get_last_lr()[0],
                                   "grad_norm": float(grad_norm), "images_per_s": window["images"] / seconds,
                                   "model_tflops_per_s": window["flops"] / seconds / 1e12, "batch": batch,
                                   "nonfinite_steps": self.nonfinite_steps, **parts}
                        writer.scalars({f"train/{name}": value for name, value in scalars.items()}, self.step)
                    window = {"time": now, "images": 0, "flops": 0.0}
                    bar.set_postfix(loss=f"{values[-1]:.4f}", refresh=False)
                if self.step == total or any(self.step % n == 0 for n in (cfg["ckpt_every"], cfg["snapshot_every"])
                                             if n):
                    self.save()
                bar.update(1)
        finally:
            bar.close()
            self.loader.close()
            if writer is not None:
                writer.close()
        end = time.perf_counter()
        run_steps = self.step - start
        # the first step pays one-off costs (allocation, compilation): leave it out of the rate
        rate = (run_steps - 1) / (end - t_first) if run_steps > 1 else run_steps / max(end - t_begin, 1e-9)
        return {"out": cfg["out"], "step": self.step, "start_step": start, "losses": losses, "budgets": budgets,
                "batches": batches, "steps_per_s": rate, "seconds": end - t_begin, "world": self.dist.world,
                "complete": self.step >= total, "nonfinite_steps": self.nonfinite_steps,
                "micro_batch": self.micro_batch, "activation_checkpointing": self.checkpointing}


# ---------------------------------------------------------------- entry point
def _check_resume(cfg: dict) -> int | None:
    """The step of the checkpoint to continue from (None: a new run), after checking the run directory belongs to
    this config. Reads only the checkpoint's config and step (memory-mapped), not its tensors."""
    out = Path(cfg["out"])
    ckpt_path, config_path = out / CHECKPOINT, out / CONFIG_FILE
    if ckpt_path.exists():
        saved, step = checkpoint_config(ckpt_path)
    elif config_path.exists():  # a run that stopped before its first checkpoint
        saved, step = parse_yaml(read_text(config_path, "run config")) or {}, None
        if not isinstance(saved, dict):
            raise UserError(f"{config_path} is not a mapping of config keys (it holds a {type(saved).__name__}); "
                            "delete it to start the run over")
    else:
        return None
    if identity(saved) != identity(cfg):
        diff = sorted(k for k in set(identity(saved)) | set(identity(cfg)) if saved.get(k) != cfg.get(k))
        raise UserError(f"run directory {str(out)!r} holds a different run (differs in: {', '.join(diff)}); "
                        "use another --out, or the same settings to continue it")
    return step


def train(config: dict) -> dict:
    """Train (or continue) the run a config describes; returns a summary on every rank.

    summary: out, step (final), start_step, losses (per step of this call,
    averaged over ranks), budgets, batches (per step), steps_per_s, seconds,
    world, complete. Validation errors raise UserError before any file is
    written; a run already at `steps` returns at once. Under torchrun it joins
    (or reuses) the job's process group and leaves it alive for later phases.
    """
    cfg = resolve_config(config)
    resume = _check_resume(cfg)
    dist = distributed.join()
    if resume is not None and resume >= cfg["steps"]:
        if dist.is_main:
            print(f"run {cfg['out']} is complete at step {resume} (steps={cfg['steps']}): nothing to do; "
                  "pass a larger --steps to continue it")
        return {"out": cfg["out"], "step": resume, "start_step": resume, "losses": [], "budgets": [],
                "batches": [], "steps_per_s": 0.0, "seconds": 0.0, "world": dist.world, "complete": True}
    trainer = Trainer(cfg, dist)
    if resume is not None:
        # every rank maps the file rather than reading a copy into memory; the dict is dropped once loaded
        trainer.load_state_dict(load_checkpoint(Path(cfg["out"]) / CHECKPOINT, mmap=True))
    if dist.is_main:
        for stale in (Path(cfg["out"]) / CHECKPOINT.parent).glob(".*.tmp"):  # left by a killed write
            stale.unlink()
        atomic_write(Path(cfg["out"]) / CONFIG_FILE,
                     lambda tmp: Path(tmp).write_text(yaml.safe_dump(cfg, sort_keys=False)))
        if resume is not None:
            print(f"resuming {cfg['out']} from step {trainer.step}")
    return trainer.run()
