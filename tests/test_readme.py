"""README.md runs verbatim, in order, on a fresh copy of the repository.

Every ``bash`` block line and every ``python`` block of README.md is run in order in a
temporary copy of the repository (so ``results/`` starts empty), at reduced sizes: ``iclsim
run`` commands get ``--set`` overrides appended (later overrides win), ``python -m
iclsim.linear`` gets small flags, and Python snippets get ``steps=``/``batch=``/``seeds=``
shrunk.  Install commands (``python3 -m venv … && pip install …``) are skipped up to their
last ``&&`` (CI runs them for real), and the test command itself is not re-run.  A README
command that breaks makes this test fail (checked below on a broken copy).
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Appended to ``iclsim run <sweep>``: the smallest sizes that still exercise everything.
SMALL_RUN = {
    "linear": ["train.steps=20", "train.chunk_steps=10", "axes.seeds=1", "eval.n_prompts=256",
               "eval.batch=128", "train.batch=16"],
    "parity": ["train.steps=30", "train.chunk_steps=30", "axes.seeds=1", "eval.n_prompts=256",
               "eval.test_prompts=256", "eval.batch=128"],
    # the README's test command fetched smollm2-135m (CI); one seed, 4 queries, two p
    "llm": ['axes.model=["smollm2-135m"]', "axes.seeds=1", "eval.n_queries=4",
            "axes.label_flip=[0.0,0.5]"],
}
SMALL_MAIN = ["--steps", "20", "--batch", "16", "--seeds", "1", "--full-steps", "20",
              "--eval-prompts", "256", "--population-steps", "40"]


def readme_steps(text: str) -> list[tuple[str, str]]:
    """[(kind, code)] in order: kind "bash" (one command line) or "python" (one block)."""
    steps = []
    for lang, body in re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S):
        if lang == "python":
            steps.append(("python", body))
            continue
        for line in body.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                steps.append(("bash", line))
    return steps


def _shrink_bash(line: str) -> str | None:
    if "&&" in line:  # install-and-run lines: CI runs the install; here only the last command
        line = line.split("&&")[-1].strip()
    if line.startswith("python -m pytest"):
        return None  # the test command itself
    if line.startswith("iclsim run "):
        sweep = shlex.split(line)[2]
        name = Path(sweep).name
        setting = "parity" if "parity" in name else "llm" if name.startswith("llm") else "linear"
        extra = " ".join(f"--set {shlex.quote(s)}" for s in SMALL_RUN[setting])
        return f"{line} {extra} --quiet"
    if line.startswith("python -m iclsim.linear"):
        return f"{line} {' '.join(SMALL_MAIN)}"
    return line


def _shrink_python(code: str) -> str:
    code = re.sub(r"\bsteps=\d+", "steps=20", code)
    code = re.sub(r"\bbatch=\d+", "batch=16", code)
    return re.sub(r"\bseeds=\d+", "seeds=1", code)


def replay(readme: str, workdir: Path, env: dict) -> list[str]:
    """Run the README in ``workdir``; raise AssertionError naming the first step that fails."""
    done = []
    # Expected: the shrunk steps take ~10-120 s each on 2 CPU cores (the install step, which
    # pip may have to download for, the longest); 900 s per step guards against a hang only.
    for kind, code in readme_steps(readme):
        if kind == "bash":
            cmd = _shrink_bash(code)
            if cmd is None:
                continue
            proc = subprocess.run(["bash", "-c", cmd], cwd=workdir, env=env, capture_output=True,
                                  text=True, timeout=900)
        else:
            proc = subprocess.run([sys.executable, "-c", _shrink_python(code)], cwd=workdir,
                                  env=env, capture_output=True, text=True, timeout=900)
            cmd = code.strip().splitlines()[0] + " …"
        if proc.returncode != 0 or "Traceback" in proc.stderr:
            raise AssertionError(f"README step failed: {cmd}\n{proc.stdout[-1500:]}\n"
                                 f"{proc.stderr[-3000:]}")
        done.append(cmd)
    return done


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("clone")
    for name in ("sweeps", "README.md"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    return work


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    return dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", MPLBACKEND="Agg")


@pytest.mark.slow  # ~5-9 min: every tour command; CI's .ci/run installs as README says on every run
def test_readme_runs_verbatim_in_order(workdir, env):
    done = replay((ROOT / "README.md").read_text(), workdir, env)
    assert any(c.startswith("iclsim run sweeps/quickstart.toml") for c in done)
    assert any(c.startswith("iclsim show") for c in done)
    assert sum(1 for kind, _ in readme_steps((ROOT / "README.md").read_text())
               if kind == "python") >= 2


def test_replay_fails_when_a_readme_command_breaks(tmp_path, env):
    broken = "```bash\niclsim keys\niclsim shwo results/\n```\n"
    with pytest.raises(AssertionError, match="iclsim shwo"):
        replay(broken, tmp_path, env)
    snippet = "```python\nfrom iclsim import linear\nlinear.optimal_risks([[1.0]], 0)\n```\n"
    with pytest.raises(AssertionError, match="README step failed"):
        replay(snippet, tmp_path, env)
