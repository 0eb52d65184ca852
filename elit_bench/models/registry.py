"""Model registry in the style of timm: `register_model`, `create_model`, `list_models`.

Names follow DiT: `<Family>-<Size>/<patch>`, e.g. `DiT-XL/2`, `ELIT-DiT-B/2`,
`UViT-L/2`, `HDiT-XL/2`, `MultiPatch-DiT-B/2`, `DiT-XL/2x4` (a 2x4 patch).
An outside package registers its own variants through the entry-point group
`elit_bench.models` (the entry point is a callable run once, which calls
`register_model`), or a suite names `model: mypkg.module:factory` directly.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
from collections.abc import Callable

from torch import nn

from elit_bench.errors import UserError
from elit_bench.models.backbones import DiT, HDiT, MultiPatchDiT, SiT, UViT
from elit_bench.models.elit import ELIT

ENTRY_POINT_GROUP = "elit_bench.models"
LATENT_DOWNSAMPLE = 8  # the FLUX / SD autoencoders: 8x down

# size -> (depth, width, heads), DiT's sizes (docs/conventions.md#architecture)
SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
BACKBONES = {"DiT": DiT, "UViT": UViT, "HDiT": HDiT, "MultiPatch-DiT": MultiPatchDiT, "SiT": SiT}
PATCHES = {"1": 1, "2": 2, "4": 4, "8": 8, "2x4": (2, 4)}
# SiT-*/{2,4,8}: the released SiT and ELIT-SiT family (fixed sin-cos positions, the official interface)
FAMILY_PATCHES = {"DiT": ("1", "2", "4", "8", "2x4"), "UViT": ("2", "4"), "HDiT": ("2", "4"),
                  "MultiPatch-DiT": ("2",), "SiT": ("2", "4", "8")}

_registry: dict[str, Callable[..., nn.Module]] = {}
_entry_points_loaded = False


def register_model(name: str, factory: Callable[..., nn.Module] | None = None):
    """Register `factory(**kwargs) -> nn.Module` under `name`; usable as a decorator.

    The factory receives the overrides given to `create_model` plus
    `input_size` (latent spatial size) and must return a model with
    `forward(x, t, y, budget=None)`, `in_channels`, `num_classes` and `macs()`.
    """
    def add(fn):
        if name in _registry and _registry[name] is not fn:
            raise UserError(f"model name {name!r} is already registered")
        _registry[name] = fn
        return fn
    return add(factory) if factory is not None else add


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        hook = ep.load()
        if callable(hook):
            hook()


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, e.g. `list_models("ELIT-*XL*")`."""
    _load_entry_points()
    return sorted(n for n in _registry if fnmatch.fnmatchcase(n, pattern))


def resolve_factory(name: str) -> Callable[..., nn.Module]:
    """A registered name, or `package.module:callable` for a variant from the user's own code."""
    _load_entry_points()
    if name in _registry:
        return _registry[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"cannot import model factory {name!r}: {exc}") from exc
    close = [n for n in _registry if name.lower() in n.lower()] or sorted(_registry)
    raise UserError(f"unknown model {name!r}; valid choices include: {', '.join(sorted(close))} "
                    "(`elit-bench models` lists all; `module:factory` names your own)")


def create_model(name: str, resolution: int = 256, **overrides) -> nn.Module:
    """Build a registered model for images of `resolution` pixels (latent size resolution / 8).

    overrides: any constructor argument, e.g. `in_channels=4`, `input_size=32`
    (latent size, wins over resolution), `frames=8` (video), `blocks=(2, 8, 2)`,
    `group_size=2`, `latents_per_group=4`, `drop="random"`, `read="qformer"`.
    Works under `with torch.device("meta"):` for counting without memory.
    """
    factory = resolve_factory(name)
    downsample = overrides.pop("downsample", LATENT_DOWNSAMPLE)
    if "input_size" not in overrides:
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1 or resolution % downsample:
            raise UserError(f"resolution {resolution!r} must be a positive multiple of {downsample} pixels "
                            f"(the autoencoder's downsampling), e.g. 256")
        overrides["input_size"] = resolution // downsample
    sizes = overrides["input_size"]
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (sizes if isinstance(sizes, (tuple, list)) else [sizes])):
        raise UserError(f"input_size {sizes!r} must be positive integers (latent tokens per axis before patching)")
    try:
        model = factory(**overrides)
    except (TypeError, ValueError) as exc:  # an unknown keyword, or a value the layers cannot build
        raise UserError(f"bad argument for model {name!r}: {exc}") from exc
    model.name = name
    return model


ELIT_KEYS = ("blocks", "group_size", "latents_per_group", "read", "write", "read_depth", "write_depth",
             "interface_mlp_ratio", "drop", "variant")


def _factory(backbone_cls, size: str, patch, elit: bool):
    depth, width, heads = SIZES[size]
    official = backbone_cls is SiT

    def build(**kw):
        interface = {k: kw.pop(k) for k in ELIT_KEYS if k in kw}
        if official and elit:  # the released layout: Read after `encoder_depth`, Write before the last
            # `decoder_depth` blocks (its defaults: 8, and 4 at L/XL, 2 at S/B)
            enc = kw.pop("encoder_depth", 8)
            dec = kw.pop("decoder_depth", 4 if depth > 12 else 2)
            interface.setdefault("blocks", (enc, depth - enc - dec, dec))
            interface.setdefault("variant", "official")
        if interface and not elit:
            raise UserError(f"{sorted(interface)} only apply to ELIT models")
        kw = {"depth": depth, "hidden_size": width, "num_heads": heads, "patch_size": patch, **kw}
        if backbone_cls is MultiPatchDiT:
            kw.pop("patch_size")
        backbone = backbone_cls(**kw)
        return ELIT(backbone, **interface) if elit else backbone
    return build


for _family, _cls in BACKBONES.items():
    for _size in SIZES:
        for _ptag in FAMILY_PATCHES[_family]:
            _name = f"{_family}-{_size}/{_ptag}"
            register_model(_name, _factory(_cls, _size, PATCHES[_ptag], elit=False))
            if _family != "MultiPatch-DiT":
                register_model(f"ELIT-{_name}", _factory(_cls, _size, PATCHES[_ptag], elit=True))
