"""The theory lives in the repository (docs/theory/), and what it cites exists.

* nothing in README.md, docs/, iclsim/, sweeps/, tests/ or benchmarks/ points at a document outside
  the repository (a directory beside the checkout, which users do not have);
* every ``tests/<file>.py::<name>`` cited in docs/theory/*.md is a test function defined in that file;
* every ``iclsim.<module>.<name>`` cited there imports and resolves;
* every link to ``theory/<page>.md#<anchor>`` in the docs, and every anchored link out of a
  theory page, names a heading of its target page.
"""

from __future__ import annotations

import ast
import importlib
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THEORY = ROOT / "docs" / "theory"
THEORY_PAGES = sorted(THEORY.glob("*.md"))
SEARCHED = ["README.md", "docs", "iclsim", "sweeps", "tests", "benchmarks"]
# Built from parts so that this file does not match itself.
OUTSIDE_REF = "shared" + "/"

TEST_REF = re.compile(r"(tests/[A-Za-z0-9_/]+\.py)::([A-Za-z_][A-Za-z0-9_]*)")
CODE_REF = re.compile(r"`(iclsim(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
THEORY_LINK = re.compile(r"\]\((?:[./]*docs/|\.\./|\./)?(theory/[a-z_]+\.md)#([^)\s]+)\)")
SAME_PAGE_LINK = re.compile(r"\]\(#([^)\s]+)\)")
UP_LINK = re.compile(r"\]\(\.\./([a-z_]+\.md)#([^)\s]+)\)")


def _text_files():
    for name in SEARCHED:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts:
                continue  # bytecode caches are build outputs, regenerated from the sources
            try:
                yield f, f.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # binary (figures, netCDF)


def test_theory_pages_exist():
    names = {p.name for p in THEORY_PAGES}
    assert {"linear.md", "parity.md"} <= names, names


def test_no_reference_to_documents_outside_the_repository():
    hits = [
        f"{f.relative_to(ROOT)}:{i}: {line.strip()}"
        for f, text in _text_files()
        for i, line in enumerate(text.splitlines(), 1)
        if OUTSIDE_REF in line
    ]
    assert not hits, "references outside the repository:\n" + "\n".join(hits)


def _defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


def _refs(pattern):
    out = set()
    for page in THEORY_PAGES:
        for match in pattern.finditer(page.read_text(encoding="utf-8")):
            out.add((page.name,) + match.groups())
    return sorted(out)


@pytest.mark.parametrize("page, path, name", _refs(TEST_REF))
def test_cited_tests_exist(page, path, name):
    file = ROOT / path
    assert file.is_file(), f"{page} cites {path}, which does not exist"
    assert name.startswith("test"), f"{page} cites {path}::{name}, not a test name"
    assert name in _defined_tests(file), f"{page} cites {path}::{name}, not defined there"


def test_theory_pages_cite_tests_and_oracles():
    for page in THEORY_PAGES:
        text = page.read_text(encoding="utf-8")
        assert TEST_REF.search(text), page.name
        assert CODE_REF.search(text), page.name


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("page, dotted", _refs(CODE_REF))
def test_cited_code_resolves(page, dotted):
    try:
        _resolve(dotted)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"{page} cites {dotted}, which does not resolve: {err!r}")


def _anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    out = []
    for ch in heading.strip().lower():
        if ch in " -_" or unicodedata.category(ch)[0] in "LN":
            out.append("-" if ch == " " else ch)
    return "".join(out)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, flags=re.M)}


def _theory_links():
    links = set()
    for f, text in _text_files():
        if f.suffix != ".md":
            continue
        for target, anchor in THEORY_LINK.findall(text):
            links.add((str(f.relative_to(ROOT)), target, anchor))
        if f.parent == THEORY:
            for anchor in SAME_PAGE_LINK.findall(text):
                links.add((str(f.relative_to(ROOT)), f"theory/{f.name}", anchor))
            for target, anchor in UP_LINK.findall(text):  # theory page -> docs/<page>.md
                links.add((str(f.relative_to(ROOT)), target, anchor))
    return sorted(links)


@pytest.mark.parametrize("source, target, anchor", _theory_links())
def test_links_into_the_theory_pages_resolve(source, target, anchor):
    page = ROOT / "docs" / target
    assert page.is_file(), f"{source} links to {target}, which does not exist"
    assert anchor in _anchors(page), f"{source} links to {target}#{anchor}, no such heading"
