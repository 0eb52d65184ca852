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

Expansion makes each run one of three kinds, built and validated once:
`TrainingRun` (its `train` merged and filled), `CheckpointRun` and
`ComputeRun` (`compute: {kind: ...}`, a measurement, `suites.compute`);
every evaluation carries its `SampleSettings` and `MetricsSettings`. The
runner, the estimate and the dry-run plan dispatch on the kind.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import os
import re
from dataclasses import InitVar, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import torch

from elit_bench.checkpoint import canonical_hash, read_text
from elit_bench.errors import UserError, choices_error
from elit_bench.metrics.settings import MetricsSettings
from elit_bench.models import resize_model
from elit_bench.schema import SampleSettings, check
from elit_bench.suites.compute import ComputeSettings, compute_settings
from elit_bench.training.config import (
    DEFAULTS,
    expected_train_tflops,
    fill_defaults,
    identity_hash,
    resolve_config,
    training_budgets,
)
from elit_bench.yamlconfig import parse_yaml, set_dotted

log = logging.getLogger(__name__)

SCALES = ("paper", "proxy", "smoke", "cpu")  # cpu: a CPU-sized scale that is meant to separate (claims)
REPORT_KINDS = ("table", "plot", "claims")
SUITE_KEYS = {"name", "title", "paper", "report", "variables", "base", "runs", "evals", "scales", "leaderboard"}
SECTION_KEYS = {"train", "sample", "metrics", "compute"}
RUN_KEYS = {"label", "paper_row", "paper_setting", "matrix", "seeds", "unmatched", "train", "sample", "metrics",
            "compute", "checkpoint", "model"}  # model: a checkpoint run's registry name (dry runs)
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


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower() or "run"


@dataclass
class EvalSpec:
    """One evaluation of a run: its sampling and metrics keys as the suite gives them, and the settings they make
    (validated once, when the suite expands; `where` names the run and evaluation in the error)."""

    label: str
    paper_guidance: str | None
    sample: dict
    metrics: dict
    series: str | None = None  # a figure's line (e.g. "fewer steps" vs "fewer tokens")
    where: InitVar[str] = ""
    sample_settings: SampleSettings = field(init=False, repr=False, compare=False)
    metrics_settings: MetricsSettings = field(init=False, repr=False, compare=False)

    def __post_init__(self, where: str) -> None:
        self.sample_settings = check("sample", SampleSettings, self.sample, where)
        self.metrics_settings = check("metrics", MetricsSettings, self.metrics, where)

    @property
    def id(self) -> str:
        """Label plus the hash of the normalised settings: keys left at their defaults do not change it."""
        settings = {"sample": self.sample_settings.model_dump(exclude_defaults=True),
                    "metrics": self.metrics_settings.model_dump(exclude_defaults=True)}
        return f"{slug(self.label)}-{canonical_hash(settings, 8)}"

    def to_dict(self) -> dict:
        """The evaluation as the suite gave it (run.json, a record's provenance.eval, a launched run's spec)."""
        return {"label": self.label, "paper_guidance": self.paper_guidance, "sample": self.sample,
                "metrics": self.metrics, "series": self.series}


@dataclass
class RunSpec:
    """What every kind of run has: where it belongs, its labels and its evaluations. The kinds: `TrainingRun`,
    `CheckpointRun`, `ComputeRun`; consumers dispatch on them."""

    suite: str
    scale: str
    label: str
    paper_row: str | None = None
    paper_setting: str | None = None
    evals: list[EvalSpec] = field(default_factory=list)

    kind: ClassVar[str]

    @property
    def config_hash(self) -> str:
        raise NotImplementedError

    @property
    def id(self) -> str:
        return f"{slug(self.label)}-{self.config_hash}"

    @property
    def where(self) -> str:
        """The prefix of an error about this run."""
        return f"suite {self.suite!r} at scale {self.scale!r}, run {self.label!r}: "

    def to_json(self) -> str:
        """The run for a launched process (`RunSpec.from_json`)."""
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "evals"}
        return json.dumps({"kind": self.kind, **body, "evals": [e.to_dict() for e in self.evals]})

    @staticmethod
    def from_json(text: str) -> RunSpec:
        raw = json.loads(text)
        cls = RUN_KINDS[raw.pop("kind")]
        where = f"suite {raw['suite']!r} at scale {raw['scale']!r}, run {raw['label']!r}"
        raw["evals"] = [EvalSpec(**e, where=f"{where}, eval {e['label']!r}: ") for e in raw["evals"]]
        return cls(**raw)


