"""The docs/add-a-*.md guides, followed step by step with their own code blocks (tiny shapes)."""

import json
import re
import sys
from pathlib import Path

import pytest

from elit_bench.cli import main
from elit_bench.models import create_model, registry

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def code_blocks(guide: str, lang: str) -> list[str]:
    """The `lang` code blocks of docs/`guide`, in order."""
    return [body for kind, body in FENCE.findall((ROOT / "docs" / guide).read_text()) if kind == lang]


def named_files(guide: str) -> dict[str, str]:
    """Code blocks whose first line is a comment naming a file ('# pkg/file.py') -> {path: text}."""
    out = {}
    for _, body in FENCE.findall((ROOT / "docs" / guide).read_text()):
        first = body.split("\n", 1)[0]
        if first.startswith("# ") and "/" in first and " " not in first[2:]:
            out[first[2:]] = body
    return out


# ---------------------------------------------------------------- add-a-model.md
def toml_tables(text: str) -> dict[str, dict[str, str]]:
    """The guide's pyproject.toml: table -> its `key = "string"` entries (tomllib is Python 3.11+)."""
    tables, table = {}, ""
    for line in text.splitlines():
        if header := re.fullmatch(r"\[(.+)\]", line.strip()):
            table = header.group(1)
        elif pair := re.fullmatch(r'([\w-]+) = "(.*)"', line.strip()):
            tables.setdefault(table, {})[pair.group(1)] = pair.group(2)
    return tables


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """The guide's package, installed as `pip install -e` would record it: the module on sys.path and a
    .dist-info whose entry_points.txt holds the pyproject's entry points (no pip, no network)."""
    files = named_files("add-a-model.md")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    tables = toml_tables(files["adapter-dit/pyproject.toml"])
    project = tables["project"]
    dist = tmp_path / "site" / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{table.split('.', 2)[2].strip(chr(34))}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
        for table, points in tables.items() if table.startswith("project.entry-points.")))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(tmp_path / "adapter-dit"))
    # a registry of its own: the plugin's names do not leak into other tests
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    monkeypatch.setattr(registry, "_structure", dict(registry._structure))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_plugin_error", None)
    yield tmp_path
    sys.modules.pop("adapter_dit", None)


def test_add_a_model_plugin_is_listed_builds_and_its_flops_match(installed_plugin, capsys):
    assert "adapter_dit" not in sys.modules  # nothing registered it but the entry point
    assert main(["models", "Adapter-*"]) == 0
    assert capsys.readouterr().out.split() == [f"Adapter-DiT-{s}/2" for s in ("B", "L", "S", "XL")]

    model = create_model("ELIT-Adapter-DiT-S/2", resolution=64, hidden_size=32, depth=3, num_heads=2,
                         group_size=2, bottleneck=8)
    assert type(model.backbone).__name__ == "AdapterDiT" and model.max_budget == 4
    assert model.macs()["token_ops"] > 0  # the adapters are counted

    # the guide's command, at tiny width: measured FLOPs (torch's counter on a real forward) = macs()
    for name, extra in (("Adapter-DiT-S/2", []), ("ELIT-Adapter-DiT-S/2", ["--set", "group_size=2"]),
                        ("ELIT-Adapter-DiT-S/2", ["--set", "group_size=2", "--budget", "1"])):
        argv = ["flops", name, "--resolution", "64", "--measure", "--json", "--set", "hidden_size=32",
                "--set", "depth=3", "--set", "num_heads=2", "--set", "bottleneck=8", *extra]
        assert main(argv) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["measured_forward_gflops"] == pytest.approx(out["forward_gflops"], rel=1e-9), name


def test_add_a_model_suite_validates_and_resizes_the_plugin_models(installed_plugin, capsys):
    suite = str(installed_plugin / "adapter-dit" / "adapter.yaml")
    for scale, size in (("smoke", "S"), ("proxy", "B")):
        assert main(["run", suite, "--scale", scale, "--dry-run", "--json", "--no-estimate",
                     "--out", str(installed_plugin / "runs")]) == 0
        plan = json.dumps(json.loads(capsys.readouterr().out))
        assert f"Adapter-DiT-{size}/2" in plan and f"ELIT-Adapter-DiT-{size}/2" in plan


