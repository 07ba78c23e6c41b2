"""The wheel is complete and works on its own: built from the tracked files, installed
(not editable) into a fresh virtual environment, it imports, runs the quickstart at reduced
size from its console script, and holds every file under ``iclsim/`` that git tracks
(``py.typed`` included).

The fresh environment borrows the dependencies (jax, numpy, …) of the running one through a
plain path entry, so nothing is downloaded; a path entry runs no ``.pth`` file, so the
editable install of the checkout is not importable there (checked: ``iclsim.__file__`` lies in
the new environment).
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["train.steps=20", "train.chunk_steps=10", "axes.seeds=1", "eval.n_prompts=256",
         "eval.batch=128", "train.batch=16", "axes.rank=[1,2]"]


def _tracked(under: str) -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (the wheel is compared with git's file list)")
    out = subprocess.run(["git", "ls-files", "-z", "--", under], cwd=ROOT, capture_output=True,
                         check=True).stdout.decode()
    return [p for p in out.split("\0") if p and (ROOT / p).is_file()]


@pytest.mark.slow
def test_wheel_installs_alone_and_runs_the_quickstart(tmp_path):
    # 1. build from a copy of the tracked files (no build outputs left in the checkout)
    src = tmp_path / "src"
    for rel in _tracked("."):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         str(src), "-w", str(dist)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-4000:]
    (wheel,) = dist.glob("iclsim-*.whl")

    # 2. the wheel holds every tracked file under iclsim/
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    tracked = {rel for rel in _tracked("iclsim") if "__pycache__" not in rel}
    assert "iclsim/py.typed" in tracked and "iclsim/__main__.py" in tracked
    missing = sorted(tracked - names)
    assert not missing, f"tracked files missing from the wheel: {missing}"
    extra = sorted(n for n in names if n.startswith("iclsim/") and n not in tracked)
    assert not extra, f"files in the wheel that git does not track: {extra}"

    # 3. a fresh environment with the wheel installed (not editable)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    new_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                               "['purelib'])"], capture_output=True, text=True,
                              check=True).stdout.strip()
    # the running environment's packages, as a plain path entry (its .pth files do not run)
    Path(new_site, "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
         str(wheel)], capture_output=True, text=True, timeout=600)
    if install.returncode != 0 and "--python" in install.stderr:
        pytest.skip("pip too old for --python")
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-4000:]

    work = tmp_path / "work"
    (work / "sweeps").mkdir(parents=True)
    shutil.copy(ROOT / "sweeps" / "quickstart.toml", work / "sweeps")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(MPLBACKEND="Agg", PATH=f"{py.parent}{os.pathsep}{env.get('PATH', '')}")

    def run(*cmd, timeout=600):
        proc = subprocess.run(list(cmd), cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        return proc.stdout

    where = run(str(py), "-c", "import iclsim, iclsim.linear; print(iclsim.__file__)").strip()
    assert Path(where).resolve().is_relative_to(env_dir.resolve()), where
    if "iclsim/testing/__init__.py" in tracked:
        run(str(py), "-c", "import iclsim.testing")
    assert run(str(py), "-m", "iclsim", "--version").strip().startswith("iclsim ")
    script = py.parent / ("iclsim.exe" if os.name == "nt" else "iclsim")
    assert script.is_file(), "the console script 'iclsim' was not installed"
    sets = [a for s in SMALL for a in ("--set", s)]
    out = run(str(script), "run", "sweeps/quickstart.toml", *sets, "--quiet", "--out",
              str(work / "results"))
    # the one-line verdict (at 20 steps it need not agree)
    assert re.search(r"^(AGREES with|DIFFERS from|UNDECIDED against) the theory", out,
                     flags=re.M), out[-2000:]
    assert list((work / "results").glob("quickstart-*/*/result.nc")), out[-2000:]