@dataclass
class TrainingRun(RunSpec):
    """A model the suite trains (`train:` merged onto the scale's base), then evaluates.

    `config` and `model_args` are filled and validated once, after expansion settled relative batch and steps."""

    train: dict = field(default_factory=dict)
    # batch / steps whose ratio to other runs may change between scales, and why (`unmatched:` or a match)
    unmatched: dict = field(default_factory=dict)
    # batch and steps over a reference run's, here and at paper scale (`ratio_table`)
    ratios: dict | None = None
    # `train.init: {run: LABEL}`: the id of the suite's run whose final checkpoint this one fine-tunes
    init_run: str | None = None
    # `train.teacher: {run: LABEL}`: the id of the suite's run whose final checkpoint this one distils from
    teacher_run: str | None = None
    # settings that need the teacher (`distill_weight`), held here until the runner names the teacher's checkpoint
    with_teacher: dict = field(default_factory=dict)
    # starts (init / teacher) that are checkpoint runs of the suite: their files, by key
    start_checkpoints: dict = field(default_factory=dict)
    kind: ClassVar[str] = "training"

    @property
    def starts(self) -> list[str]:
        """Ids of the suite's runs this one needs finished first (the runs it fine-tunes and distils from)."""
        return [i for i in dict.fromkeys((self.init_run, self.teacher_run)) if i is not None]

    @cached_property
    def config(self) -> dict:
        """The training config validated, every key filled."""
        return fill_defaults(self.train, "train")

    @cached_property
    def model_args(self) -> tuple[str, dict, dict]:
        """(registry name, `create_model` keyword arguments, resolved config); see `model_args`."""
        return model_args(self.train)

    def meta_model(self):
        """The run's model on the meta device."""
        from elit_bench.models import create_model

        name, kwargs, _ = self.model_args
        with torch.device("meta"):
            return create_model(name, **kwargs)

    @cached_property
    def config_hash(self) -> str:
        """The training identity: model, data, optimisation, seed (not steps: raising them continues the run),
        and the runs it starts from and distils from, if any."""
        own = identity_hash(self.train)
        starts = [self.init_run] + ([self.teacher_run] if self.teacher_run is not None else [])
        starts += [self.with_teacher] if self.with_teacher else []
        return own if starts == [None] else canonical_hash([own, *starts], 10)


@dataclass
class CheckpointRun(RunSpec):
    """A harness checkpoint evaluated without training (e.g. imported with `elit-bench convert`)."""

    checkpoint: str = ""
    # the registry name the checkpoint holds: lets a dry run plan before the file exists (a variable not set)
    model: str | None = None
    kind: ClassVar[str] = "checkpoint"

    @property
    def config_hash(self) -> str:
        return canonical_hash({"checkpoint": self.checkpoint}, 10)

    def meta_model(self):
        if self.model is not None and _VAR.search(self.checkpoint):
            from elit_bench.models import create_model

            with torch.device("meta"):
                return create_model(self.model)
        model = checkpoint_model(self.checkpoint)
        if self.model is not None and model.name != self.model:
            raise UserError(f"{self.where}checkpoint {self.checkpoint!r} holds {model.name}, not {self.model} as the "
                            "suite says")
        return model


@dataclass
class ComputeRun(RunSpec):
    """A measurement without training (`compute: {kind: ...}`): one record, no evaluations."""

    compute: dict = field(default_factory=dict)
    kind: ClassVar[str] = "compute"

    @cached_property
    def settings(self) -> ComputeSettings:
        """The measurement's settings, validated (`suites.compute`)."""
        return compute_settings(self.compute, self.where)

    @property
    def config_hash(self) -> str:
        return canonical_hash(self.compute, 10)


RUN_KINDS = {cls.kind: cls for cls in (TrainingRun, CheckpointRun, ComputeRun)}


