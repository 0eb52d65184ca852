"""`elit-bench dpg export / import`: DPG-Bench, scored outside the harness (`results.dpg`)."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "dpg", help="DPG-Bench: export samples in its layout, import its scores into records",
        description="DPG-Bench is scored outside the harness by its own script (mPLUG VQA): export an evaluation's "
                    "samples as its 2x2 grids, score them with dpg_bench/dist_eval.sh, import the results file.")
    sub = parser.add_subparsers(dest="dpg_command", metavar="ACTION", required=True)

    exp = sub.add_parser("export", help="samples -> <item id>.png 2x2 grids and a manifest, per evaluation",
                         description="Write OUT/<run id>/<eval id>/images/<item id>.png (the first 4 samples of "
                                     "each prompt, left to right, top to bottom) and manifest.json.")
    exp.add_argument("source", help="a record file, or a suite run's output folder (e.g. OUT/table4-t2i/paper): "
                                    "every record with a sample set")
    exp.add_argument("--prompts", required=True,
                     help="the encode-text directory the samples' prompt ids index (DPG-Bench's prompts)")
    exp.add_argument("--items", default=None,
                     help="JSON list of the DPG-Bench item id of each prompt, in prompt order (default: "
                          "items.json in --prompts)")
    exp.add_argument("--out", required=True, help="folder for the exports")
    exp.set_defaults(func=_export)

    imp = sub.add_parser("import", help="DPG-Bench's results file -> dpg_* metrics with intervals in the record",
                         description="Read DPG-Bench's results file (and the _detail.txt beside it), check it "
                                     "against the export's manifest, and add dpg_avg and the five category "
                                     "scores with item-bootstrap intervals to the record.")
    imp.add_argument("scores", help="DPG-Bench's dpg-bench_<time>_results.txt")
    imp.add_argument("--record", required=True, help="the record of the exported evaluation")
    imp.add_argument("--csv", required=True, help="DPG-Bench's dpg_bench.csv (the questions it asked)")
    imp.add_argument("--manifest", default=None,
                     help="the export's manifest.json (default: beside or above the results file)")
    imp.set_defaults(func=_import)


def _export(args) -> int:
    from elit_bench.results.dpg import IMAGES, MANIFEST, export_dpg

    for folder in export_dpg(args.source, args.prompts, args.out, args.items):
        manifest = json.loads((folder / MANIFEST).read_text())
        print(f"exported {folder / IMAGES}; score it in DPG-Bench's checkout with: bash dpg_bench/dist_eval.sh "
              f"{folder / IMAGES} {manifest['resolution']}")
    return 0


def _import(args) -> int:
    from elit_bench.results.dpg import KEYS, import_dpg

    record = import_dpg(args.scores, args.record, args.csv, args.manifest)
    print(", ".join(f"{k} {record.metrics[k]:.2f} [{record.intervals[k]['low']:.2f}, "
                    f"{record.intervals[k]['high']:.2f}]" for k in KEYS) + f" -> {args.record}")
    return 0
