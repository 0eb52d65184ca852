"""Model registry in the style of timm: `register_model`, `create_model`, `list_models`.

Names follow DiT: `<Family>-<Size>/<patch>`, e.g. `DiT-XL/2`, `ELIT-DiT-B/2`,
`UViT-L/2`, `HDiT-XL/2`, `MultiPatch-DiT-B/2`, `DiT-XL/2x4` (a 2x4 patch).
A name registered as a `ModelName(family, size, patch, suffix)` keeps its
parts, so `resize_model` can give the same model at another size (a suite
scale's `size: B`). An outside package registers its own variants through the
entry-point group `elit_bench.models` (the entry point is a module, or a
callable run once, that calls `register_model`; loaded the first time a name
is not found among the built-in ones), or a suite names `model:
mypkg.module:factory` directly. docs/add-a-model.md walks through one.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
from collections.abc import Callable
from typing import NamedTuple

from torch import nn

from elit_bench.errors import UserError
from elit_bench.models.backbones import DiT, HDiT, MultiPatchDiT, SiT, UViT
from elit_bench.models.dydit import DyDiT
from elit_bench.models.elit import ELIT
from elit_bench.models.tread import TREAD

ENTRY_POINT_GROUP = "elit_bench.models"
LATENT_DOWNSAMPLE = 8  # the FLUX / SD autoencoders: 8x down

# size -> (depth, width, heads), DiT's sizes (docs/conventions.md#architecture)
SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
BACKBONES = {"DiT": DiT, "UViT": UViT, "HDiT": HDiT, "MultiPatch-DiT": MultiPatchDiT, "SiT": SiT}
PATCHES = {"1": 1, "2": 2, "4": 4, "8": 8, "2x4": (2, 4)}
# SiT-*/{2,4,8}: the released SiT and ELIT-SiT family (fixed sin-cos positions, the official interface)
FAMILY_PATCHES = {"DiT": ("1", "2", "4", "8", "2x4"), "UViT": ("2", "4"), "HDiT": ("2", "4"),
                  "MultiPatch-DiT": ("2",), "SiT": ("2", "4", "8")}


class ModelName(NamedTuple):
    """A registry name in parts: ModelName("ELIT-DiT", "B", "2", "-wide-groups") is 'ELIT-DiT-B/2-wide-groups'."""

    family: str
    size: str
    patch: str
    suffix: str = ""

    def __str__(self) -> str:
        return f"{self.family}-{self.size}/{self.patch}{self.suffix}"


_registry: dict[str, Callable[..., nn.Module]] = {}
_structure: dict[str, ModelName] = {}  # names registered in parts (the ones resize_model can resize)
_entry_points_loaded = False
_plugin_error: UserError | None = None  # a broken plugin, reported by every lookup that needs the plugins


def register_model(name: str | ModelName, factory: Callable[..., nn.Module] | None = None):
    """Register `factory(**kwargs) -> nn.Module` under `name`; usable as a decorator.

    The factory receives the overrides given to `create_model` plus
    `input_size` (latent spatial size) and must return a model with
    `forward(x, t, y, budget=None)`, `in_channels`, `num_classes` and `macs()`.
    A `ModelName` registers the name with its parts, so suites can resize it.
    """
    key = str(name)

    def add(fn):
        if key in _registry and _registry[key] is not fn:
            raise UserError(f"model name {key!r} is already registered")
        _registry[key] = fn
        if isinstance(name, ModelName):
            _structure[key] = name
        return fn
    return add(factory) if factory is not None else add


def _load_entry_points() -> None:
    """Run each installed plugin of the group once; a broken one is a one-line error naming it."""
    global _entry_points_loaded, _plugin_error
    if not _entry_points_loaded:
        _entry_points_loaded = True  # before loading: a plugin's own create_model call must not load it again
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                hook = ep.load()
                if callable(hook):
                    hook()
            except Exception as exc:  # any failure of outside code, reported with the plugin's name
                dist = f" from {ep.dist.name}" if getattr(ep, "dist", None) else ""
                _plugin_error = UserError(f"model plugin {ep.name!r} ({ep.value}{dist}, entry point group "
                                          f"{ENTRY_POINT_GROUP}) failed to load: {type(exc).__name__}: {exc}; "
                                          "fix or uninstall it")
                break
    if _plugin_error is not None:
        raise _plugin_error


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, e.g. `list_models("ELIT-*XL*")`."""
    _load_entry_points()
    return sorted(n for n in _registry if fnmatch.fnmatchcase(n, pattern))


def resolve_factory(name: str) -> Callable[..., nn.Module]:
    """A registered name, or `package.module:callable` for a variant from the user's own code."""
    if name not in _registry:
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


