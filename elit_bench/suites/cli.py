"""`elit-bench suites`, `elit-bench run` and `elit-bench status`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from elit_bench.errors import UserError
from elit_bench.suites.options import DEFAULT_OUT, default_scale, parse_sets


def register(sub) -> None:
    p = sub.add_parser("suites", help="list the named suites")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_suites)

    p = sub.add_parser("run", help="run a named suite (resumable: run the same command again to continue)")
    _suite_args(p)
    p.add_argument("--launcher", default="local", help="local | torchrun | slurm")
    p.add_argument("--nproc", type=_positive, help="torchrun: processes (GPUs) per node and run")
    p.add_argument("--nodes", type=_positive, default=1,
                   help="torchrun / slurm: nodes per run (torchrun: start the same command on every node)")
    p.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                   help="torchrun with --nodes > 1: rendezvous endpoint, a host every node reaches")
    p.add_argument("--partition", help="slurm: partition")
    p.add_argument("--gpus", type=_non_negative, default=0,
                   help="slurm: GPUs per node; one task (process) per GPU, DDP across them")
    p.add_argument("--tasks-per-node", type=_positive,
                   help="slurm: processes per node (default: --gpus, or 1 on CPU nodes; CPU tasks use gloo)")
    p.add_argument("--timeout-min", type=_positive, default=60, help="slurm: job time limit; jobs requeue and resume")
    p.add_argument("--cpus", type=_positive, default=2, help="slurm: CPUs per task")
    p.add_argument("--dry-run", action="store_true",
                   help="validate every run and print the plan: TF per iteration, total FLOPs, batch and steps ratios, "
                        "and each run's estimated wall time on this machine (timed training steps and forwards)")
    p.add_argument("--no-estimate", action="store_true",
                   help="with --dry-run: skip the wall-time estimate (it builds and times each model briefly)")
    p.add_argument("--gpu-memory", type=_positive_float, default=80.0, metavar="GB",
                   help="with --dry-run: GPU memory in GB (1e9 bytes) to plan each training run's micro-batch and "
                        "activation checkpointing for (default 80); a run with train.micro_batch: auto makes the "
                        "same plan for the GPU it starts on")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (also: -q)")
    p.add_argument("--wait-lock", action="store_true",
                   help="when another `run` writes into the same OUT/<suite>/<scale>, wait for it instead of exiting")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="which runs of a suite are done, running or missing")
    _suite_args(p)
    p.set_defaults(func=cmd_status)


def _suite_args(p) -> None:
    p.add_argument("suite", help="suite name (elit-bench suites) or a YAML path")
    p.add_argument("--scale", default=None,
                   help="paper | proxy | smoke | cpu (default: the cheapest the suite has: smoke, cpu, proxy, paper)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output root (default: {DEFAULT_OUT}/)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. train.steps=200, sample.batch=16, var.IMAGENET256=/data/in256 (repeatable)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def expand(args, strict: bool = True, doing: str = "running"):
    from elit_bench.suites.spec import load_suite

    suite = load_suite(args.suite)
    scale = args.scale or default_scale(suite, doing)
    overrides, variables = parse_sets(args.sets)
    return suite, scale, suite.runs(scale, overrides, variables, strict_variables=strict)


def cmd_suites(args) -> int:
    from elit_bench.suites.spec import list_suites, load_suite

    rows = []
    for name in list_suites():
        try:
            suite = load_suite(name)
        except UserError as exc:  # one broken file is listed as broken, the others as usual
            rows.append({"name": name, "error": str(exc)})
            continue
        rows.append({"name": name, "title": suite.title, "scales": list(suite.raw["scales"]),
                     "runs": len(suite.raw["runs"]), "variables": suite.variables, "paper": suite.paper})
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  " + (f"BROKEN: {r['error']}" if "error" in r else
                                              f"{', '.join(r['scales']):<20}  {r['title']}"))
    return 0


def plan_run(run) -> dict:
    """TF per iteration, total FLOPs and ratios to the other runs of one run, from the analytic model (no data)."""
    from elit_bench.suites.spec import CheckpointRun, ComputeRun
    from elit_bench.training.config import expected_train_tflops

    if isinstance(run, ComputeRun):
        return {"run": run.id, "label": run.label, "model": run.compute.get("model", "-"), "compute": run.compute,
                "batch": "-", "steps": "-", "train_tflops_per_iter": 0.0, "train_total_pflops": 0.0, "evals": 0,
                "samples": 0}
    samples = sum(e.metrics_settings.num_samples for e in run.evals)
    if isinstance(run, CheckpointRun):
        return {"run": run.id, "label": run.label, "model": run.model or run.checkpoint, "batch": "-", "steps": "-",
                "train_tflops_per_iter": 0.0, "train_total_pflops": 0.0, "evals": len(run.evals), "samples": samples}
    cfg = run.model_args[2]
    tf = expected_train_tflops(run.meta_model(), cfg)
    return {"run": run.id, "label": run.label, "model": cfg["model"], "seed": cfg["seed"], "batch": cfg["batch"],
            "steps": cfg["steps"], "budget_range": cfg.get("budget_range") or ("1:J" if cfg.get("multi_budget") else "full"),
            "train_tflops_per_iter": tf, "train_total_pflops": tf * cfg["steps"] / 1e3,
            "evals": len(run.evals), "samples": samples, "ratios": run.ratios}


def _ratio_text(ratios: dict | None) -> str:
    """'batch 1.5x (paper 1.5x), steps 1x' against the reference run; unmatched keys say why."""
    if not ratios:
        return ""
    parts = []
    for key in ("batch", "steps"):
        text = f"{key} {ratios[key]:.3g}x"
        if f"paper_{key}" in ratios:
            text += f" (paper {ratios[f'paper_{key}']:.3g}x)"
        if key in ratios["unmatched"]:
            text += f" [{ratios['unmatched'][key]}]"
        parts.append(text)
    return f"vs {ratios['reference']}: " + ", ".join(parts)


def cmd_run(args) -> int:
    from elit_bench.suites.launchers import make_launcher
    from elit_bench.suites.lock import run_lock
    from elit_bench.suites.runner import run_all

    suite, scale, runs = expand(args, strict=not args.dry_run)
    if args.dry_run:
        return dry_run(args, suite, scale, runs)
    launcher = make_launcher(args.launcher, nproc=args.nproc, nodes=args.nodes, rdzv_endpoint=args.rdzv_endpoint,
                             partition=args.partition, gpus=args.gpus, tasks_per_node=args.tasks_per_node,
                             timeout_min=args.timeout_min, cpus=args.cpus)
    with run_lock(Path(args.out) / suite.name / scale, args.launcher, args.nodes, args.wait_lock, args.command_line):
        code = run_all(runs, args.out, launcher, progress=not (args.no_progress or args.quiet))
        if code == 0 and runs:
            from elit_bench.results.reports import write_report

            for path in write_report(suite, args.out, scale):
                print(f"wrote {path}")
    return code


def dry_run(args, suite, scale, runs) -> int:
    """Print the plan (text or JSON) and, unless --no-estimate, the estimated wall time; writes nothing."""
    from elit_bench.suites.estimate import describe, describe_memory, duration, estimate_memory, estimate_runs

    plan = [plan_run(r) for r in runs]
    memory = estimate_memory(runs, args.gpu_memory, _processes_per_run(args))
    for p in plan:
        if p["run"] in memory:
            p["memory"] = memory[p["run"]]
    estimate = None if args.no_estimate else estimate_runs(runs, args.out)
    if estimate is not None:
        for p in plan:
            p["estimate"] = estimate["runs"][p["run"]]
    if args.json:
        body = {"suite": suite.name, "scale": scale, "runs": plan}
        if estimate is not None:
            body["estimate"] = {k: v for k, v in estimate.items() if k != "runs"}
        print(json.dumps(body, indent=1, default=str))
        return 0
    print(f"{suite.name} at scale {scale}: {len(plan)} run(s) -> {Path(args.out) / suite.name / scale}")
    for p in plan:
        if "compute" in p:
            print(f"  {p['run']:<40} {p['model']:<16} measurement: {p['compute']}")
            continue
        print(f"  {p['run']:<40} {p['model']:<16} batch {p['batch']:<4} steps {p['steps']:<7} "
              f"TF/iter {p['train_tflops_per_iter']:<10.4g} total {p['train_total_pflops']:<9.4g} PFLOPs  "
              f"{p['evals']} eval(s), {p['samples']} samples  {_ratio_text(p.get('ratios'))}")
        if "memory" in p:
            print(f"      {describe_memory(p['memory'])}")
        if estimate is not None:
            print(f"      {describe(p['estimate'])}")
    if estimate is not None:
        done = sum(e["how"] == "done" for e in estimate["runs"].values())
        print(f"estimated wall time on this machine ({estimate['device']}, {estimate['threads']} torch thread(s)): "
              f"{duration(estimate['total_seconds'])} (training {duration(estimate['train_seconds'])}, sampling "
              f"{duration(estimate['sample_seconds'])}; {estimate['not_included']} not included"
              + (f"; {done} run(s) already done" if done else "") + ")")
    return 0


def _processes_per_run(args) -> int:
    """How many processes (GPUs) share each run's batch under the chosen launcher."""
    if args.launcher == "torchrun":
        return (args.nproc or 1) * args.nodes
    if args.launcher == "slurm":
        return (args.tasks_per_node or args.gpus or 1) * args.nodes
    return 1


def cmd_status(args) -> int:
    from elit_bench.results.records import read_record
    from elit_bench.suites.runner import RECORDS, is_done, run_dir

    suite, scale, runs = expand(args, strict=False, doing="showing")
    for run in runs:
        rdir = run_dir(args.out, run)
        records = len([read_record(p) for p in sorted((rdir / RECORDS).glob("*.json"))])
        ckpt = rdir / "train" / "checkpoints" / "last.pt"
        state = "done" if is_done(args.out, run) else ("started" if rdir.exists() else "missing")
        print(f"{state:<8} {run.id:<40} checkpoint: {'yes' if ckpt.exists() else 'no':<3}  "
              f"records {records}/{len(run.evals)}")
    return 0
