"""GPU acceptance check: what a lent H100/H200 must show, measured in one go (at most about 8 minutes).

    bash scripts/gpu_check.sh                      # on a GPU: the paper-size checks
    bash scripts/gpu_check.sh --tiny --out X.json  # on CPU: the same steps on tiny models (CI runs this)

Steps, each timed and recorded (a failed step is recorded with its error and makes the exit code 1):
  mfu       training steps/s and MFU of DiT-XL/2 and ELIT-DiT-XL/2 at 256 px (latents), bf16, eager and compiled
  latency   ELIT-DiT-XL/2 forward ms per sample at every budget (Fig. 9), sampler precision, eager and CUDA graphs
  memory    peak memory of one 512 px ELIT-DiT-XL/2 training step at the dry run's micro-batch vs its estimate
  features  Inception (FID) and DINOv2 ViT-L/14 (FDD) features/s through the harness's extractors
  smoke     the quickstart suite (shortened) trained, sampled and scored on this device
Writes one JSON (default results/bench/gpu-check-<device>-<date>.json) and prints a summary.
Random weights stand in for Inception and DINOv2 (their speed does not depend on the values); DINOv2's
architecture is timm's ViT-L/14 at 224 px, the network dgm-eval's FDD runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from elit_bench.checkpoint import atomic_write
from elit_bench.provenance import provenance

# (full size on a GPU, tiny on CPU): the same code path at two sizes
SIZES = {
    "full": {"models": ["DiT-XL/2", "ELIT-DiT-XL/2"], "resolution": 256, "batch": 32, "steps": 10, "warmup": 3,
             "compile_warmup": 6, "latency_model": "ELIT-DiT-XL/2", "latency_batch": 64, "memory_model": "ELIT-DiT-XL/2",
             "memory_resolution": 512, "memory_batch": 48, "feature_images": 2048, "feature_size": 256,
             "feature_batch": 256, "dinov2_arch": "vit_large_patch14_dinov2", "smoke_sets": ["train.steps=300"], "kw": {}},
    "tiny": {"models": ["DiT-S/2", "ELIT-DiT-S/2"], "resolution": 128, "batch": 4, "steps": 2, "warmup": 1,
             "compile_warmup": 1, "latency_model": "ELIT-DiT-S/2", "latency_batch": 2, "memory_model": "ELIT-DiT-S/2",
             "memory_resolution": 128, "memory_batch": 8, "feature_images": 4, "feature_size": 32, "feature_batch": 4, "dinov2_arch": "vit_small_patch14_dinov2",
             "smoke_sets": ["train.steps=10", "metrics.num_samples=32", "train.ckpt_every=10"],
             "kw": {"hidden_size": 64, "depth": 4, "num_heads": 2}},
}


def step_mfu(size: dict, device: torch.device) -> dict:
    from elit_bench.bench import train_speed

    rows = []
    for compile in (False, True):
        for name in size["models"]:
            warmup = size["compile_warmup"] if compile else size["warmup"]
            rows.append(train_speed(name, size["resolution"], size["batch"], size["steps"], warmup,
                                    model_kwargs=size["kw"], compile=compile))
    return {"rows": rows}


def step_latency(size: dict, device: torch.device) -> dict:
    from elit_bench.bench import latency_sweep
    from elit_bench.models import create_model

    with torch.device("meta"):
        model = create_model(size["latency_model"], resolution=size["resolution"], **size["kw"])
    budgets = sorted({max(1, model.max_budget * k // 16) for k in (1, 2, 4, 8, 16)})
    rows = latency_sweep(size["latency_model"], size["resolution"], budgets, size["latency_batch"], warmup=3,
                         repeats=10, model_kwargs=size["kw"], progress=False, precision="bf16")
    if device.type == "cuda":
        rows += latency_sweep(size["latency_model"], size["resolution"], budgets, size["latency_batch"], warmup=3,
                              repeats=10, model_kwargs=size["kw"], progress=False, precision="bf16", cuda_graphs=True)
    return {"rows": rows}


def step_memory(size: dict, device: torch.device) -> dict:
    """One training step of the paper's per-GPU batch (table1-512: 384 over 8 GPUs) at the micro-batch the dry run
    plans for this GPU, its measured peak beside the plan's estimate."""
    from elit_bench.bench import write_random_latents
    from elit_bench.distributed import join
    from elit_bench.training.config import build_meta_model, resolve_config
    from elit_bench.training.memory import GiB, device_memory, run_memory_plan
    from elit_bench.training.trainer import Trainer

    gpu_bytes = device_memory(device) or 80e9
    with tempfile.TemporaryDirectory() as tmp:
        data = write_random_latents(Path(tmp) / "latents", size["memory_resolution"], size["memory_batch"])
        cfg = resolve_config({"model": size["memory_model"], "data": str(data), "batch": size["memory_batch"],
                              "steps": 1, "model_kwargs": size["kw"], "out": str(Path(tmp) / "run"),
                              "progress": False, "precision": "bf16"})
        plan = run_memory_plan(cfg["model"], cfg["model_kwargs"], build_meta_model(cfg), cfg, 1, gpu_bytes)
        cfg = {**cfg, "micro_batch": plan.micro_batch, "activation_checkpointing": plan.checkpointing}
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        trainer = Trainer(cfg, join())
        trainer.train_step()
        measured = torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None
        del trainer
    return {"model": size["memory_model"], "resolution": size["memory_resolution"], "gpu_gb": gpu_bytes / 1e9,
            "batch": size["memory_batch"], "micro_batch": plan.micro_batch, "checkpointing": plan.checkpointing,
            "estimated_peak_gib": plan.peak / GiB, "measured_peak_gib": measured,
            "measured_over_estimated": measured / (plan.peak / GiB) if measured else None}


