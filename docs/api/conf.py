"""Sphinx configuration of the iclsim API reference (autodoc + napoleon).

Build it, warnings as errors, with::

    sphinx-build -W -b html docs/api docs/api/_build/html
"""

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import iclsim  # noqa: E402

project = "iclsim"
author = "iclsim contributors"
release = version = iclsim.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Oracles and helpers write their signatures' defaults as plain values; keep them readable.
autodoc_preserve_defaults = True
# iclsim.llm.backend needs the extra ``llm`` (torch, transformers): without it its page is
# built from stand-ins of those packages, so the reference builds from ``.[docs]`` alone.
autodoc_mock_imports = [name for name in ("torch", "transformers")
                        if importlib.util.find_spec(name) is None]

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"iclsim {release} API reference"

#: Whether this copy has the verification kit (its page is a note where it does not).
HAS_TESTING = (ROOT / "iclsim" / "testing").is_dir()


def _testing_page(app, docname, source):
    if docname == "testing" and not HAS_TESTING:
        source[0] = ("iclsim.testing\n==============\n\n"
                     "The verification kit ``iclsim.testing`` is not part of this copy.\n")


def setup(app):
    app.connect("source-read", _testing_page)
