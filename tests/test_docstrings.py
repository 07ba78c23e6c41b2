"""Every public name is documented: each name in the ``__all__`` of a public module has a
non-empty docstring (a ``#:`` comment or a string after the assignment for constants), and
the oracles and best-rank / best-head / best-scale helpers say what they return.

These docstrings are the API reference (``docs/api/``, built by
``tests/test_api_reference.py``).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The modules of the API reference whose ``__all__`` is their public face.
PUBLIC_MODULES = [
    "iclsim.linear", "iclsim.linear.oracle", "iclsim.parity", "iclsim.parity.oracle",
    "iclsim.nn", "iclsim.engine.setting", "iclsim.engine.store", "iclsim.engine.verdict",
    "iclsim.transformer.model", "iclsim.transformer.references", "iclsim.transformer.sweep",
    "iclsim.transformer.figures", "iclsim.llm.aggregate", "iclsim.llm.backend",
    "iclsim.llm.cache", "iclsim.llm.figures", "iclsim.llm.prompts", "iclsim.llm.report",
    "iclsim.llm.stats", "iclsim.llm.sweep",
]
if (ROOT / "iclsim" / "testing").is_dir():
    PUBLIC_MODULES.append("iclsim.testing")

#: Functions that must have a ``Returns`` section: the oracles and the best-* helpers.
MUST_SAY_RETURNS = [
    ("iclsim.linear.oracle", None),  # every function in its __all__
    ("iclsim.parity.oracle", None),
    ("iclsim.engine.setting", "best_scale"),
    ("iclsim.linear", "best_rank"),
    ("iclsim.parity", "best_heads"),
]

_MODULE_NEEDS = {"iclsim.llm.backend": "torch", "iclsim.nn": "flax"}


def _import(name):
    need = _MODULE_NEEDS.get(name)
    if need is not None:
        pytest.importorskip(need)
    return importlib.import_module(name)


def _assignment_docs(module) -> dict[str, str]:
    """``{name: doc}`` for the module-level assignments of ``module``'s source that carry a
    ``#:`` comment (above or on the line) or a string literal right after them."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    tree = ast.parse(source)
    docs = {}
    body = tree.body
    for i, node in enumerate(body):
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        else:
            continue
        comment = []
        j = node.lineno - 2
        while j >= 0 and lines[j].lstrip().startswith("#:"):
            comment.insert(0, lines[j].lstrip()[2:].strip())
            j -= 1
        same_line = re.search(r"#:(.*)$", lines[node.end_lineno - 1])
        if same_line:
            comment.append(same_line.group(1).strip())
        after = body[i + 1] if i + 1 < len(body) else None
        if (after is not None and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            comment.append(after.value.value)
        text = " ".join(c for c in comment if c)
        for name in targets:
            if text:
                docs[name] = text
    return docs


def _constant_doc(module, name) -> str:
    """The ``#:`` doc of a constant, looked up in ``module`` and in the modules it imports
    ``name`` from."""
    doc = _assignment_docs(module).get(name, "")
    if doc:
        return doc
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if any(alias.name == name and alias.asname in (None, name) for alias in node.names):
                return _constant_doc(importlib.import_module(node.module), name)
    return ""


def _doc_of(module, name) -> str:
    obj = getattr(module, name)
    if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj):
        return inspect.getdoc(obj) or ""
    if callable(obj) and type(obj).__module__.startswith("iclsim"):
        # an instance of an iclsim class (an engine setting): its own class documents it
        return _constant_doc(module, name) or inspect.getdoc(type(obj)) or ""
    return _constant_doc(module, name)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(name):
    module = _import(name)
    assert (module.__doc__ or "").strip(), f"{name} has no module docstring"
    public = getattr(module, "__all__", None)
    assert public, f"{name} has no __all__"
    missing = [n for n in public if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what the module does not define: {missing}"
    undocumented = [n for n in public if not _doc_of(module, n).strip()]
    assert not undocumented, f"{name}: no docstring for {undocumented}"


def _functions_that_must_say_returns():
    for module_name, attr in MUST_SAY_RETURNS:
        module = importlib.import_module(module_name)
        names = module.__all__ if attr is None else [attr]
        for n in names:
            if inspect.isfunction(getattr(module, n)):
                yield f"{module_name}.{n}"


@pytest.mark.parametrize("qualname", list(_functions_that_must_say_returns()))
def test_oracles_and_best_helpers_say_what_they_return(qualname):
    module_name, _, name = qualname.rpartition(".")
    func = getattr(importlib.import_module(module_name), name)
    doc = inspect.getdoc(func) or ""
    assert re.search(r"^Returns\n-------\n\S", doc, flags=re.M), (
        f"{qualname}: its docstring has no numpy-style 'Returns' section")


def test_the_checker_sees_a_missing_docstring(tmp_path, monkeypatch):
    (tmp_path / "undocumented_mod.py").write_text(
        '"""A module."""\n__all__ = ["f", "A", "B", "C"]\n\ndef f():\n    return 1\n\n'
        "#: documented\nA = 1\nB = 2\nC = 3  #: documented too\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("undocumented_mod", None)
    module = importlib.import_module("undocumented_mod")
    assert [n for n in module.__all__ if not _doc_of(module, n).strip()] == ["f", "B"]