def step_features(size: dict, device: torch.device) -> dict:
    """Features/s of the Inception and DINOv2 extractors on random uint8 images, end to end (preprocessing too)."""
    from elit_bench.metrics.extractors import get_extractor
    from elit_bench.metrics.synthetic import write_random_inception_weights

    n, side, batch = size["feature_images"], size["feature_size"], size["feature_batch"]
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "dinov2"
        repo.mkdir()
        # dinov2_vitl14's architecture (ViT-L/14 at 224 px, CLS output; ViT-S/14 when tiny) from timm, random weights
        (repo / "hubconf.py").write_text(
            "import timm\n\ndef dinov2_vitl14(*, pretrained=True, **kw):\n"
            f"    return timm.create_model({size['dinov2_arch']!r}, pretrained=False, img_size=224, num_classes=0)\n")
        torch.save(torch.hub.load(str(repo), "dinov2_vitl14", source="local").state_dict(), Path(tmp) / "dinov2.pth")
        extractors = {
            "inception-v3-tf": {"weights": write_random_inception_weights(Path(tmp) / "inception.pth")},
            "dinov2-vitl14": {"weights": Path(tmp) / "dinov2.pth", "repo": repo},
        }
        for name, options in extractors.items():
            extractor = get_extractor(name, device=device, **options)
            extractor.extract(images[:batch])  # load and warm up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for i in range(0, n, batch):
                extractor.extract(images[i:i + batch])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            rows.append({"extractor": name, "images": n, "size": side, "batch": batch, "features_per_s": n / seconds})
    return {"rows": rows}


def step_smoke(size: dict, device: torch.device) -> dict:
    """The quickstart suite, shortened, through the CLI on this device; its records say where metrics ran."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "elit_bench.cli", "-q", "run", "quickstart", "--scale", "smoke", "--out", tmp]
        for item in size["smoke_sets"]:
            command += ["--set", item]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        records = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("quickstart/smoke/*/records/*.json"))]
    return {"command": shlex.join(command[1:]), "seconds": seconds, "records": len(records),
            "metrics": {f"{r['run_label']} / {r['eval_label']}": r["metrics"].get("digits_fd") for r in records},
            "metrics_device": sorted({str(r["provenance"]["metrics"].get("device")) for r in records})}


STEPS = {"mfu": step_mfu, "latency": step_latency, "memory": step_memory, "features": step_features,
         "smoke": step_smoke}


def summary(results: dict) -> str:
    lines = []
    for name, result in results.items():
        if "error" in result:
            lines.append(f"{name:9s} FAILED: {result['error']}")
        elif name == "mfu":
            lines += [f"mfu       {r['model']} compile={r['compile']}: {r['steps_per_s']:.3g} steps/s, "
                      f"{r['model_tflops_per_s']:.3g} TFLOP/s, MFU {'n/a' if r['mfu'] is None else format(r['mfu'], '.1%')}"
                      + (f", graphs {r['graphs']}, breaks {r['graph_breaks']}, fallbacks {r['fallbacks']}"
                         if r["compile"] else "") for r in result["rows"]]
        elif name == "latency":
            lines += [f"latency   J={r['budget']} graphs={r['cuda_graphs']}: {r['forward_ms']:.3g} ms/sample at "
                      f"{r['forward_gflops']:.4g} GFLOPs" for r in result["rows"]]
        elif name == "memory":
            lines.append(f"memory    micro-batch {result['micro_batch']} (checkpointing {result['checkpointing']}): "
                         f"estimated {result['estimated_peak_gib']:.2f} GiB, measured {result['measured_peak_gib']}")
        elif name == "features":
            lines += [f"features  {r['extractor']}: {r['features_per_s']:.4g} images/s" for r in result["rows"]]
        elif name == "smoke":
            lines.append(f"smoke     {result['records']} records in {result['seconds']:.0f} s, metrics on "
                         f"{result['metrics_device']}")
        lines[-1] += f"  [{result['seconds_step']:.0f} s]"
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models (CPU, CI); default on a machine without CUDA")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma list of steps (default all: {','.join(STEPS)})")
    parser.add_argument("--out", type=Path, help="JSON path (default results/bench/gpu-check-<device>-<date>.json)")
    args = parser.parse_args(argv)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    size_name = "tiny" if args.tiny or device.type != "cuda" else "full"
    if device.type != "cuda":  # inductor's CPU codegen takes about a minute a graph: trace the same graphs, run eager
        import elit_bench.models.compile

        elit_bench.models.compile.DEFAULT_BACKEND = "aot_eager"
    names = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in names if s not in STEPS]
    if unknown:
        print(f"gpu_check: unknown step {unknown[0]!r}; valid: {', '.join(STEPS)}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
        torch.cuda.set_device(device)
    else:
        device_name = "cpu"
    out = args.out or Path("results/bench") / (
        f"gpu-check-{device_name.replace(' ', '-').lower()}-{time.strftime('%Y-%m-%d')}.json")
    results = {}
    for name in names:
        start = time.perf_counter()
        print(f"gpu_check: {name} ...", flush=True)
        try:
            results[name] = STEPS[name](SIZES[size_name], device)
        except Exception as exc:  # recorded, and the exit code says so
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["seconds_step"] = time.perf_counter() - start
    record = {"check": "gpu_check", "size": size_name, "device": device_name,
              "command": shlex.join(["bash", "scripts/gpu_check.sh", *(argv if argv is not None else sys.argv[1:])]),
              "provenance": provenance(device), "results": results}
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, default=str)))
    print(summary(results))
    print(f"wrote {out}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
