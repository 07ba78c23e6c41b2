"""The API reference (``docs/api/``, Sphinx autodoc + napoleon) builds with warnings as errors,
and has a page for every public module.

Build it by hand with ``pip install -e ".[docs]"`` and
``sphinx-build -W -b html docs/api docs/api/_build/html``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "api"

#: One page per public module (``docs/api/<page>.rst``) and the module it documents.
PAGES = {
    "linear": "iclsim.linear", "parity": "iclsim.parity", "transformer": "iclsim.transformer",
    "llm": "iclsim.llm", "nn": "iclsim.nn", "engine.setting": "iclsim.engine.setting",
    "engine.store": "iclsim.engine.store", "engine.verdict": "iclsim.engine.verdict",
    "testing": "iclsim.testing",
}


def test_every_public_module_has_a_page_in_the_index():
    index = (API / "index.rst").read_text()
    for page, module in PAGES.items():
        text = (API / f"{page}.rst").read_text()
        assert f".. automodule:: {module}\n" in text, page
        assert f"\n   {page}\n" in index, f"{page} is not in the index's toctree"


@pytest.mark.slow
def test_api_reference_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="the API reference needs the extra 'docs' "
                        "(pip install -e \".[docs]\")")
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(API), str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
        env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.returncode == 0, f"sphinx-build -W failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    for page, module in PAGES.items():
        html = (out / f"{page}.html").read_text(encoding="utf-8")
        assert f'id="module-{module}"' in html, f"{page}.html does not document {module}"
    linear = (out / "linear.html").read_text(encoding="utf-8")
    for name in ("optimal_gamma", "population_risk", "best_rank", "LinearTrainResult.test_risk",
                 "LinearTrainResult.gamma_error"):
        assert f'id="iclsim.linear.{name}"' in linear, name