def test_a_broken_plugin_is_one_line(installed_plugin, capsys):
    package = installed_plugin / "adapter-dit" / "adapter_dit" / "__init__.py"
    package.write_text(package.read_text().replace("from torch import nn", "from torch import nnn"))
    assert main(["models", "Adapter-*"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model plugin 'adapter-dit' (adapter_dit:register from adapter-dit" in err


# ---------------------------------------------------------------- add-a-guidance-mode.md
def test_add_a_guidance_mode_excerpts_are_the_code():
    """Each excerpt the guide quotes is in the file it names, line for line (so the walkthrough cannot go stale)."""
    excerpts = [b for b in code_blocks("add-a-guidance-mode.md", "python") if b.startswith("# elit_bench/")]
    assert len(excerpts) == 3
    for block in excerpts:
        path, *lines = block.splitlines()
        source = (ROOT / path[2:].split()[0]).read_text()
        missing = [line for line in lines if line.strip() and line not in source.splitlines()]
        assert not missing, f"{path}: not in the code any more: {missing}"


def test_add_a_guidance_mode_check_runs():
    (check,) = [b for b in code_blocks("add-a-guidance-mode.md", "python") if not b.startswith("# elit_bench/")]
    exec(compile(check, "add-a-guidance-mode.md", "exec"), {})


def test_every_guidance_mode_reaches_the_schema_and_the_cli():
    """The guide's claim that MODES is the only table: the schema and `elit-bench sample` take their choices from it."""
    from elit_bench.cli import build_parser
    from elit_bench.flow.guidance import MODES
    from elit_bench.schema import SampleSettings

    for mode in MODES:
        assert SampleSettings(guidance=mode).guidance == mode
        assert build_parser().parse_args(["sample", "ckpt.pt", "--out", "x", "--guidance", mode]).guidance == mode


# ---------------------------------------------------------------- add-a-suite.md
def reference_tables(guide: str) -> dict[str, dict[str, str]]:
    """'### section' -> {key: default cell} of the table under it; `a`, `b` cells name several keys."""
    tables, section, fenced = {}, None, False
    for line in (ROOT / "docs" / guide).read_text().splitlines():
        fenced ^= line.startswith("```")
        if fenced:
            continue
        if line.startswith("### "):
            section = line[4:].strip().strip("`")
        elif section and line.startswith("| `"):
            key_cell, _, default, *_ = [c.strip() for c in line.strip("|").split(" | ")]
            for key in re.findall(r"`([\w.]+)`", key_cell):
                tables.setdefault(section, {})[key] = default
    return tables


def test_add_a_suite_example_validates(tmp_path, capsys):
    files = named_files("add-a-suite.md")
    (name, text), = files.items()
    suite = tmp_path / name
    suite.parent.mkdir(parents=True)
    suite.write_text(text)
    assert main(["run", str(suite), "--scale", "smoke", "--dry-run", "--json", "--no-estimate",
                 "--out", str(tmp_path / "runs")]) == 0
    plan = json.loads(capsys.readouterr().out)
    labels = sorted({r["label"] for r in plan["runs"]})
    assert labels == ["DiT", "ELIT g=2", "ELIT g=4"] and len(plan["runs"]) == 5  # 2 group sizes x 2 seeds + DiT


def test_add_a_suite_reference_has_every_key_with_its_default():
    from pydantic_core import PydanticUndefined

    from elit_bench.metrics.settings import EvaluatorOptions, MetricsSettings
    from elit_bench.results.reports import REPORT_KINDS
    from elit_bench.schema import SampleSettings, TrainSettings
    from elit_bench.suites import spec
    from elit_bench.suites.compute import KINDS
    from elit_bench.yamlconfig import parse_yaml

    tables = reference_tables("add-a-suite.md")
    structure = {"Top level": spec.SUITE_KEYS, "runs": spec.RUN_KEYS, "evals": spec.EVAL_KEYS,
                 "scales": spec.SCALE_KEYS}
    for section, keys in structure.items():
        assert set(tables[section]) == set(keys), section
    settings = {"train": [TrainSettings], "sample": [SampleSettings], "metrics": [MetricsSettings],
                "metrics.options": [EvaluatorOptions], "compute": list(KINDS.values())}
    for section, classes in settings.items():
        fields = {name: field for cls in classes for name, field in cls.model_fields.items()}
        assert set(tables[section]) == set(fields), section
        for name, field in fields.items():
            documented = tables[section][name]
            if field.default is PydanticUndefined or name == "kind":
                assert documented == "required", (section, name)
            elif section != "compute" or len({repr(c.model_fields[name].default) for c in classes
                                               if name in c.model_fields}) == 1:
                assert documented.startswith("`") and parse_yaml(documented.strip("`")) == field.default, \
                    (section, name, documented, field.default)
    kind_row = next(line for line in (ROOT / "docs/add-a-suite.md").read_text().splitlines()
                    if line.startswith("| `kind` | `table`"))
    assert set(re.findall(r"`(\w+)`", kind_row.split(" | ")[1])) == set(REPORT_KINDS)


# ---------------------------------------------------------------- add-a-metric.md
@pytest.fixture
def guide_metric(monkeypatch):
    """The guide's METRICS entry, declared as if written in compute.py: METRICS holds it, and the views that
    compute.py, results/report.py and results/reports/table.py derive from METRICS when imported include it."""
    from elit_bench.metrics import compute
    from elit_bench.results import report
    from elit_bench.results.reports import table

    (block,) = [b for b in code_blocks("add-a-metric.md", "python") if b.startswith("# elit_bench/metrics/compute.py")]
    ((name, spec),) = eval("{" + block.split("\n", 1)[1] + "}", vars(compute)).items()
    monkeypatch.setitem(compute.METRICS, name, spec)
    for key in spec.outputs:
        monkeypatch.setitem(compute.KEY_SPECS, key.name, key)
        if key.higher_is_better is not None:
            monkeypatch.setitem(compute.HIGHER_IS_BETTER, key.name, key.higher_is_better)
        if key.label:
            monkeypatch.setitem(report.METRIC_LABELS, key.name, key.label)
            monkeypatch.setitem(table.LABELS, key.name, key.label)
    return name


def test_add_a_metric_computes_it(guide_metric):
    import numpy as np
    import torch

    from elit_bench.metrics import ArraySamples, compute_metrics
    from elit_bench.metrics.digits_classifier import load_digits_split, render_uint8

    split = load_digits_split()
    real = render_uint8(torch.from_numpy(split["train_x"][:200]), 16).numpy()
    good = render_uint8(torch.from_numpy(split["heldout_x"][:200]), 16).numpy()
    noise = np.random.default_rng(0).integers(0, 256, good.shape, dtype=np.uint8)
    scores = [compute_metrics(ArraySamples(x, split["heldout_y"][:200]), real, guide_metric, use_cache=False)
              for x in (good, noise)]
    assert all({guide_metric, guide_metric + "_debiased"} <= set(s) for s in scores)
    assert scores[1][guide_metric] > 10 * scores[0][guide_metric]  # noise is far from the digits on the logits


def test_add_a_metric_shows_in_a_table_and_a_leaderboard(guide_metric, tmp_path, monkeypatch):
    from test_results import write_record

    (name, text), = named_files("add-a-metric.md").items()
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / Path(name).name).write_text(text)
    monkeypatch.setenv("ELIT_BENCH_SUITES", str(suites))
    out = tmp_path / "runs"
    for run, value in (("DiT", 3.0), ("ELIT", 2.0)):
        write_record(out, "logit-fd", run, None, "eval", None, {"digits_fd": 50.0, guide_metric: value},
                     scale="smoke", model=f"{run}-S/2", data=("digits", 16), steps=20, num=256)
    assert main(["table", "logit-fd", "--scale", "smoke", "--out", str(out), "--dest", str(tmp_path / "t")]) == 0
    assert "FD(digit logits)" in (tmp_path / "t" / "table.md").read_text()
    assert main(["leaderboard", "digits-logits", "--out", str(out), "--dest", str(tmp_path / "l")]) == 0
    board = next((tmp_path / "l").glob("*.md")).read_text()
    assert "lower is better" in board and board.index("| ELIT") < board.index("| DiT")


# ---------------------------------------------------------------- add-a-method.md
def test_add_a_method_excerpts_are_the_code():
    """Each excerpt (a block whose first line names a file) is in that file line for line; `...` marks a cut."""
    excerpts = [b for b in FENCE.findall((ROOT / "docs/add-a-method.md").read_text()) if "(excerpt)" in b[1]]
    assert [b[1].split("\n", 1)[0] for b in excerpts] == [
        "# elit_bench/models/tread.py (excerpt)", "# elit_bench/models/tread.py (excerpt)",
        "# elit_bench/models/registry.py (excerpt)", "# elit_bench/schema.py (excerpt)",
        "# elit_bench/sampling/generate.py (excerpt)", "# suites/elastic-zoo.yaml (excerpt)"]
    for _, block in excerpts:
        path, *lines = block.splitlines()
        source = (ROOT / path[2:].split()[0]).read_text().splitlines()
        missing = [line for line in lines if line.strip() not in ("", "...") and line not in source]
        assert not missing, f"{path}: not in the code any more: {missing}"


def test_add_a_method_checks_run():
    checks = [b for b in code_blocks("add-a-method.md", "python") if not b.startswith("# elit_bench/")]
    assert len(checks) == 2  # TREAD's neutrality and FLOPs, ToMe's
    for check in checks:
        exec(compile(check, "add-a-method.md", "exec"), {})


def test_add_a_method_commands_exist_and_price_tread(capsys):
    from elit_bench.cli import build_parser

    commands = [line.split("#")[0].split()[1:] for b in code_blocks("add-a-method.md", "bash")
                for line in b.splitlines() if line.startswith("elit-bench ")]
    assert len(commands) == 7
    for argv in commands:
        build_parser().parse_args([a.strip("'") for a in argv])  # every flag exists (SystemExit otherwise)
    flops = next(a for a in commands if a[0] == "flops")
    priced = {}
    for name, argv in (("TREAD", flops), ("DiT", ["flops", "DiT-S/2", "--resolution", "256"])):
        assert main([*argv, "--json"]) == 0
        priced[name] = json.loads(capsys.readouterr().out)
    # what the guide says the command shows: the base model's forward, a cheaper training pass
    assert priced["TREAD"]["forward_gflops"] == priced["DiT"]["forward_gflops"]
    assert priced["TREAD"]["train_tflops"] < priced["DiT"]["train_tflops"]


def test_add_a_method_suite_validates_and_reports(tmp_path, monkeypatch, capsys):
    from test_results import write_record

    (name, text), = named_files("add-a-method.md").items()
    suite = tmp_path / name
    suite.parent.mkdir(parents=True)
    suite.write_text(text)
    out = tmp_path / "runs"
    assert main(["run", str(suite), "--scale", "smoke", "--dry-run", "--json", "--no-estimate",
                 "--out", str(out)]) == 0
    plan = json.loads(capsys.readouterr().out)
    batches = {r["label"]: r["batch"] for r in plan["runs"]}
    assert batches["DiT"] == 64 and batches["TREAD"] > 64  # the routed pass buys a larger batch at equal FLOPs

    # records as the run writes them (one per evaluation), then the guide's table, plot and leaderboard
    monkeypatch.setenv("ELIT_BENCH_SUITES", str(suite.parent))
    points = {("DiT", "20 steps", "DiT: steps"): (40.0, 2.0), ("DiT", "10 steps", "DiT: steps"): (60.0, 1.0),
              ("TREAD", "20 steps", "TREAD: steps"): (35.0, 2.0), ("TREAD", "10 steps", "TREAD: steps"): (50.0, 1.0),
              ("DiT", "ToMe 0.5", "DiT + ToMe"): (45.0, 1.8)}
    for (run, label, series), (fd, gflops) in points.items():
        write_record(out, "tread-zoo", run, None, label, None, {"digits_fd": fd}, gflops=gflops, scale="smoke",
                     model=f"{run}-S/4", data=("digits", 16), steps=int(label.split()[0]) if "steps" in label else 20,
                     num=256, series=series)
    for command in ("table", "plot"):
        assert main([command, str(suite), "--scale", "smoke", "--out", str(out), "--dest", str(tmp_path / "r")]) == 0
    assert "TREAD" in (tmp_path / "r" / "table.md").read_text() and (tmp_path / "r" / "figure.png").is_file()
    assert main(["leaderboard", "digits-tread", "--out", str(out), "--dest", str(tmp_path / "l")]) == 0
    board = next((tmp_path / "l").glob("*.md")).read_text()
    assert board.index("| TREAD") < board.index("| DiT")  # lower FD ranks first
