"""`elit-bench models` and `elit-bench flops`."""

from __future__ import annotations

import json

import torch

from elit_bench.errors import UserError
from elit_bench.yamlconfig import apply_overrides


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'ELIT-*XL*'")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("flops", help="params, forward GFLOPs and training TFLOPs of a model, or the paper's table")
    p.add_argument("model", nargs="?", help="registry name, e.g. ELIT-DiT-XL/2")
    p.add_argument("--resolution", type=int, default=256, help="image size in pixels (latent = /8)")
    p.add_argument("--budget", type=int, help="latents kept per group (ELIT); default all")
    p.add_argument("--budget-range", help="JMIN:JMAX: average over a uniform budget draw (multi-budget training)")
    p.add_argument("--guide-budget", type=int,
                   help="J_w of the CCFG guide pass for the CCFG vs CFG line (default J/16, the released code's)")
    p.add_argument("--batch", type=int, default=256, help="batch size for the training TFLOPs")
    p.add_argument("--measure", action="store_true", help="also count a real forward with torch.utils.flop_counter")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model constructor override, e.g. --set latents_per_group=16 (repeatable)")
    p.add_argument("--paper", action="store_true", help="every compute row of the paper, ours beside theirs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_flops)


def cmd_models(args) -> int:
    from elit_bench.models import list_models

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no model matches {args.pattern!r}")
    print(json.dumps(names) if args.json else "\n".join(names))
    return 0


def model_flops(name: str, resolution: int, budget=None, budget_spec=None, batch: int = 256,
                measure: bool = False, overrides: dict | None = None, guide_budget: int | None = None) -> dict:
    """The numbers `elit-bench flops` prints, as a dict."""
    from elit_bench.flops import (
        budget_range,
        forward_flops,
        mean_forward_flops,
        measure_forward_flops,
        train_forward_flops,
        train_tflops,
    )
    from elit_bench.models import create_model, param_count

    if budget is not None and budget_spec is not None:
        raise UserError("give either --budget or --budget-range, not both")
    if batch < 1:  # a negative batch would print negative TFLOPs
        raise UserError(f"batch {batch} must be an integer >= 1")
    with torch.device("meta"):
        model = create_model(name, resolution=resolution, **(overrides or {}))
    budgets = budget_range(model, budget_spec) if budget_spec else [budget]
    fwd = mean_forward_flops(model, budgets)
    # a model whose training pass differs from its forward (TREAD's routed tokens) trains at that pass's cost
    train_fwd = sum(train_forward_flops(model, b) for b in budgets) / len(budgets)
    out = {"model": name, "resolution": resolution, "params": param_count(model), "budgets": budgets,
           "forward_gflops": fwd / 1e9, "train_tflops": train_tflops(train_fwd, batch), "batch": batch,
           "components_gmacs": {k: v / 1e9 for k, v in model.macs(budget=budgets[-1]).items()}}
    if measure:
        # the inference pass, the one `forward_gflops` counts (TREAD trains on a cheaper one); a model whose
        # inference cost depends on its input (DyDiT) cannot run it on the meta device: its dense training
        # pass costs the full forward
        model.train(hasattr(model, "recorded_flops"))
        measured = sum(measure_forward_flops(model, b, device="meta") for b in budgets) / len(budgets)
        out["measured_forward_gflops"] = measured / 1e9
    if model.max_budget is not None:
        from elit_bench.flow.guidance import guidance_flops_ratio

        out["relative_to_full_budget"] = fwd / forward_flops(model)
        main = budgets[-1] or model.max_budget
        out["guide_budget"] = guide_budget if guide_budget is not None else max(1, main // 16)
        out["ccfg_vs_cfg"] = guidance_flops_ratio(model, "ccfg", main, out["guide_budget"])
    return out


def cmd_flops(args) -> int:
    if args.paper:
        return print_paper(args.json)
    if not args.model:
        raise UserError("name a MODEL (see `elit-bench models`) or pass --paper")
    out = model_flops(args.model, args.resolution, args.budget, args.budget_range, args.batch, args.measure,
                      apply_overrides({}, args.overrides, "--set", "latents_per_group=16"), args.guide_budget)
    if args.json:
        print(json.dumps(out))
        return 0
    from elit_bench.flops import human

    print(f"{out['model']} @ {out['resolution']} px, budgets {out['budgets']}")
    print(f"  params            {human(out['params'])} ({out['params']:,})")
    print(f"  forward           {out['forward_gflops']:.2f} GFLOPs / sample")
    print(f"  training          {out['train_tflops']:.1f} TFLOPs / iteration at batch {out['batch']}")
    if "measured_forward_gflops" in out:
        print(f"  measured forward  {out['measured_forward_gflops']:.2f} GFLOPs / sample (torch flop_counter)")
    if "relative_to_full_budget" in out:
        print(f"  vs full budget    {out['relative_to_full_budget']:.3f}x")
        print(f"  CCFG vs CFG       {out['ccfg_vs_cfg']:.3f}x sampling FLOPs (guide budget J_w = {out['guide_budget']})")
    return 0


def print_paper(as_json: bool) -> int:
    import pandas as pd

    from elit_bench.baselines import baseline_file
    from elit_bench.flops import human
    from elit_bench.results.paper_compute import ccfg_rows, mmdit_rows, official_code_rows, paper_compute_rows

    rows = paper_compute_rows(baseline_file("compute.csv"))
    mm = mmdit_rows(baseline_file("table4_mmdit_flops.csv"))
    official = official_code_rows(baseline_file("official_code_flops.csv"))
    ccfg = ccfg_rows()
    if as_json:
        print(json.dumps({"compute": rows, "mmdit": mm, "official_code": official, "ccfg": ccfg}))
        return 0
    df = pd.DataFrame(rows)
    df["params"] = df["params"].map(human)
    df = df[["row", "resolution", "batch", "budgets", "params", "params_paper", "params_diff_pct", "tf", "tf_paper",
             "tf_diff_pct", "tolerance_pct", "source"]]
    print("Training TFLOPs per iteration (TF) and parameters: ours vs published\n")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print("\nTable 4: ELIT-Qwen-Image sampling FLOPs (CCFG) relative to Qwen-Image (CFG), analytic MM-DiT model\n")
    print(pd.DataFrame(mm).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nThe released code's FLOPs file: GFLOPs of one CFG pair (batch 2), budgets in latents per group of 16\n")
    print(pd.DataFrame(official).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print("\nCCFG vs CFG sampling FLOPs by guide budget J_w (paper: about 33% fewer; the released CCFG config "
          "guides at J/16, its FLOPs file at J/8): the paper's saving implies J_w = J/16 on the paper's ELIT-DiT\n")
    print(pd.DataFrame(ccfg).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0
