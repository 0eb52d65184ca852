"""`elit-bench suites`, `elit-bench run` and `elit-bench status`."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from elit_bench.errors import UserError

DEFAULT_OUT = "runs"


def register(sub) -> None:
    p = sub.add_parser("suites", help="list the named suites")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_suites)

    p = sub.add_parser("run", help="run a named suite (resumable: run the same command again to continue)")
    _suite_args(p)
    p.add_argument("--launcher", default="local", help="local | torchrun | slurm")
    p.add_argument("--nproc", type=int, help="torchrun: processes (GPUs) per run")
    p.add_argument("--partition", help="slurm: partition")
    p.add_argument("--gpus", type=int, default=0, help="slurm: GPUs per job")
    p.add_argument("--timeout-min", type=int, default=60, help="slurm: job time limit; jobs requeue and resume")
    p.add_argument("--cpus", type=int, default=2, help="slurm: CPUs per job")
    p.add_argument("--dry-run", action="store_true", help="print the plan with TF per iteration and total FLOPs")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="which runs of a suite are done, running or missing")
    _suite_args(p)
    p.set_defaults(func=cmd_status)


def _suite_args(p) -> None:
    p.add_argument("suite", help="suite name (elit-bench suites) or a YAML path")
    p.add_argument("--scale", default=None, help="paper | proxy | smoke (default: the suite's first)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output root (default: {DEFAULT_OUT}/)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. train.steps=200, sample.batch=16, var.IMAGENET256=/data/in256 (repeatable)")


def parse_sets(items: list[str]) -> tuple[dict, dict]:
    """`--set` items -> (config overrides, variables)."""
    import yaml

    from elit_bench.suites.spec import set_dotted

    overrides, variables = {}, {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r} must look like KEY=VALUE, e.g. train.steps=200")
        if key.startswith("var."):
            variables[key[4:]] = raw
            continue
        if key.split(".")[0] not in ("train", "sample", "metrics"):
            raise UserError(f"--set {item!r}: keys start with train., sample., metrics. or var.")
        set_dotted(overrides, key, yaml.safe_load(raw))
    return overrides, variables


def expand(args, strict: bool = True):
    from elit_bench.suites.spec import load_suite

    suite = load_suite(args.suite)
    scale = args.scale or next(iter(suite.raw["scales"]))
    overrides, variables = parse_sets(args.sets)
    return suite, scale, suite.runs(scale, overrides, variables, strict_variables=strict)


def cmd_suites(args) -> int:
    from elit_bench.suites.spec import list_suites, load_suite

    rows = []
    for name in list_suites():
        suite = load_suite(name)
        rows.append({"name": name, "title": suite.title, "scales": list(suite.raw["scales"]),
                     "runs": len(suite.raw["runs"]), "variables": suite.variables, "paper": suite.paper})
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {', '.join(r['scales']):<20}  {r['title']}")
    return 0


def plan_run(run) -> dict:
    """TF per iteration and total FLOPs of one run, from the analytic model (no data needed)."""
    from elit_bench.data import EMBEDDED, describe_data, model_input_kwargs
    from elit_bench.models import create_model
    from elit_bench.suites.runner import expected_train_tflops
    from elit_bench.training.config import DATA_DEFAULTS, DEFAULTS

    if run.compute:
        return {"run": run.id, "label": run.label, "model": run.compute.get("model", "-"), "compute": run.compute,
                "batch": "-", "steps": "-", "train_tflops_per_iter": 0.0, "train_total_pflops": 0.0, "evals": 0,
                "samples": 0}
    data = run.train.get("data", DEFAULTS["data"])
    cfg = {**DEFAULTS, **DATA_DEFAULTS.get(data if isinstance(data, str) else "", {}), **run.train}
    kwargs = dict(cfg.get("model_kwargs") or {})
    if isinstance(data, str) and data in EMBEDDED:
        kwargs = {**model_input_kwargs(describe_data(data, cfg["resolution"])), **kwargs}
    with torch.device("meta"):
        model = create_model(cfg["model"], resolution=cfg.get("resolution") or 256, **kwargs)
    tf = expected_train_tflops(model, cfg)
    samples = sum(int(e.metrics.get("num_samples", 64)) for e in run.evals)
    return {"run": run.id, "label": run.label, "model": cfg["model"], "batch": cfg["batch"], "steps": cfg["steps"],
            "budget_range": cfg.get("budget_range") or ("1:J" if cfg.get("multi_budget") else "full"),
            "train_tflops_per_iter": tf, "train_total_pflops": tf * cfg["steps"] / 1e3,
            "evals": len(run.evals), "samples": samples}


def cmd_run(args) -> int:
    from elit_bench.suites.launchers import make_launcher
    from elit_bench.suites.runner import run_all

    suite, scale, runs = expand(args, strict=not args.dry_run)
    if args.dry_run:
        plan = [plan_run(r) for r in runs]
        if args.json:
            print(json.dumps({"suite": suite.name, "scale": scale, "runs": plan}, indent=1))
            return 0
        print(f"{suite.name} at scale {scale}: {len(plan)} run(s) -> {Path(args.out) / suite.name / scale}")
        for p in plan:
            if "compute" in p:
                print(f"  {p['run']:<40} {p['model']:<16} measurement: {p['compute']}")
                continue
            print(f"  {p['run']:<40} {p['model']:<16} batch {p['batch']:<4} steps {p['steps']:<7} "
                  f"TF/iter {p['train_tflops_per_iter']:<10.4g} total {p['train_total_pflops']:<9.4g} PFLOPs  "
                  f"{p['evals']} eval(s), {p['samples']} samples")
        return 0
    launcher = make_launcher(args.launcher, nproc=args.nproc, partition=args.partition, gpus=args.gpus,
                             timeout_min=args.timeout_min, cpus=args.cpus)
    code = run_all(runs, args.out, launcher, progress=not args.no_progress)
    if code == 0 and runs:
        from elit_bench.results.report import write_report

        for path in write_report(suite, args.out, scale):
            print(f"wrote {path}")
    return code


def cmd_status(args) -> int:
    from elit_bench.suites.runner import RECORDS, is_done, run_dir

    suite, scale, runs = expand(args, strict=False)
    for run in runs:
        rdir = run_dir(args.out, run)
        records = len(list((rdir / RECORDS).glob("*.json"))) if rdir.exists() else 0
        ckpt = rdir / "train" / "checkpoints" / "last.pt"
        state = "done" if is_done(args.out, run) else ("started" if rdir.exists() else "missing")
        print(f"{state:<8} {run.id:<40} checkpoint: {'yes' if ckpt.exists() else 'no':<3}  "
              f"records {records}/{len(run.evals)}")
    return 0
