"""Suites as data: one YAML file per paper item, expanded into runs and evaluations.

A suite file (safe-loaded, validated here):

    name: table3-readwrite
    title: "Table 3: Read/Write designs on DiT-B/2"
    paper: {table: table3, setting: "DiT-B/2 256px"}   # published rows set beside ours
    report: {kind: table}                               # or {kind: plot, plot: frontier, ...}
    variables:                                          # ${NAME} placeholders the user sets
      IMAGENET256: "ImageNet-1k latents at 256 px (elit-bench data encode)"
    base:                                               # shared by every run
      train:   {... keys of `elit-bench train` ...}
      sample:  {steps: 40, guidance: none, ...}         # keys of `elit-bench sample`
      metrics: {names: [fid, fdd, is], num_samples: 10000, real: ${IMAGENET_REF}}
    runs:                                               # one trained model each
      - {label: DiT, paper_row: DiT, seeds: [0, 1, 2], train: {model: DiT-B/2}}   # a run per seed
      - {label: ELIT-MB, train: {model: ELIT-DiT-B/2, multi_budget: true, batch: {times: 1.5}}}
      - {label: ELIT-MB-matched, train: {model: ELIT-DiT-B/2, multi_budget: true, batch: {match_flops: DiT}}}
      - {label: "group {group_size}", matrix: {train.model_kwargs.group_size: [1, 2, 4]}}
    evals:                                              # sampling + metrics, applied to every run
      - {label: -G, paper_guidance: -G}
      - {label: "budget {sample.budget}", matrix: {sample.budget: [1, 4, 8]}, only: [ELIT-MB]}
    scales:                                             # deep-merged onto base
      paper: {}
      proxy: {size: B, train: {steps: 20000}, metrics: {num_samples: 2000}}
      smoke: {train: {data: digits, steps: 30, ...}, metrics: {names: [fd_digits], ...}}

A scale's `size` swaps the model size in every model name (`-XL/` -> `-B/`),
so one suite file runs from a CPU smoke test to the paper's scale. A run's
`batch` / `steps` may be relative: `{times: F}` of the scale's value, or
`{match_flops: LABEL}` (another run's training FLOPs per iteration / in
total). Expansion validates every run and evaluation (`elit_bench.schema`,
the model on the meta device) and checks that any two runs keep the batch
and steps ratios they have at paper scale, unless a run says why not
(`unmatched: {batch: reason}`). The run id is a readable label plus the
hash of the training identity (model, data, optimisation, seed; not the
run-control keys such as `steps`, so raising them continues the run).

Labels name rows of tables, so they are unique: two runs share a label only
as the seeds of one `seeds:` entry (same settings otherwise), and the
evaluations of a run have distinct labels after `matrix:` expansion (put the
matrix key in the label: "J={budget}"). An override (`--set`) that every run
or evaluation replaces with its own value is refused, naming the key; one that
some of them replace is applied to the others, with a warning naming those.

`report: {kind: claims, claims: [...]}` puts the paper's claims to verdicts computed from the
suite's records (`elit_bench.results.claims`, docs/claims.md); its tests are checked here against
the suite's run and evaluation labels.

A run may evaluate a checkpoint it did not train, e.g. the authors' weights
imported with `elit-bench convert`: `{label: ELIT-SiT-XL/2 (authors),
checkpoint: "${ELIT_SIT_XL_CKPT}"}`. It gets the suite's evaluations and no
training; its id hashes the checkpoint's path.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from elit_bench.checkpoint import read_text
from elit_bench.errors import UserError, choices_error
from elit_bench.schema import MetricsSettings, SampleSettings, check
from elit_bench.training.config import (
    DEFAULTS,
    expected_train_tflops,
    fill_defaults,
    identity_hash,
    parse_yaml,
    resolve_config,
    training_budgets,
)

log = logging.getLogger(__name__)

SCALES = ("paper", "proxy", "smoke", "cpu")  # cpu: a CPU-sized scale that is meant to separate (claims)
REPORT_KINDS = ("table", "plot", "claims")
SUITE_KEYS = {"name", "title", "paper", "report", "variables", "base", "runs", "evals", "scales", "leaderboard"}
SECTION_KEYS = {"train", "sample", "metrics", "compute"}
RUN_KEYS = {"label", "paper_row", "paper_setting", "matrix", "seeds", "unmatched", "train", "sample", "metrics",
            "compute", "checkpoint"}
EVAL_KEYS = {"label", "paper_guidance", "series", "matrix", "only", "sample", "metrics"}
SCALE_KEYS = SECTION_KEYS | {"size", "runs", "evals"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def suites_dir() -> Path:
    """`$ELIT_BENCH_SUITES`, else the repository's `suites/`."""
    return Path(os.environ.get("ELIT_BENCH_SUITES") or Path(__file__).resolve().parents[2] / "suites")


