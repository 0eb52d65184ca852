"""What users write, read one way: YAML 1.2 text (config and suite files) and `KEY=VALUE` overrides.

Every file and every `KEY=VALUE` on a command line (`elit-bench train lr=3e-4`, `run --set
train.steps=200`, `flops --set latents_per_group=16`, `bench --kw`, `convert --set`) goes through
`parse_yaml`, which reads YAML 1.2's core schema, not PyYAML's YAML 1.1: `1e-4` is a float (1.1: a
string), `1:16` a string (1.1: the base-60 number 76), `010` is 10 (1.1: octal 8), `yes`/`no`/`on`/
`off` and dates stay strings; `true`/`false`, `null`/`~`, `0x1F`, `0o17`, `.inf`, `.nan` are as in
YAML 1.2. Loading is safe (`yaml.SafeLoader`: no Python objects).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable

import yaml

from elit_bench.errors import UserError

_BOOL, _INT, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_YAML_1_1_ONLY = (_BOOL, _INT, _FLOAT, "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader with YAML 1.2 core-schema scalars, and a bound on the document's size with its
    aliases expanded: the harness copies, merges and hashes configs as trees, so a few lines of nested
    aliases (a "billion laughs") would take gigabytes; they are refused first."""

    MAX_NODES = 100_000  # the largest suite file has under 600

    def construct_document(self, node):
        sizes: dict[int, int] = {}

        def expanded(n) -> int:  # node count with every alias written out; shared nodes are counted once each
            if id(n) not in sizes:
                sizes[id(n)] = 0  # a node that contains itself counts as one
                children = n.value if isinstance(n, yaml.SequenceNode) else \
                    [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else []
                sizes[id(n)] = min(1 + sum(expanded(c) for c in children), self.MAX_NODES + 1)
            return sizes[id(n)]

        if expanded(node) > self.MAX_NODES:
            raise yaml.YAMLError(f"it expands to more than {self.MAX_NODES:,} values through aliases (an alias bomb?)")
        return super().construct_document(node)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)  # matched by the YAML 1.2 pattern below: base 10 unless 0o / 0x
        return int(text, 0) if text.lstrip("+-")[:2] in ("0o", "0x") else int(text, 10)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _YAML_1_1_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT, re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"
                       r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))
_Loader.add_constructor(_INT, _Loader.construct_yaml_int)


def parse_yaml(text: str, what: str = "YAML"):
    """YAML 1.2 text -> Python values, safely; a syntax error is a one-line UserError that starts with `what`."""
    try:
        return yaml.load(text, Loader=_Loader)  # safe: _Loader is a yaml.SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{what} is not valid YAML: {getattr(exc, 'problem', None) or exc}{where}") from None


def split_assignment(item: str, what: str = "override", example: str = "lr=3e-4") -> tuple[str, str]:
    """'train.lr=3e-4' -> ('train.lr', '3e-4'): the key and the value's text, split at the first '='."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise UserError(f"{what} {item!r} must look like key=value, e.g. {example}")
    return key, raw


def set_dotted(tree: dict, dotted: str, value) -> None:
    """tree['a']['b'] = value for 'a.b', creating the mappings on the way."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        if not isinstance(node.setdefault(part, {}), dict):
            raise UserError(f"{dotted}={value!r}: {part!r} is not a mapping")
        node = node[part]
    node[leaf] = value


def apply_overrides(config: dict, items: Iterable[str], what: str = "override",
                    example: str = "lr=3e-4 or model_kwargs.hidden_size=64") -> dict:
    """`KEY=VALUE` strings applied to a copy of `config`: dotted keys reach into mappings, values are YAML 1.2.

    `what` and `example` name the option in error messages (`--set`, `train.steps=200`).
    """
    config = copy.deepcopy(config)
    for item in items:
        key, raw = split_assignment(item, what, example)
        set_dotted(config, key, parse_yaml(raw, f"the value of {what} {item!r}"))
    return config
