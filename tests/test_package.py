"""The package's front: ``import iclsim`` is light, its subpackages resolve lazily, and
``python -m iclsim`` is the ``iclsim`` command."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = ("linear", "parity", "testing", "transformer", "llm")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_import_iclsim_is_light_and_subpackages_resolve_lazily():
    present = [name for name in PUBLIC if (ROOT / "iclsim" / name).is_dir()]
    assert {"linear", "parity", "transformer", "llm"} <= set(present)
    code = f"""
import sys, types
import iclsim
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "jax"))
assert not heavy, heavy
assert not any(m.startswith("iclsim.") for m in sys.modules), sorted(sys.modules)
for name in {present!r}:
    mod = getattr(iclsim, name)
    assert isinstance(mod, types.ModuleType) and mod.__name__ == "iclsim." + name, mod
    assert name in iclsim.__all__ and name in dir(iclsim)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
assert not heavy, heavy  # iclsim.llm itself imports neither
from iclsim import linear
assert linear is iclsim.linear
try:
    iclsim.no_such_name
except AttributeError:
    pass
else:
    raise AssertionError("no AttributeError")
print("ok")
"""
    proc = _python(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_python_dash_m_iclsim_is_the_command():
    version = subprocess.run([sys.executable, "-m", "iclsim", "--version"], capture_output=True,
                             text=True, timeout=300, cwd=ROOT)
    assert version.returncode == 0, version.stderr[-2000:]
    from iclsim import __version__

    assert version.stdout.strip() == f"iclsim {__version__}"
    bad = subprocess.run([sys.executable, "-m", "iclsim", "no-such-command"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert bad.returncode == 2 and "usage: iclsim" in bad.stderr