def list_suites() -> list[str]:
    return sorted(p.stem for p in suites_dir().glob("*.yaml"))


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def expand_matrix(entry: dict) -> list[dict]:
    """An entry with `matrix: {dotted.key: [values]}` -> one entry per combination, label formatted."""
    matrix = entry.get("matrix")
    if not matrix:
        return [entry]
    if not isinstance(matrix, dict) or not all(isinstance(v, list) and v for v in matrix.values()):
        raise UserError(f"matrix of {entry.get('label')!r} must map keys to non-empty lists")
    out = []
    for combo in itertools.product(*matrix.values()):
        item = {k: copy.deepcopy(v) for k, v in entry.items() if k != "matrix"}
        names = {}  # a label may use the last part of a key ({budget}) or the whole key with _ ({sample_budget})
        for key, value in zip(matrix, combo):
            set_dotted(item, key, value)
            names[key.rsplit(".", 1)[-1]] = value
            names[key.replace(".", "_")] = value
        label = item.get("label", "")
        try:
            item["label"] = label.format(**names)
        except (KeyError, IndexError, ValueError):
            item["label"] = f"{label} " + " ".join(f"{k}={v}" for k, v in zip(matrix, combo))
        out.append(item)
    return out


def canonical_hash(obj, length: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower() or "run"


@dataclass
class EvalSpec:
    label: str
    paper_guidance: str | None
    sample: dict
    metrics: dict
    series: str | None = None  # a figure's line (e.g. "fewer steps" vs "fewer tokens")

    @property
    def id(self) -> str:
        """Label plus the hash of the normalised settings: keys left at their defaults do not change it."""
        settings = {"sample": SampleSettings(**self.sample).model_dump(exclude_defaults=True),
                    "metrics": MetricsSettings(**self.metrics).model_dump(exclude_defaults=True)}
        return f"{slug(self.label)}-{canonical_hash(settings, 8)}"


@dataclass
class RunSpec:
    """A trained model (`train`) and its evaluations, or a measurement without training (`compute`)."""

    suite: str
    scale: str
    label: str
    paper_row: str | None
    train: dict
    evals: list[EvalSpec] = field(default_factory=list)
    paper_setting: str | None = None
    compute: dict | None = None
    # batch / steps whose ratio to other runs may change between scales, and why (`unmatched:` or a match)
    unmatched: dict = field(default_factory=dict)
    # batch and steps over a reference run's, here and at paper scale (`ratio_table`)
    ratios: dict | None = None
    # a harness checkpoint evaluated without training (e.g. imported with `elit-bench convert`)
    checkpoint: str | None = None

    @property
    def trains(self) -> bool:
        return not self.compute and not self.checkpoint

    @property
    def config_hash(self) -> str:
        """The compute spec, the checkpoint, or the training identity: model, data, optimisation, seed (not steps:
        raising them continues the run)."""
        if self.compute:
            return canonical_hash(self.compute)
        return canonical_hash({"checkpoint": self.checkpoint}) if self.checkpoint else identity_hash(self.train)

    @property
    def id(self) -> str:
        return f"{slug(self.label)}-{self.config_hash}"


@dataclass
class Suite:
    name: str
    title: str
    raw: dict
    path: Path

    @property
    def variables(self) -> dict:
        return self.raw.get("variables") or {}

    @property
    def paper(self) -> dict:
        return self.raw.get("paper") or {}

    @property
    def report(self) -> dict:
        return self.raw.get("report") or {"kind": "table"}

    def runs(self, scale: str, overrides: dict | None = None, variables: dict | None = None,
             strict_variables: bool = True) -> list[RunSpec]:
        """Expand the suite at `scale` into validated runs; `overrides` deep-merge last (`--set`).

        Every run and evaluation is checked against the schema and its model (on the meta device) and the
        batch / steps ratios between runs against the paper scale's, so that an invalid suite fails here,
        before anything is written, trained or submitted.
        """
        values = {**{k: os.environ[k] for k in self.variables if k in os.environ}, **(variables or {})}
        runs = self._expand(scale, overrides, values, strict_variables)
        for run in runs:
            validate_run(run)
        ids = [r.id for r in runs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise UserError(f"suite {self.name!r} at scale {scale!r} defines the same run twice: {dupes}")
        check_labels(runs, f"suite {self.name!r} at scale {scale!r}")
        paper = runs if scale == "paper" or "paper" not in self.raw["scales"] else \
            self._expand("paper", None, values, False)
        table = ratio_table(runs, paper)
        for run in runs:
            run.ratios = table.get(run.id)
        check_ratios(runs, f"suite {self.name!r} at scale {scale!r}")
        return runs

    def _expand(self, scale: str, overrides: dict | None, values: dict, strict: bool) -> list[RunSpec]:
        scales = self.raw.get("scales") or {}
        if scale not in scales:
            raise choices_error(f"scale of suite {self.name!r}", scale, list(scales))
        chosen = scales[scale] or {}
        base = deep_merge(self.raw.get("base") or {}, {k: v for k, v in chosen.items() if k in SECTION_KEYS})
        base = deep_merge(base, overrides or {})
        evals = [e for entry in (chosen.get("evals") or self.raw.get("evals") or [{"label": "eval"}])
                 for e in expand_matrix(entry)]
        base_model = (base.get("train") or {}).get("model")
        runs, usage = [], {key: ([], []) for key in leaf_keys(overrides or {})}  # key -> (labels using, replacing)
        for entry in (chosen.get("runs") or self.raw["runs"]):
            for run in (r for item in expand_matrix(entry) for r in expand_seeds(item)):
                label = str(run.get("label") or (run.get("compute") or {}).get("model")
                            or (run.get("train") or {}).get("model") or base_model or run.get("checkpoint"))
                for key, (using, replacing) in usage.items():
                    if key.startswith("train."):  # measurements and given checkpoints train nothing
                        (replacing if run.get("compute") or run.get("checkpoint") or has_key(run, key)
                         else using).append(label)
                train = _substitute(deep_merge(base.get("train") or {}, run.get("train") or {}), values, strict,
                                    self.name)
                if chosen.get("size"):
                    train["model"] = resize_model(train.get("model"), chosen["size"])
                if run.get("compute"):
                    compute = deep_merge(base.get("compute") or {}, run["compute"])
                    runs.append(RunSpec(self.name, scale, str(run.get("label") or compute.get("model")),
                                        run.get("paper_row"), {}, [], run.get("paper_setting"), compute))
                    continue
                checkpoint = _substitute(run["checkpoint"], values, strict, self.name) if run.get("checkpoint") else None
                if checkpoint:
                    train = {}
                spec = RunSpec(self.name, scale, str(run.get("label") or train.get("model") or checkpoint),
                               run.get("paper_row"), train, paper_setting=run.get("paper_setting"),
                               unmatched=dict(run.get("unmatched") or {}), checkpoint=checkpoint)
                for ev in evals:
                    if ev.get("only") and spec.label not in ev["only"] and run.get("label") not in ev["only"]:
                        continue
                    for key, (using, replacing) in usage.items():
                        if not key.startswith("train."):
                            (replacing if has_key(run, key) or has_key(ev, key) else using).append(
                                f"{spec.label} / {ev.get('label') or 'eval'}")
                    sample, metrics = (_substitute(deep_merge(deep_merge(base.get(k) or {}, run.get(k) or {}),
                                                              ev.get(k) or {}), values, strict, self.name)
                                       for k in ("sample", "metrics"))
                    spec.evals.append(EvalSpec(str(ev.get("label") or "eval"), ev.get("paper_guidance"), sample, metrics,
                                               ev.get("series")))
                runs.append(spec)
        resolve_relative(runs, base.get("train") or {}, f"suite {self.name!r} at scale {scale!r}")
        for key, (using, replacing) in usage.items():
            value = leaf_keys(overrides)[key]
            what = "runs" if key.startswith("train.") else "evaluations"
            if not using:
                raise UserError(f"--set {key}={value}: no run uses it: " + (
                    f"every one of the suite's {what} sets its own {key} ({', '.join(dict.fromkeys(replacing))}); "
                    "change the suite file instead" if replacing else f"the suite has no {what}"))
            if replacing:
                log.warning("--set %s=%s applies to %d of the suite's %s; these set their own: %s", key, value,
                            len(using), what, ", ".join(dict.fromkeys(replacing)))
        return runs


def expand_seeds(entry: dict) -> list[dict]:
    """`seeds: [0, 1, 2]` -> one run per seed (`train.seed`), same label: own id, checkpoint and records."""
    seeds = entry.get("seeds")
    if seeds is None:
        return [entry]
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise UserError(f"run {entry.get('label')!r}: seeds must be a list of distinct integers >= 0, e.g. [0, 1, 2], "
                        f"got {seeds!r}")
    out = []
    for seed in seeds:
        item = {k: copy.deepcopy(v) for k, v in entry.items() if k != "seeds"}
        set_dotted(item, "train.seed", seed)
        out.append(item)
    return out


def leaf_keys(tree: dict, prefix: str = "") -> dict:
    """{"train.model_kwargs.depth": 4, ...}: the dotted key of every leaf of a nested mapping."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(leaf_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def has_key(tree: dict, dotted: str) -> bool:
    """Whether a run or evaluation entry sets `dotted` (e.g. "train.model") itself."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_labels(runs: list[RunSpec], where: str) -> None:
    """Runs share a label only as seeds of one setting; a run's evaluations have distinct labels. UserError naming
    the duplicates otherwise."""
    settings: dict[str, set] = {}
    for run in runs:
        train = {k: v for k, v in run.train.items() if k != "seed"}
        settings.setdefault(run.label, set()).add(canonical_hash([train, run.compute, run.checkpoint,
                                                                  [e.id for e in run.evals]]))
    dupes = [label for label, kinds in settings.items() if len(kinds) > 1]
    if dupes:
        raise UserError(f"{where}: run label(s) {', '.join(map(repr, dupes))} name runs with different settings (only "
                        "the seeds of one `seeds:` entry share a label); give each run its own label")
    for run in runs:
        labels = [e.label for e in run.evals]
        dupes = list(dict.fromkeys(label for label in labels if labels.count(label) > 1))
        if dupes:
            raise UserError(f"{where}, run {run.label!r}: evaluation label(s) {', '.join(map(repr, dupes))} name more "
                            "than one evaluation; make them unique (a matrix label names its key, e.g. 'J={budget}')")


# ---------------------------------------------------------------- batch and steps relative to the scale or a run
RATIO_KEYS = ("batch", "steps")
RATIO_TOLERANCE = 0.02  # integer rounding of a factor times a small batch


def resolve_relative(runs: list[RunSpec], base_train: dict, where: str) -> None:
    """Turn relative `batch` / `steps` of the runs into numbers, in place.

    `{times: F}`: F times the scale's value (`base.train` at this scale, else the default), so the ratio to the
    other runs is the same at every scale. `{match_flops: LABEL}`: the batch that gives run LABEL's training
    FLOPs per iteration (or the steps that give its total training FLOPs) with this run's model at this scale;
    such a value's ratio to other runs follows the models, so it is exempt from the ratio check.
    """
    trained = [r for r in runs if r.trains]
    for run in trained:
        for key in RATIO_KEYS:
            spec = run.train.get(key)
            if not isinstance(spec, dict):
                continue
            bad = set(spec) - {"times", "match_flops"}
            if bad or len(spec) != 1:
                raise UserError(f"{where}: run {run.label!r}: train.{key} must be a number, {{times: FACTOR}} or "
                                f"{{match_flops: RUN LABEL}}, got {spec!r}")
            if "times" in spec:
                factor = spec["times"]
                if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
                    raise UserError(f"{where}: run {run.label!r}: train.{key}.times must be a positive number, "
                                    f"got {factor!r}")
                scale = {k: v for k, v in run.train.items() if k != key}
                if key in base_train:
                    scale[key] = base_train[key]
                run.train[key] = max(1, round(factor * fill_defaults(scale, "train", f"{where}: ")[key]))
    by_label = {r.label: r for r in trained}
    for run in trained:
        for key in RATIO_KEYS:  # batch first: matching steps needs this run's batch
            spec = run.train.get(key)
            if not isinstance(spec, dict):
                continue
            ref = by_label.get(spec["match_flops"])
            if ref is None or ref is run or isinstance(ref.train.get(key), dict):
                raise UserError(f"{where}: run {run.label!r}: train.{key}.match_flops names {spec['match_flops']!r}, "
                                f"which must be another run with a number or {{times: F}} there; runs: "
                                f"{', '.join(by_label)}")
            ref_cfg = fill_defaults(ref.train, "train", f"{where}, run {ref.label!r}: ")
            probe = {**run.train, key: ref_cfg[key]}
            ref_tf, tf = _train_tflops(ref.train, f"{where}, run {ref.label!r}: "), \
                _train_tflops(probe, f"{where}, run {run.label!r}: ")
            # batch: FLOPs per iteration scale with it; steps (at this run's batch): total FLOPs scale with them
            run.train[key] = max(1, round(ref_cfg[key] * ref_tf / tf))
            run.unmatched.setdefault(key, f"matches the training FLOPs of {ref.label!r}")


def _train_tflops(train: dict, where: str) -> float:
    try:
        return expected_train_tflops(*run_model(train))
    except UserError as exc:
        raise UserError(f"{where}{exc}") from None


def check_ratios(runs: list[RunSpec], where: str) -> None:
    """Every pair of runs keeps the batch and steps ratios it has at paper scale, unless marked `unmatched`."""
    for run in runs:
        row = run.ratios
        for key in RATIO_KEYS:
            if not row or f"paper_{key}" not in row or key in run.unmatched:
                continue
            if abs(row[key] / row[f"paper_{key}"] - 1) > RATIO_TOLERANCE:
                raise UserError(
                    f"{where}: run {run.label!r} has {row[key]:.3g}x the {key} of {row['reference']!r} but "
                    f"{row[f'paper_{key}']:.3g}x at paper scale, so their comparison is not matched; state train.{key} "
                    f"relative to the scale ({{times: {row[f'paper_{key}']:.3g}}}) or to a run ({{match_flops: LABEL}}), "
                    f"or mark it intended (unmatched: {{{key}: why}})")


def ratio_table(runs: list[RunSpec], paper: list[RunSpec]) -> dict[str, dict]:
    """run id -> its batch and steps over those of a reference run, here and at paper scale.

    A run's paper-scale counterpart has its label, else its (paper_row, paper_setting) (smoke scales often
    run fewer, smaller runs that stand for paper rows). Runs without one show their ratios only here.
    """
    trained = [r for r in runs if r.trains]
    if not trained:
        return {}
    by_label = {r.label: r for r in paper if r.trains}
    by_row = {(r.paper_row, r.paper_setting): r for r in paper if r.trains and r.paper_row}
    counterpart = {r.id: by_label.get(r.label) or by_row.get((r.paper_row, r.paper_setting)) for r in trained}
    common = [r for r in trained if counterpart[r.id]]
    ref = next((r for r in common if not r.unmatched), common[0] if common else trained[0])
    here = {r.id: fill_defaults(r.train) for r in trained}
    there = {r.id: fill_defaults(counterpart[r.id].train) for r in common}
    table = {}
    for run in trained:
        row = {"reference": ref.label, "unmatched": dict(run.unmatched)}
        for key in RATIO_KEYS:
            row[key] = here[run.id][key] / here[ref.id][key]
            if run.id in there and ref.id in there:
                row[f"paper_{key}"] = there[run.id][key] / there[ref.id][key]
        table[run.id] = row
    return table


# ---------------------------------------------------------------- validation
def model_args(train: dict) -> tuple[str, dict, dict]:
    """(registry name, `create_model` keyword arguments, filled config) of a run's model.

    The data shapes the model when it can be read. A latent data set named by a variable that is not set (a dry
    run) cannot be read: the model then gets the data's usual shape from `resolution` (which must be a multiple
    of the autoencoder's downsampling).
    """
    from elit_bench.models.registry import LATENT_DOWNSAMPLE

    data = train.get("data", DEFAULTS["data"])
    if isinstance(data, str) and _VAR.search(data):
        cfg = fill_defaults(train)
        resolution = cfg["resolution"] or 256
        if resolution % LATENT_DOWNSAMPLE:
            raise UserError(f"train.resolution {resolution} is not a multiple of {LATENT_DOWNSAMPLE} (the autoencoder's "
                            "downsampling)")
        return cfg["model"], {"resolution": resolution, **cfg["model_kwargs"]}, cfg
    cfg = resolve_config(train, check_out=False)
    return cfg["model"], dict(cfg["model_kwargs"]), cfg


def run_model(train: dict):
    """(the run's model on the meta device, its filled config); see `model_args`."""
    from elit_bench.models import create_model

    name, kwargs, cfg = model_args(train)
    with torch.device("meta"):
        return create_model(name, **kwargs), cfg


def checkpoint_model(path: str):
    """The model of a harness checkpoint, on the meta device (the file is memory-mapped, not read)."""
    from elit_bench.checkpoint import checkpoint_config
    from elit_bench.models import create_model

    config = checkpoint_config(path)[0]
    with torch.device("meta"):
        return create_model(config["model"], **config.get("model_kwargs", {}))


def validate_run(run: RunSpec) -> None:
    """Schema, model, training budgets and every evaluation's sampling recipe and metrics; UserError otherwise."""
    from elit_bench.sampling.generate import prepare

    if run.compute:
        return
    where = f"suite {run.suite!r} at scale {run.scale!r}, run {run.label!r}: "
    try:
        if run.checkpoint:
            model, cfg = checkpoint_model(run.checkpoint), {"snapshot_every": None, "steps": None}
        else:
            fill_defaults(run.train, "train", where)
            model, cfg = run_model(run.train)
            training_budgets(model, cfg)
    except UserError as exc:
        raise UserError(f"{where}{exc}") from None
    for ev in run.evals:
        at = f"{where[:-2]}, eval {ev.label!r}: "
        sample = check("sample", SampleSettings, ev.sample, at)
        check("metrics", MetricsSettings, ev.metrics, at)
        snapshots = cfg["snapshot_every"] and cfg["steps"]
        if sample.checkpoint_step and not (snapshots and sample.checkpoint_step % cfg["snapshot_every"] == 0
                                           and sample.checkpoint_step <= cfg["steps"]):
            raise UserError(f"{at}sample.checkpoint_step {sample.checkpoint_step} is not a snapshot step: it must be a "
                            f"multiple of train.snapshot_every ({cfg['snapshot_every']}) up to train.steps "
                            f"({cfg['steps']})")
        try:
            recipe = sample.recipe(getattr(model, "max_budget", None))
            # TeaCache's skip plan reads the trained timestep embedder: the meta model checks the rest
            prepare(model, dataclasses.replace(recipe, teacache=None))
        except UserError as exc:
            raise UserError(f"{at}{exc}") from None


def resize_model(name: str | None, size: str) -> str | None:
    """'ELIT-DiT-XL/2' with size 'B' -> 'ELIT-DiT-B/2' (names with no size are left alone)."""
    if not name:
        return name
    return re.sub(r"-(S|B|L|XL)/", f"-{size}/", name)


def _substitute(tree, values: dict, strict: bool, suite: str):
    """Replace ${NAME} in strings; unknown names raise (strict) or stay as written (dry runs)."""
    if isinstance(tree, dict):
        return {k: _substitute(v, values, strict, suite) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_substitute(v, values, strict, suite) for v in tree]
    if isinstance(tree, str):
        missing = [m for m in _VAR.findall(tree) if m not in values]
        if missing and strict:
            raise UserError(f"suite {suite!r} needs variable(s) {', '.join(missing)}: export them or pass "
                            f"--set var.{missing[0]}=VALUE (`elit-bench suites --json` describes each)")
        return _VAR.sub(lambda m: str(values.get(m.group(1), m.group(0))), tree)
    return tree


def load_suite(name_or_path: str) -> Suite:
    """A suite by name (from `suites/`) or path; validated, with errors naming the problem."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        path = suites_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise choices_error("suite", name_or_path, list_suites())
    raw = parse_yaml(read_text(path, "suite file"), f"suite file {str(path)!r}")
    validate(raw, path)
    return Suite(raw["name"], raw.get("title", raw["name"]), raw, path)


def validate(raw, path) -> None:
    where = f"suite file {str(path)!r}"
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping with name, base, runs and scales")
    unknown = set(raw) - SUITE_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(SUITE_KEYS)}")
    for key in ("name", "runs", "scales"):
        if key not in raw:
            raise UserError(f"{where} is missing {key!r}")
    if not isinstance(raw["runs"], list) or not raw["runs"]:
        raise UserError(f"{where}: 'runs' must be a non-empty list")
    for entry in raw["runs"]:
        _check_entry(entry, RUN_KEYS, f"{where}: run")
    for entry in raw.get("evals") or []:
        _check_entry(entry, EVAL_KEYS, f"{where}: eval")
    if not isinstance(raw["scales"], dict) or not raw["scales"]:
        raise UserError(f"{where}: 'scales' must map scale names ({', '.join(SCALES)}) to overrides")
    for scale, body in raw["scales"].items():
        if scale not in SCALES:
            raise choices_error(f"scale in {where}", scale, SCALES)
        bad = set(body or {}) - SCALE_KEYS
        if bad:
            raise UserError(f"{where}: scale {scale!r} has unknown key(s) {sorted(bad)}; valid: {sorted(SCALE_KEYS)}")
    for section in SECTION_KEYS & set(raw.get("base") or {}):
        if not isinstance(raw["base"][section], dict):
            raise UserError(f"{where}: base.{section} must be a mapping")
    _check_report(raw, where)


def _check_report(raw: dict, where: str) -> None:
    """`report:` is a mapping of a known kind; a claims report's tests name runs and evaluations the suite has."""
    report = raw.get("report")
    if report is None:
        return
    if not isinstance(report, dict):
        raise UserError(f"{where}: 'report' must be a mapping, e.g. {{kind: table}}, got {report!r}")
    kind = report.get("kind", "table")
    if kind not in REPORT_KINDS:
        raise choices_error(f"report kind in {where}", kind, REPORT_KINDS)
    if kind == "claims":
        from elit_bench.results.claims import validate_claims

        runs, evals = static_labels(raw)
        validate_claims(report, runs, evals, where)


def static_labels(raw: dict) -> tuple[set[str], set[str]]:
    """Every run label and every evaluation label the suite can produce at any scale (matrices expanded)."""
    scales = [body or {} for body in (raw.get("scales") or {}).values()]
    base_model = ((raw.get("base") or {}).get("train") or {}).get("model")
    runs = set()
    for entries in [raw.get("runs") or []] + [s.get("runs") or [] for s in scales]:
        for entry in (e for e in entries if isinstance(e, dict)):
            for item in expand_matrix(entry):
                label = item.get("label") or (item.get("train") or {}).get("model") or base_model \
                    or item.get("checkpoint")
                runs.add(str(label))
    evals = set()
    for entries in [raw.get("evals") or []] + [s.get("evals") or [] for s in scales]:
        evals |= {str(item.get("label") or "eval") for entry in entries if isinstance(entry, dict)
                  for item in expand_matrix(entry)}
    if not any(s.get("evals") for s in scales) and not raw.get("evals"):
        evals.add("eval")  # a suite without evaluations gets one, labelled "eval"
    return runs, evals


def _check_entry(entry, keys, where) -> None:
    if not isinstance(entry, dict):
        raise UserError(f"{where} entries must be mappings, got {entry!r}")
    bad = set(entry) - keys
    if bad:
        raise UserError(f"{where} {entry.get('label')!r} has unknown key(s) {sorted(bad)}; valid: {sorted(keys)}")
    unmatched = entry.get("unmatched")
    if unmatched is not None and not (isinstance(unmatched, dict) and set(unmatched) <= set(RATIO_KEYS)
                                      and all(isinstance(v, str) and v for v in unmatched.values())):
        raise UserError(f"{where} {entry.get('label')!r}: unmatched must map batch and/or steps to the reason their "
                        f"ratio to the other runs changes with the scale, got {unmatched!r}")
