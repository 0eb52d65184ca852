"""Plugging in a variant: register_model, the entry-point group and `module:factory` names."""

import importlib.metadata
import sys
import types

import pytest

from elit_bench.errors import UserError
from elit_bench.models import create_model, list_models, register_model, registry
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