def resize_model(name: str, size: str) -> str:
    """The same registered model at another size: ('ELIT-DiT-XL/2', 'B') -> 'ELIT-DiT-B/2'.

    Only names registered as a `ModelName` have a size, and the resized name must be registered too;
    anything else is a UserError naming the model (never a silently invented name).
    """
    if name not in _structure:
        _load_entry_points()
    parts = _structure.get(name)
    if parts is None:
        raise UserError(f"model {name!r} cannot be resized to size {size!r}: it is not registered as a "
                        "ModelName(family, size, patch, suffix); register it that way at every size, or give "
                        "the scale's runs their model explicitly")
    resized = str(parts._replace(size=size))
    if resized not in _registry:
        raise UserError(f"model {name!r} at size {size!r} would be {resized!r}, which is not registered "
                        "(`elit-bench models` lists the registered names)")
    return resized


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
            register_model(ModelName(_family, _size, _ptag), _factory(_cls, _size, PATCHES[_ptag], elit=False))
            if _family != "MultiPatch-DiT":
                register_model(ModelName(f"ELIT-{_family}", _size, _ptag),
                               _factory(_cls, _size, PATCHES[_ptag], elit=True))


# TREAD (models/tread.py): token routing while training, on a DiT or SiT; inference is the backbone's own
TREAD_KEYS = ("route_rate", "route")


def _tread_factory(backbone_cls, size: str, patch):
    backbone = _factory(backbone_cls, size, patch, elit=False)

    def build(**kw):
        routing = {k: kw.pop(k) for k in TREAD_KEYS if k in kw}
        return TREAD(backbone(**kw), **routing)
    return build


for _family in ("DiT", "SiT"):
    for _size in SIZES:
        for _ptag in FAMILY_PATCHES[_family]:
            register_model(ModelName(f"TREAD-{_family}", _size, _ptag),
                           _tread_factory(BACKBONES[_family], _size, PATCHES[_ptag]))


# DyDiT (models/dydit.py): a DiT with timestep-wise width and per-token MLP skipping, fine-tuned from a DiT
DYDIT_KEYS = ("flops_target", "flops_weight", "tau")


def _dydit_factory(size: str, patch):
    backbone = _factory(DiT, size, patch, elit=False)

    def build(**kw):
        routing = {k: kw.pop(k) for k in DYDIT_KEYS if k in kw}
        return DyDiT(backbone(**kw), **routing)
    return build


for _size in SIZES:
    for _ptag in FAMILY_PATCHES["DiT"]:
        register_model(ModelName("DyDiT", _size, _ptag), _dydit_factory(_size, PATCHES[_ptag]))


# MM-DiT (models/mmdit.py): double-stream blocks with joint attention over text and image tokens, and ELIT on its
# image stream. S and B are DiT's sizes; QwenImage is Qwen-Image's layout (60 blocks, width 3072, 24 heads of 128,
# text from Qwen2.5-VL's 3584-wide outputs, ~300 tokens: paper Sec. 4.4), with Read after block 8 and Write
# before block 52. Text width and length of the small sizes fit the built-in prompts; all are overrides.
MMDIT_SIZES = {"S": (*SIZES["S"], 256, 16), "B": (*SIZES["B"], 256, 16), "QwenImage": (60, 3072, 24, 3584, 300)}
MMDIT_ELIT_BLOCKS = {"QwenImage": (8, 44, 8)}


def _mmdit_factory(size: str, elit: bool, patch: int):
    from elit_bench.models.mmdit import MMDiT

    depth, width, heads, text_dim, text_tokens = MMDIT_SIZES[size]

    def build(**kw):
        interface = {k: kw.pop(k) for k in ELIT_KEYS if k in kw}
        if interface and not elit:
            raise UserError(f"{sorted(interface)} only apply to ELIT models")
        if elit and size in MMDIT_ELIT_BLOCKS:
            interface.setdefault("blocks", MMDIT_ELIT_BLOCKS[size])
        kw = {"depth": depth, "hidden_size": width, "num_heads": heads, "text_dim": text_dim,
              "text_tokens": text_tokens, "patch_size": patch, **kw}
        backbone = MMDiT(**kw)
        return ELIT(backbone, **interface) if elit else backbone
    return build


for _size in MMDIT_SIZES:
    for _patch in (2, 4):  # /4: the compositional digits' 32 px canvases on a CPU
        register_model(ModelName("MMDiT", _size, str(_patch)), _mmdit_factory(_size, elit=False, patch=_patch))
        register_model(ModelName("ELIT-MMDiT", _size, str(_patch)), _mmdit_factory(_size, elit=True, patch=_patch))
