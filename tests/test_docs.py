"""The documentation a reader can follow: no citation of a document outside the repository, and every
`FILE.md#anchor` link in the code, suites, baselines and docs lands on a heading of that file."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("elit_bench", "suites", "baselines", "docs", "tests", "scripts")
TOP_LEVEL = ("README.md", "CHANGELOG.md", "CITATION.cff", "pyproject.toml")
# the specification digest the harness was first written against lives outside the repository
OUTSIDE = re.compile(r"REFERENCE(\.md| section| §| Eq\.?| Table)")
LINK = re.compile(r"([\w./-]*\.md)#([\w-]+)")


def text_files() -> list[Path]:
    files = [ROOT / name for name in TOP_LEVEL if (ROOT / name).is_file()]
    for folder in CHECKED:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files.append(path)
    out = []
    for path in files:
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # weights, images
            continue
        out.append(path)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    found, fenced = set(), False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.add(slug(line.lstrip("#")))
    return found


def test_the_scanned_tree_is_the_repository():
    # catches: a moved folder silently emptying the scan below
    names = {p.relative_to(ROOT).as_posix() for p in text_files()}
    assert {"README.md", "docs/conventions.md", "docs/weights.md", "elit_bench/flops.py",
            "baselines/README.md", "suites/quickstart.yaml"} <= names


def test_no_citation_of_a_document_outside_the_repository():
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in text_files()
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if OUTSIDE.search(line) and p != Path(__file__).resolve()]
    assert not hits, "cite docs/conventions.md#... or the paper's own section instead:\n" + "\n".join(hits)


def test_slug_follows_github():
    assert slug(" rho efficiency") == "rho-efficiency"
    assert slug("FLOPs") == "flops"
    assert slug("Weights, data and reference files") == "weights-data-and-reference-files"


def links() -> list[tuple[Path, str, str]]:
    return [(p, target, anchor) for p in text_files() for target, anchor in LINK.findall(p.read_text(encoding="utf-8"))
            if p != Path(__file__).resolve()]


def test_conventions_is_linked_from_the_code():
    # the docstrings that used to cite the outside document point here now
    assert {anchor for _, target, anchor in links() if target.endswith("conventions.md")} >= \
        {"flops", "guidance", "sampling", "training", "metrics", "architecture"}


@pytest.mark.parametrize("source, target, anchor", links(), ids=lambda v: str(v) if isinstance(v, str) else None)
def test_every_markdown_anchor_link_resolves(source, target, anchor):
    # a path relative to the linking file (Markdown) or to the repository root (docstrings, help texts)
    candidates = [source.parent / target, ROOT / target]
    markdown = next((c for c in candidates if c.is_file()), None)
    assert markdown is not None, f"{source.relative_to(ROOT)} links to {target}, which does not exist"
    assert anchor in anchors(markdown), \
        f"{source.relative_to(ROOT)} links to {target}#{anchor}; its headings are {sorted(anchors(markdown))}"