@dataclass
class Suite:
    name: str
    title: str
    raw: dict
    path: Path
    # expansions made so far: one per (scale, overrides, variables) in a command (`runs`)
    _expanded: dict = field(default_factory=dict, repr=False, compare=False)

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
        before anything is written, trained or submitted. A command asks for the same expansion several times
        (a run, then its report): it is made once (a strict one, variables all set, also serves a dry one).
        """
        values = {**{k: os.environ[k] for k in self.variables if k in os.environ}, **(variables or {})}
        key = canonical_hash([scale, overrides or {}, values], 16)
        cached = self._expanded.get((key, True)) or self._expanded.get((key, strict_variables))
        if cached is None:
            cached = self._expanded[(key, strict_variables)] = self._validated(scale, overrides, values,
                                                                              strict_variables)
        return list(cached)

    def _validated(self, scale: str, overrides: dict | None, values: dict, strict: bool) -> list[RunSpec]:
        where = f"suite {self.name!r} at scale {scale!r}"
        runs = self._expand(scale, overrides, values, strict)
        for run in runs:
            validate_run(run)
        ids = [r.id for r in runs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise UserError(f"{where} defines the same run twice: {dupes}")
        check_labels(runs, where)
        paper = runs if scale == "paper" or "paper" not in self.raw["scales"] else \
            self._expand("paper", None, values, False)
        table = ratio_table(runs, paper)
        for run in runs:
            if isinstance(run, TrainingRun):
                run.ratios = table.get(run.id)
        check_ratios(runs, where)
        return runs

    def _expand(self, scale: str, overrides: dict | None, values: dict, strict: bool) -> list[RunSpec]:
        """The runs of `scale` as the suite file and `overrides` write them (not yet validated)."""
        scales = self.raw.get("scales") or {}
        if scale not in scales:
            raise choices_error(f"scale of suite {self.name!r}", scale, list(scales))
        chosen = scales[scale] or {}
        base = deep_merge(self.raw.get("base") or {}, {k: v for k, v in chosen.items() if k in SECTION_KEYS})
        base = deep_merge(base, overrides or {})
        at = _Expansion(self.name, scale, chosen.get("size"), base, values, strict, OverrideUsage(overrides or {}))
        evals = [e for entry in (chosen.get("evals") or self.raw.get("evals") or [{"label": "eval"}])
                 for e in expand_matrix(entry)]
        entries = [r for entry in (chosen.get("runs") or self.raw["runs"])
                   for item in expand_matrix(entry) for r in expand_seeds(item)]
        runs = [at.run(entry, evals) for entry in entries]
        resolve_relative(runs, base.get("train") or {}, f"suite {self.name!r} at scale {scale!r}")
        resolve_init_runs(runs, f"suite {self.name!r} at scale {scale!r}")
        at.usage.check()
        return runs


@dataclass
class _Expansion:
    """One scale's expansion: run and evaluation entries -> runs of their kind, merged onto the scale's base."""

    suite: str
    scale: str
    size: str | None  # the scale's model size (`size: B`)
    base: dict
    values: dict  # ${NAME} -> value
    strict: bool  # unknown ${NAME}: an error (else left as written: a dry run)
    usage: OverrideUsage

    def substitute(self, tree):
        return _substitute(tree, self.values, self.strict, self.suite)

    def run(self, entry: dict, evals: list[dict]) -> RunSpec:
        trains = not (entry.get("compute") or entry.get("checkpoint"))
        self.usage.run(entry, self._usage_label(entry), trains)
        common = {"suite": self.suite, "scale": self.scale, "paper_row": entry.get("paper_row"),
                  "paper_setting": entry.get("paper_setting")}
        if entry.get("compute"):
            compute = deep_merge(self.base.get("compute") or {}, entry["compute"])
            return ComputeRun(label=str(entry.get("label") or compute.get("model")), compute=compute, **common)
        if entry.get("checkpoint"):
            checkpoint = self.substitute(entry["checkpoint"])
            run = CheckpointRun(label=str(entry.get("label") or checkpoint), checkpoint=checkpoint,
                                model=entry.get("model"), **common)
        else:
            train = self.substitute(deep_merge(self.base.get("train") or {}, entry.get("train") or {}))
            if self.size and train.get("model"):
                train["model"] = resize_model(train["model"], self.size)
            # {run: LABEL}: resolved below
            starts = {key: train.pop(key) for key in ("init", "teacher") if isinstance(train.get(key), dict)}
            # the distillation weight goes with a teacher that is a run: the runner puts both back
            with_teacher = {"distill_weight": train.pop("distill_weight")} \
                if "teacher" in starts and "distill_weight" in train else {}
            run = TrainingRun(label=str(entry.get("label") or train.get("model")), train=train,
                              unmatched=dict(entry.get("unmatched") or {}), with_teacher=with_teacher, **common)
            run.start_specs = starts
        run.evals = [self.evaluation(run, entry, ev) for ev in evals
                     if not ev.get("only") or run.label in ev["only"] or entry.get("label") in ev["only"]]
        return run

    def evaluation(self, run: RunSpec, entry: dict, ev: dict) -> EvalSpec:
        label = str(ev.get("label") or "eval")
        self.usage.evaluation(entry, ev, f"{run.label} / {label}")
        sample, metrics = (self.substitute(deep_merge(deep_merge(self.base.get(k) or {}, entry.get(k) or {}),
                                                      ev.get(k) or {})) for k in ("sample", "metrics"))
        return EvalSpec(label, ev.get("paper_guidance"), sample, metrics, ev.get("series"),
                        where=f"{run.where[:-2]}, eval {label!r}: ")

    def _usage_label(self, entry: dict) -> str:
        """The run's label as the --set messages name it (before variables are substituted)."""
        return str(entry.get("label") or (entry.get("compute") or {}).get("model")
                   or (entry.get("train") or {}).get("model") or (self.base.get("train") or {}).get("model")
                   or entry.get("checkpoint"))


