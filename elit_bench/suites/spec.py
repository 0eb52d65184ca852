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
      - {label: ELIT-DiT, paper_row: ELIT-DiT, train: {model: ELIT-DiT-B/2}}
      - {label: "group {group_size}", matrix: {train.model_kwargs.group_size: [1, 2, 4]}}
    evals:                                              # sampling + metrics, applied to every run
      - {label: -G, paper_guidance: -G}
      - {label: "budget {sample.budget}", matrix: {sample.budget: [1, 4, 8]}, only: [ELIT-MB]}
    scales:                                             # deep-merged onto base
      paper: {}
      proxy: {size: B, train: {steps: 20000}, metrics: {num_samples: 2000}}
      smoke: {train: {data: digits, steps: 30, ...}, metrics: {names: [fd_digits], ...}}

A scale's `size` swaps the model size in every model name (`-XL/` -> `-B/`),
so one suite file runs from a CPU smoke test to the paper's scale. The run
id is a readable label plus the hash of the run's canonical resolved config.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from elit_bench.errors import UserError, choices_error

SCALES = ("paper", "proxy", "smoke")
SUITE_KEYS = {"name", "title", "paper", "report", "variables", "base", "runs", "evals", "scales", "leaderboard"}
SECTION_KEYS = {"train", "sample", "metrics", "compute"}
RUN_KEYS = {"label", "paper_row", "paper_setting", "matrix", "train", "sample", "metrics", "compute"}
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
        return f"{slug(self.label)}-{canonical_hash({'sample': self.sample, 'metrics': self.metrics}, 8)}"


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

    @property
    def config_hash(self) -> str:
        return canonical_hash(self.compute if self.compute else self.train)

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
        """Expand the suite at `scale` into runs; `overrides` deep-merge last (`--set`)."""
        scales = self.raw.get("scales") or {}
        if scale not in scales:
            raise choices_error(f"scale of suite {self.name!r}", scale, list(scales))
        chosen = scales[scale] or {}
        base = deep_merge(self.raw.get("base") or {}, {k: v for k, v in chosen.items() if k in SECTION_KEYS})
        base = deep_merge(base, overrides or {})
        values = {**{k: os.environ[k] for k in self.variables if k in os.environ}, **(variables or {})}
        evals = [e for entry in (chosen.get("evals") or self.raw.get("evals") or [{"label": "eval"}])
                 for e in expand_matrix(entry)]
        runs = []
        for entry in (chosen.get("runs") or self.raw["runs"]):
            for run in expand_matrix(entry):
                train = _substitute(deep_merge(base.get("train") or {}, run.get("train") or {}), values,
                                    strict_variables, self.name)
                if chosen.get("size"):
                    train["model"] = resize_model(train.get("model"), chosen["size"])
                if run.get("compute"):
                    compute = deep_merge(base.get("compute") or {}, run["compute"])
                    runs.append(RunSpec(self.name, scale, str(run.get("label") or compute.get("model")),
                                        run.get("paper_row"), {}, [], run.get("paper_setting"), compute))
                    continue
                if not train.get("model"):
                    raise UserError(f"suite {self.name!r}: run {run.get('label')!r} names no train.model")
                spec = RunSpec(self.name, scale, str(run.get("label") or train["model"]), run.get("paper_row"), train,
                               paper_setting=run.get("paper_setting"))
                for ev in evals:
                    if ev.get("only") and spec.label not in ev["only"] and run.get("label") not in ev["only"]:
                        continue
                    sample = _substitute(deep_merge(deep_merge(base.get("sample") or {}, run.get("sample") or {}),
                                                    ev.get("sample") or {}), values, strict_variables, self.name)
                    metrics = _substitute(deep_merge(deep_merge(base.get("metrics") or {}, run.get("metrics") or {}),
                                                     ev.get("metrics") or {}), values, strict_variables, self.name)
                    spec.evals.append(EvalSpec(str(ev.get("label") or "eval"), ev.get("paper_guidance"), sample, metrics,
                                               ev.get("series")))
                runs.append(spec)
        ids = [r.id for r in runs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise UserError(f"suite {self.name!r} at scale {scale!r} defines the same run twice: {dupes}")
        return runs


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
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"suite file {str(path)!r} is not valid YAML: {exc}") from exc
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


def _check_entry(entry, keys, where) -> None:
    if not isinstance(entry, dict):
        raise UserError(f"{where} entries must be mappings, got {entry!r}")
    bad = set(entry) - keys
    if bad:
        raise UserError(f"{where} {entry.get('label')!r} has unknown key(s) {sorted(bad)}; valid: {sorted(keys)}")
