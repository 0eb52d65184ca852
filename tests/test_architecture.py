"""The package's layering (docs/architecture.md): every import points down or sideways, and no import circle.

Every module of `elit_bench` is parsed with `ast`; each import it makes, at module level or inside a
function, is an edge to the module it names (`from pkg import name` is an edge to `pkg.name` when that is a
module, else to `pkg`). A module's layer is the longest entry of LAYERS that names it or a package above it;
every `cli` module (the `elit-bench` subcommands) sits in the top layer. Strict: no allowlist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "elit_bench"

# lowest first; a module may import its own layer and those below (the same list is in docs/architecture.md)
LAYERS = [
    ("leaf", ["elit_bench", "elit_bench.errors", "elit_bench.provenance", "elit_bench.checkpoint",
              "elit_bench.distributed", "elit_bench.tracking", "elit_bench.baselines", "elit_bench.flops",
              "elit_bench.record", "elit_bench.yamlconfig"]),
    ("models", ["elit_bench.models"]),
    ("flow", ["elit_bench.flow"]),
    ("data", ["elit_bench.data"]),
    ("sampling, training", ["elit_bench.sampling", "elit_bench.training", "elit_bench.schema"]),
    ("metrics", ["elit_bench.metrics"]),
    ("bench", ["elit_bench.bench"]),
    ("suites", ["elit_bench.suites"]),
    ("results", ["elit_bench.results"]),
    ("entry points", ["elit_bench.cli", "elit_bench.convert", "elit_bench.suites.api", "*.cli"]),
]


def module_files(root: Path, package: str) -> dict[str, Path]:
    """{dotted module name: file} of every module of `package` under `root` (a package is its __init__)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path], package: str) -> set[str]:
    """The modules of `package` that module `name` imports anywhere in its file (functions included)."""
    base_pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def owner(dotted: str) -> str | None:  # the longest prefix of `dotted` that is a module
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {owner(alias.name) for alias in node.names if alias.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = base_pkg.split(".")[: len(base_pkg.split(".")) - node.level + 1]
                source = ".".join([*parts, *([source] if source else [])])
            if source.split(".")[0] != package:
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                found.add(full if full in modules else owner(source))
    return found - {None, name}


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_files(root, package)
    return {name: imports_of(name, path, modules, package) for name, path in modules.items()}


def layer_of(module: str, layers=LAYERS) -> int | None:
    """Index of `module`'s layer in `layers`: `*.cli` modules the last entry's, else the longest naming entry."""
    if module.endswith(".cli"):
        return next(i for i, (_, entries) in enumerate(layers) if "*.cli" in entries)
    best, best_len = None, -1
    for i, (_, entries) in enumerate(layers):
        for entry in entries:
            # the package root names itself only: a new top-level module must be placed on purpose
            matches = module == entry or (entry.count(".") >= 1 and module.startswith(entry + "."))
            if matches and len(entry) > best_len:
                best, best_len = i, len(entry)
    return best


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """'a (layer) -> b (layer)' for every import of a higher layer than the importer's."""
    out = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer_of(module, layers), layer_of(target, layers)
            if None not in (low, high) and high > low:
                out.append(f"{module} ({layers[low][0]}) -> {target} ({layers[high][0]})")
    return out


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(circles)


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_every_module_has_a_layer(graph):
    # catches: a new top-level module or package nobody placed (add it to LAYERS and docs/architecture.md)
    assert [m for m in graph if layer_of(m) is None] == []


def test_no_import_goes_up_a_layer(graph):
    violations = upward_imports(graph)
    assert not violations, "imports from a lower layer to a higher one:\n" + "\n".join(violations)


def test_no_import_circle(graph):
    circles = import_circles(graph)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_walk_sees_function_level_imports_upward_arrows_and_circles(tmp_path):
    # catches: a walker that reads only module-level imports, misreads `from pkg import module`, or misses a circle
    pkg = tmp_path / "toy"
    (pkg / "low").mkdir(parents=True)
    (pkg / "high").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "high" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from toy.high import b\n    return b\n")
    (pkg / "high" / "b.py").write_text("import toy.low.a\n")
    (pkg / "high" / "c.py").write_text("from toy.low import a\nfrom toy.high.b import thing\n")
    (pkg / "high" / "cli.py").write_text("from .c import x\n")
    graph = import_graph(tmp_path, "toy")
    assert graph["toy.low.a"] == {"toy.high.b"} and graph["toy.high.c"] == {"toy.low.a", "toy.high.b"}
    assert graph["toy.high.cli"] == {"toy.high.c"}
    layers = [("low", ["toy.low"]), ("high", ["toy.high"]), ("top", ["*.cli"])]
    assert upward_imports(graph, layers) == ["toy.low.a (low) -> toy.high.b (high)"]
    assert import_circles(graph) == [["toy.high.b", "toy.low.a"]]
    assert layer_of("toy.high.cli", layers) == 2 and layer_of("toy.other", layers) is None


def test_docs_list_the_same_layers():
    # catches: a layer added, removed or reordered here but not in docs/architecture.md (or the reverse)
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers -->\n(.*?)<!-- /layers -->", text, re.S)
    assert block, "docs/architecture.md must hold the layer list between <!-- layers --> and <!-- /layers -->"
    rows = [line for line in block.group(1).splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    assert [row.split("|")[1].strip() for row in rows] == [name for name, _ in reversed(LAYERS)]
