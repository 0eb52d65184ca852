"""Plugging in a variant: register_model, the entry-point group and `module:factory` names."""

import importlib.metadata
import sys
import types

import pytest

from elit_bench.errors import UserError
from elit_bench.models import ModelName, create_model, list_models, register_model, registry, resize_model
from elit_bench.models.backbones import DiT


def test_register_model_decorator_makes_a_name_available():
    @register_model("Test-Tiny-DiT")
    def factory(**kw):
        return DiT(hidden_size=32, depth=2, num_heads=2, **kw)

    assert "Test-Tiny-DiT" in list_models("Test-*")
    model = create_model("Test-Tiny-DiT", resolution=64)
    assert model.name == "Test-Tiny-DiT" and model.input_shape == (8, 8)
    with pytest.raises(UserError, match="already registered"):
        register_model("Test-Tiny-DiT", lambda **kw: None)


def test_entry_point_group_registers_outside_variants(monkeypatch):
    module = types.ModuleType("outside_pkg")

    def hook():
        register_model("Outside-DiT", lambda **kw: DiT(hidden_size=32, depth=2, num_heads=2, **kw))

    module.hook = hook
    monkeypatch.setitem(sys.modules, "outside_pkg", module)
    ep = importlib.metadata.EntryPoint("outside", "outside_pkg:hook", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.importlib.metadata, "entry_points",
                        lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    assert "Outside-DiT" in list_models()


def test_module_factory_names_a_users_own_variant(monkeypatch):
    module = types.ModuleType("my_variants")
    module.small = lambda **kw: DiT(hidden_size=32, depth=2, num_heads=2, **kw)
    monkeypatch.setitem(sys.modules, "my_variants", module)
    assert create_model("my_variants:small", resolution=64).depth == 2
    with pytest.raises(UserError, match="cannot import model factory"):
        create_model("my_variants:missing")


@pytest.fixture
def own_registry(monkeypatch):
    """Registrations made in a test stay in it."""
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    monkeypatch.setattr(registry, "_structure", dict(registry._structure))


def test_resize_model_keeps_family_patch_and_suffix():
    assert resize_model("ELIT-DiT-XL/2", "B") == "ELIT-DiT-B/2"
    assert resize_model("DiT-XL/2x4", "S") == "DiT-S/2x4"
    assert resize_model("MultiPatch-DiT-XL/2", "B") == "MultiPatch-DiT-B/2"
    assert resize_model("ELIT-SiT-XL/2", "L") == "ELIT-SiT-L/2"


def test_a_name_that_cannot_be_resized_is_an_error_naming_it(own_registry):
    register_model(ModelName("ELIT-DiT", "B", "2", "-wide-groups"), lambda **kw: None)
    assert "ELIT-DiT-B/2-wide-groups" in list_models("*wide*")
    assert resize_model("ELIT-DiT-B/2-wide-groups", "B") == "ELIT-DiT-B/2-wide-groups"
    # a regex on '-XL/' would have returned this unregistered name
    with pytest.raises(UserError, match=r"'ELIT-DiT-B/2-wide-groups' at size 'S' would be "
                                        r"'ELIT-DiT-S/2-wide-groups', which is not registered"):
        resize_model("ELIT-DiT-B/2-wide-groups", "S")
    register_model("Plain-Name", lambda **kw: None)  # a plain string: no parts, no size
    for name in ("Plain-Name", "my_variants:small"):
        with pytest.raises(UserError, match=f"model '{name}' cannot be resized to size 'B'"):
            resize_model(name, "B")


def test_a_suite_scale_size_resizes_through_the_registry(tmp_path, capsys):
    from elit_bench.cli import main

    suite = tmp_path / "sized.yaml"
    suite.write_text(SIZED_SUITE.format(model="ELIT-DiT-XL/2"))
    assert main(["run", str(suite), "--scale", "smoke", "--dry-run", "--json", "--no-estimate"]) == 0
    plan = capsys.readouterr().out
    assert "ELIT-DiT-S/2" in plan and "XL" not in plan
    suite.write_text(SIZED_SUITE.format(model="my_variants:small"))
    assert main(["run", str(suite), "--scale", "smoke", "--dry-run", "--no-estimate"]) == 2
    err = capsys.readouterr().err
    assert "model 'my_variants:small' cannot be resized to size 'S'" in err and err.count("\n") == 1


SIZED_SUITE = """\
name: sized
base:
  train: {{data: digits, resolution: 8, batch: 8, steps: 2, model_kwargs: {{hidden_size: 32, depth: 3, num_heads: 2, group_size: 2}}}}
  sample: {{steps: 2, batch: 8}}
  metrics: {{names: [digits_fd], num_samples: 16, real: digits}}
runs:
  - {{label: M, train: {{model: {model}}}}}
scales:
  smoke: {{size: S}}
"""


def test_a_broken_plugin_is_a_one_line_error_naming_it(monkeypatch):
    module = types.ModuleType("broken_pkg")

    def hook():
        raise ImportError("No module named 'missing_dependency'")

    module.hook = hook
    monkeypatch.setitem(sys.modules, "broken_pkg", module)
    ep = importlib.metadata.EntryPoint("broken", "broken_pkg:hook", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.importlib.metadata, "entry_points",
                        lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_plugin_error", None)
    assert create_model("DiT-S/2", resolution=64, depth=1).depth == 1  # built-in names do not load plugins
    for _ in range(2):  # and the error stays: a later lookup does not silently miss the plugin's models
        with pytest.raises(UserError) as info:
            list_models()
        message = str(info.value)
        assert message.startswith("model plugin 'broken' (broken_pkg:hook, entry point group elit_bench.models) "
                                  "failed to load: ImportError: No module named 'missing_dependency'")
        assert "\n" not in message
