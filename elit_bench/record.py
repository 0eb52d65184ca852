"""The result record: one evaluation's numbers with what they were measured on, as one typed JSON file.

Suites write it (`suites.runner`: an evaluation's record and a measurement's; `suites.floor`: the real-data
floor's) and `results` reads it, both through `Record`, so its keys are declared and checked in one place.
A record file is the model's fields in declaration order, every key present (null where it does not apply),
as `json.dumps(..., indent=1)`: `Record.from_json(text).to_json() == text` for every record this version
writes.

Versions: 1, files without `schema_version` (before it was added; keys in the writer's order, keys that did
not apply left out); 2, `schema_version` first and every field present. Both read the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from elit_bench.checkpoint import atomic_write
from elit_bench.errors import UserError

SCHEMA_VERSION = 2
ADVICE = "delete it and rerun the suite"


class Provenance(BaseModel):
    """What a record's provenance must hold where it has it; the rest (versions, device, eval, ...) is free."""

    model_config = ConfigDict(extra="allow", strict=True)

    code_version: str | None = None
    train_config: dict | None = None  # the resolved training config (an evaluation of a trained or given model)
    compute: dict | None = None  # the measurement's settings (a compute run)


class Record(BaseModel):
    """One evaluation (or measurement, or real-data floor) of a suite run: the identifying labels, the metrics and
    their intervals, the compute figures beside them, and provenance. Unknown keys are kept as they are."""

    model_config = ConfigDict(extra="allow", strict=True)

    schema_version: int = SCHEMA_VERSION
    suite: str
    scale: str
    run_id: str
    run_label: str
    paper_row: str | None = None
    paper_setting: str | None = None
    eval_id: str
    eval_label: str
    paper_guidance: str | None = None
    series: str | None = None  # a figure's line
    model: str
    train_step: int | None = None  # the checkpoint's step (None: a measurement or the real-data floor)
    metrics: dict[str, Any]
    intervals: dict[str, dict | None] | None = None  # per metric: low, high, level, method[, replicates]
    features: dict[str, dict] | None = None  # sample features beside the record: {metric: {file, sha256, ...}}
    training: dict | None = None  # the training curve in brief (suites.runner.training_summary)
    num_samples: int | None = None
    sample: dict | None = None  # the sampling recipe as run (steps, guidance, budget, noise seeds, ...)
    flops: dict | None = None
    data: dict | None = None  # the data the samples imitate, where no train_config says it (the floor)
    provenance: dict[str, Any]
    time: str | None = None

    @field_validator("provenance")
    @classmethod
    def _provenance(cls, value: dict) -> dict:
        Provenance.model_validate(value)  # checked, kept as written (its key order is the writer's)
        return value

    # ------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return self.model_dump()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=str)

    @classmethod
    def from_json(cls, text: str, source: str = "record", advice: str = ADVICE) -> Record:
        """A record from its JSON text; one-line UserError naming `source` and the first problem otherwise."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise UserError(f"{source} is not valid JSON ({exc}); {advice}") from None
        if not isinstance(raw, dict):
            raise UserError(f"{source} holds {json.dumps(raw)[:40]}, not a JSON object; {advice}")
        version = raw.setdefault("schema_version", 1)  # written before records had a version
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise UserError(f"{source} has schema_version {version}; this elit_bench reads up to {SCHEMA_VERSION}: "
                            "upgrade elit_bench to read it")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            problem = "missing" if err["type"] == "missing" else err["msg"][0].lower() + err["msg"][1:]
            raise UserError(f"{source} is malformed: {where}: {problem}; {advice}") from None

    @classmethod
    def read(cls, path, advice: str = ADVICE) -> Record:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"record {str(path)!r} is not valid JSON ({exc}); {advice}") from None
        except OSError as exc:
            raise UserError(f"record {str(path)!r} cannot be read ({exc.strerror or exc}); {advice}") from None
        return cls.from_json(text, f"record {str(path)!r}", advice)

    def write(self, path) -> Path:
        """Write atomically: a reader never sees half a record."""
        text = self.to_json()
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    # ------------------------------------------------------------ what the fields mean together
    @property
    def data_description(self) -> dict:
        """The data the record's samples imitate: {"name", "resolution"} (empty for measurements without data)."""
        return self.data or (self.provenance.get("train_config") or {}).get("data") or {}

    @property
    def train_config(self) -> dict:
        return self.provenance.get("train_config") or {}

    @property
    def seed(self) -> int | None:
        """The training seed (None: a measurement or the real-data floor)."""
        return self.train_config.get("seed")