class OverrideUsage:
    """Which runs and evaluations use each `--set` key and which set their own: a key no run uses is refused, one
    that some replace is applied to the others with a warning naming those."""

    def __init__(self, overrides: dict):
        self.values = leaf_keys(overrides)
        self.using = {key: [] for key in self.values}
        self.replacing = {key: [] for key in self.values}

    def run(self, entry: dict, label: str, trains: bool) -> None:
        """A run's train.* keys: measurements and given checkpoints train nothing, so they replace them all."""
        for key in self.values:
            if key.startswith("train."):
                replaced = not trains or has_key(entry, key)
                (self.replacing if replaced else self.using)[key].append(label)

    def evaluation(self, entry: dict, ev: dict, label: str) -> None:
        for key in self.values:
            if not key.startswith("train."):
                replaced = has_key(entry, key) or has_key(ev, key)
                (self.replacing if replaced else self.using)[key].append(label)

    def check(self) -> None:
        for key, value in self.values.items():
            using, replacing = self.using[key], list(dict.fromkeys(self.replacing[key]))
            what = "runs" if key.startswith("train.") else "evaluations"
            if not using:
                raise UserError(f"--set {key}={value}: no run uses it: " + (
                    f"every one of the suite's {what} sets its own {key} ({', '.join(replacing)}); "
                    "change the suite file instead" if replacing else f"the suite has no {what}"))
            if replacing:
                log.warning("--set %s=%s applies to %d of the suite's %s; these set their own: %s", key, value,
                            len(using), what, ", ".join(replacing))


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
        settings.setdefault(run.label, set()).add(canonical_hash([_setting(run), [e.id for e in run.evals]], 10))
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


def _setting(run: RunSpec):
    """What a run is, up to its training seed."""
    if isinstance(run, TrainingRun):
        return [run.kind, {k: v for k, v in run.train.items() if k != "seed"}]
    return [run.kind, run.checkpoint if isinstance(run, CheckpointRun) else run.compute]


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
    trained = [r for r in runs if isinstance(r, TrainingRun)]
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


