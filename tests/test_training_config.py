"""The run configuration: command line parsing, defaults, and bad settings refused before any work."""

import pytest
import yaml

from elit_bench.cli import build_parser, main
from elit_bench.errors import UserError
from elit_bench.flops import forward_flops
from elit_bench.training.cli import config_from_args
from elit_bench.training.config import (
    build_meta_model,
    resolve_config,
    training_variants,
    variant_batches,
)
from elit_bench.yamlconfig import apply_overrides, parse_yaml

TINY_KW = {"hidden_size": 32, "depth": 3, "num_heads": 2, "group_size": 2}


def _args(*argv):
    return build_parser().parse_args(["train", *argv])


def test_command_line_mixes_config_file_flags_and_overrides(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("model: DiT-S/2\nlr: 1e-4\nbudget_range: 1:4\nmodel_kwargs: {depth: 3}\n")
    # the config file and overrides on both sides of the options
    config = config_from_args(_args(str(cfg_file), "lr=3e-4", "--model", "ELIT-DiT-S/2", "--drop", "random",
                                    "model_kwargs.hidden_size=32", "--steps", "7"))
    assert config == {"model": "ELIT-DiT-S/2", "lr": 3e-4, "budget_range": "1:4", "steps": 7,
                      "model_kwargs": {"depth": 3, "drop": "random", "hidden_size": 32}}
    with pytest.raises(UserError, match="key=value"):
        config_from_args(_args(str(cfg_file), "stray"))


def test_overrides_parse_yaml_values():
    config = apply_overrides({}, ["a.b=2", "c=[1, 2]", "d=null", "e=1:16", "f=2e-5"])
    assert config == {"a": {"b": 2}, "c": [1, 2], "d": None, "e": "1:16", "f": 2e-5}


# YAML 1.2 core schema, where PyYAML's YAML 1.1 reads 1e-4 as a string, 1:16 as 76, 010 as 8, yes as True,
# a date as a datetime.date
YAML_1_2 = [("1e-4", 1e-4), ("-2.5E+3", -2500.0), ("1.", 1.0), (".5", 0.5), (".inf", float("inf")), ("7", 7),
            ("010", 10), ("0x1F", 31), ("0o17", 15), ("1:16", "1:16"), ("1_000", "1_000"), ("yes", "yes"),
            ("off", "off"), ("true", True), ("FALSE", False), ("~", None), ("2026-01-01", "2026-01-01"),
            ("0b101", "0b101"), ("1e4.5", "1e4.5")]


@pytest.mark.parametrize("text, value", YAML_1_2, ids=[t for t, _ in YAML_1_2])
def test_values_read_as_yaml_1_2(text, value):
    parsed = parse_yaml(text)
    assert parsed == value and type(parsed) is type(value)
    assert parse_yaml(f"k: [{text}]") == {"k": [value]}  # in a file, in a flow sequence: the same rules


def test_every_key_value_option_is_read_the_same_way(tmp_path, monkeypatch, capsys):
    from elit_bench import convert as convert_module
    from elit_bench.models import cli as models_cli
    from elit_bench.suites.options import parse_sets

    items = ["lr=1e-4", "budget_range=1:16", "tag=off"]
    want = {"lr": 1e-4, "budget_range": "1:16", "tag": "off"}
    assert apply_overrides({}, items) == want
    assert config_from_args(_args("--model", "DiT-S/2", *items)) == {"model": "DiT-S/2", **want}
    assert parse_sets([f"train.{i}" for i in items] + ["var.X=1e-4"]) == ({"train": want}, {"X": "1e-4"})

    def seen(*args, **kw):  # the consumer: reports what it was given
        raise UserError(f"given {next(a for a in (*args, *kw.values()) if isinstance(a, dict) and 'lr' in a)}")

    monkeypatch.setattr(models_cli, "model_flops", seen)
    monkeypatch.setattr(convert_module, "convert", seen)
    for argv in (["flops", "DiT-S/2"], ["convert", "x.pt", "--format", "elit-official", "--model", "M",
                                        "--out", str(tmp_path / "out.pt")]):
        assert main([*argv, *[a for i in items for a in ("--set", i)]]) == 2
        assert capsys.readouterr().err.strip().endswith(f"given {want}")


def test_resolved_config_fits_the_model_to_the_data(tmp_path):
    cfg = resolve_config({"model": "ELIT-DiT-S/2", "data": "padded-digits", "resolution": 8,
                          "model_kwargs": TINY_KW, "out": str(tmp_path)})
    assert cfg["model_kwargs"] == {**TINY_KW, "input_size": 16, "in_channels": 1, "num_classes": 10}
    assert cfg["data"]["crop"] == [4, 4, 8, 8] and cfg["data"]["resolution"] == 8
    assert resolve_config(cfg) == cfg  # a resolved config (config.yaml) resolves to itself
    assert yaml.safe_load(yaml.safe_dump(cfg)) == cfg
    assert not any(tmp_path.iterdir())  # resolving writes nothing


def test_default_run_directory_is_stable_across_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = resolve_config({"model": "DiT-S/2", "steps": 10})["out"]
    assert a == resolve_config({"model": "DiT-S/2", "steps": 20})["out"]  # same run, continued
    assert a != resolve_config({"model": "DiT-S/2", "seed": 1})["out"]
    assert a.startswith("runs/DiT-S_2-digits-16px-")


def test_scaled_batch_keeps_expected_training_flops(tmp_path):
    cfg = resolve_config({"model": "ELIT-DiT-S/2", "resolution": 16, "multi_budget": True, "batch": 64,
                          "model_kwargs": {**TINY_KW, "group_size": 4}, "out": str(tmp_path)})
    model = build_meta_model(cfg)
    variants = training_variants(model, cfg)
    assert [b for b, _ in variants] == list(range(1, 17))
    batches = variant_batches(model, variants, 64, "scaled", world=2)
    flops = [forward_flops(model, b) for b, _ in variants]
    assert batches == sorted(batches, reverse=True) and all(b % 2 == 0 for b in batches)
    expected = sum(b * f for b, f in zip(batches, flops)) / len(flops)
    assert expected == pytest.approx(64 * sum(flops) / len(flops), rel=0.02)
    assert variant_batches(model, variants, 64, "constant") == [64] * 16


def test_multi_patch_model_draws_its_patchifiers(tmp_path):
    cfg = resolve_config({"model": "MultiPatch-DiT-S/2", "model_kwargs": {"depth": 2}, "out": str(tmp_path)})
    assert training_variants(build_meta_model(cfg), cfg) == [(None, 2), (None, 4)]


BAD = [
    (["--model", "DiT-Q/9"], "unknown model"),
    (["--model", "ELIT-DiT-S/2", "model_kwargs.group_size=3"], "does not tile"),
    (["--model", "ELIT-DiT-S/2", "--budget-range", "5:2"], "JMIN <= JMAX"),
    (["--model", "DiT-S/2", "--multi-budget"], "no latent interface"),
    (["--model", "DiT-S/2", "--data", "/nonexistent/latents"], "does not exist"),
    (["--model", "DiT-S/2", "--resolution", "3"], "resolution"),
    (["--model", "DiT-S/2", "batch_mode=huge"], "batch_mode"),
    (["--model", "DiT-S/2", "lr=-1"], "lr"),
    (["--model", "DiT-S/2", "learning_rate=1"], "unknown config key 'learning_rate'"),
    (["--model", "DiT-S/2", "stepz=5"], "unknown config key 'stepz'; did you mean 'steps'?"),
    (["--model", "DiT-S/2", "steps=-5"], "steps: input should be greater than or equal to 1, got -5"),
    (["--model", "DiT-S/2", "ema_decay=1.5"], "ema_decay: input should be less than 1"),
    (["--model", "DiT-S/2", "multi_budget=yes please"], "multi_budget: input should be a valid boolean"),
    (["--model", "DiT-S/2", "seed=[1,"], "the value of override 'seed=[1,' is not valid YAML: expected the node"),
    (["--model", "DiT-S/2", "logger=mlflow"], "logger: input should be 'tensorboard' or 'wandb'"),
    (["--model", "DiT-S/2", "model_kwargs.in_channels=3"], "contradicts the data"),
    (["--model", "DiT-S/2", "--drop", "random"], "only apply to ELIT"),
    ([], "no model given"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[m for _, m in BAD])
def test_bad_config_fails_before_training(tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("untouched")
    assert main(["train", *argv, "--steps", "1", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1  # one line
    assert [p.name for p in run.iterdir()] == ["keep.txt"]


def test_unwritable_out_dir_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["train", "--model", "DiT-S/2", "--out", str(blocker / "run")]) == 2
    assert "cannot be created" in capsys.readouterr().err
    assert main(["train", "--model", "DiT-S/2", "--out", "/proc/elit-bench-run"]) == 2
    assert "not writable" in capsys.readouterr().err