def resolve_init_runs(runs: list[RunSpec], where: str) -> None:
    """`train.init: {run: LABEL}` (fine-tuning, e.g. DyDiT from a trained DiT) -> `init_run`, and `train.teacher:
    {run: LABEL}` (distillation) -> `teacher_run`: the id of the run of that label listed earlier, with this run's
    seed where LABEL has several; in place, once batch and steps are settled (they are part of that run's id).
    The runner gives the training that run's final checkpoint, or the file of a checkpoint run."""
    seen: dict[str, list[RunSpec]] = {}
    for run in runs:
        for key, spec in getattr(run, "start_specs", {}).items():
            label = spec.get("run") if set(spec) == {"run"} else None
            if label is None:
                raise UserError(f"{where}: run {run.label!r}: train.{key} must be a checkpoint path or "
                                f"{{run: LABEL}} (a run of this suite listed before it), got {spec!r}")
            candidates = seen.get(str(label), [])
            same_seed = [r for r in candidates if getattr(r, "train", {}).get("seed") == run.train.get("seed")]
            chosen = same_seed if len(candidates) > 1 else candidates
            if len(chosen) != 1:
                raise UserError(f"{where}: run {run.label!r}: train.{key} names run {label!r}, which must be listed "
                                f"before it with one seed, or with this run's seed {run.train.get('seed')}; runs "
                                f"before it: {', '.join(seen) or 'none'}")
            setattr(run, f"{key}_run", chosen[0].id)
            if isinstance(chosen[0], CheckpointRun):  # an imported checkpoint: its file, nothing to wait for
                run.start_checkpoints[key] = chosen[0].checkpoint
        seen.setdefault(run.label, []).append(run)


def _train_tflops(train: dict, where: str) -> float:
    try:
        return expected_train_tflops(*run_model(train))
    except UserError as exc:
        raise UserError(f"{where}{exc}") from None


def check_ratios(runs: list[RunSpec], where: str) -> None:
    """Every pair of runs keeps the batch and steps ratios it has at paper scale, unless marked `unmatched`."""
    for run in (r for r in runs if isinstance(r, TrainingRun)):
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
    trained = [r for r in runs if isinstance(r, TrainingRun)]
    if not trained:
        return {}
    paper = [r for r in paper if isinstance(r, TrainingRun)]
    by_label = {r.label: r for r in paper}
    by_row = {(r.paper_row, r.paper_setting): r for r in paper if r.paper_row}
    counterpart = {r.id: by_label.get(r.label) or by_row.get((r.paper_row, r.paper_setting)) for r in trained}
    common = [r for r in trained if counterpart[r.id]]
    ref = next((r for r in common if not r.unmatched), common[0] if common else trained[0])
    here = {r.id: r.config for r in trained}
    there = {r.id: counterpart[r.id].config for r in common}
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
    """Schema, model, training budgets and every evaluation's sampling recipe; UserError otherwise. The settings
    themselves were validated when the run was made."""
    from elit_bench.sampling.generate import prepare

    if isinstance(run, ComputeRun):
        run.settings  # noqa: B018 (validated here, before anything runs)
        return
    try:
        if isinstance(run, TrainingRun):
            run.config  # noqa: B018 (the schema's message first)
            model, cfg = run.meta_model(), run.model_args[2]
            training_budgets(model, cfg)
        else:
            model, cfg = run.meta_model(), {"snapshot_every": None, "steps": None}
    except UserError as exc:
        raise UserError(f"{run.where}{exc}") from None
    for ev in run.evals:
        at = f"{run.where[:-2]}, eval {ev.label!r}: "
        step = ev.sample_settings.checkpoint_step
        snapshots = cfg["snapshot_every"] and cfg["steps"]
        if step and not (snapshots and step % cfg["snapshot_every"] == 0 and step <= cfg["steps"]):
            raise UserError(f"{at}sample.checkpoint_step {step} is not a snapshot step: it must be a multiple of "
                            f"train.snapshot_every ({cfg['snapshot_every']}) up to train.steps ({cfg['steps']})")
        try:
            recipe = ev.sample_settings.recipe(getattr(model, "max_budget", None))
            # TeaCache's skip plan reads the trained timestep embedder: the meta model checks the rest
            prepare(model, dataclasses.replace(recipe, teacache=None))
        except UserError as exc:
            raise UserError(f"{at}{exc}") from None


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
        from elit_bench.suites.claims_format import validate_claims

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
