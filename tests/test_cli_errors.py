"""The first hour of a new user: every bad input is one line and exit 2 with nothing written;
Ctrl-C at any moment is exit 130, no core dump, and the sweep resumes to the same numbers;
a figure that cannot be drawn never loses the stored result."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import result_folder, run_cli
from iclsim.engine import store

TINY = textwrap.dedent(
    """
    name = "tiny"
    [spectrum]
    values = [2.0, 1.0, 0.5]
    [train]
    steps = 60
    batch = 16
    chunk_steps = 10
    [axes]
    rank = [1, 2, 3]
    seeds = 1
    n_context = [5]
    [eval]
    label_noise = [0.0, 2.0]
    n_prompts = 256
    batch = 64
    [figures]
    formats = ["png"]
    """
)


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture
def sweep(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _one_line(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_a_folder_as_the_sweep_file(tmp_path):
    _one_line(run_cli("run", str(tmp_path)), "is a folder")


def test_a_sweep_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    _one_line(run_cli("run", str(path)), "not valid TOML", "UTF-8")


@pytest.mark.parametrize("override, needles", [
    ("spectrum.values=[1e308, 1.0, 0.5]", ("spectrum.values", "out of range")),
    ("spectrum.values=[1.0, 2.0, 0.5]", ("spectrum.values", "decreasing")),
    ("eval.n_prompts=10000000000000", ("eval.n_prompts", "out of range")),
    ("eval.label_noise=[1e300]", ("eval.label_noise", "out of range")),
    ("axes.rank=[1,2", ("axes.rank", "not valid TOML")),
    ("axes.rank=true", ("axes.rank", "expected integer")),
])
def test_bad_values_name_the_key_and_the_range(sweep, tmp_path, override, needles):
    line = _one_line(run_cli("run", str(sweep), "--out", str(tmp_path / "o"), "--set", override),
                     *needles)
    assert len(line) < 200  # no 300-digit numbers
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.npz"))


def test_an_unwritable_output_folder(sweep, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _one_line(run_cli("run", str(sweep), "--out", str(blocker / "sub")), "output_dir",
              "cannot write")


def test_every_run_diverging_keeps_the_result(sweep, tmp_path, jax_cache):
    out = tmp_path / "o"
    proc = run_cli("run", str(sweep), "--quiet", "--out", str(out), "--set",
                   "axes.learning_rate=1e300", cache=jax_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    ds = store.load_result(result_folder(out))
    assert bool(ds["diverged"].all())
    assert "all diverged" in proc.stdout
    # Figures are drawn or their failure is one line; either way the stored result is intact.
    assert ("figure:" in proc.stdout) or ("figures: not drawn" in proc.stdout)


def _reference(sweep, root, cache):
    proc = run_cli("run", str(sweep), "--quiet", "--out", str(root), cache=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return store.load_result(result_folder(root))


def _interrupt_at(sweep, out, delay, cache):
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    proc = subprocess.Popen([sys.executable, "-m", "iclsim.cli", "run", str(sweep), "--out",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stderr


@pytest.mark.parametrize("moments", [
    pytest.param(2, id="2-random-moments"),
    pytest.param(6, id="6-random-moments", marks=pytest.mark.slow),
])
def test_ctrl_c_at_random_moments(sweep, tmp_path, jax_cache, moments):
    """SIGINT at random moments (start-up, compile, training, evaluation, store, figures):
    exit 130 with one line and no core dump, or 0 if it had finished; the rerun resumes to
    bitwise the numbers of an uninterrupted run."""
    ref = _reference(sweep, tmp_path / "ref", jax_cache)
    out = tmp_path / "int"
    rng = random.Random(int(os.environ.get("ICLSIM_TEST_SEED", "0")) + moments)
    for _ in range(moments):
        code, stderr = _interrupt_at(sweep, out, rng.uniform(0.5, 9.0), jax_cache)
        assert code in (0, 130), (code, stderr[-3000:])
        assert "Traceback" not in stderr and "Segmentation" not in stderr
        if code == 130:
            assert "interrupted; rerun the same command to resume" in stderr
    proc = run_cli("run", str(sweep), "--quiet", "--out", str(out), cache=jax_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = result_folder(out)
    assert not list(folder.glob(".*.tmp"))
    got = store.load_result(folder)
    for name in ("risk", "gamma", "eval_risk", "loss"):
        np.testing.assert_array_equal(got[name].values, ref[name].values, err_msg=name)


def test_keys_are_toml_and_the_docs_table_is_generated():
    proc = run_cli("keys")
    assert proc.returncode == 0
    assert "default [1, 2, 3, 4, 5, 6, 7, 8]" in proc.stdout and "None" not in proc.stdout
    parity = run_cli("keys", "parity")
    assert "default unset" in parity.stdout  # adam_b1: TOML has no null
    table = run_cli("keys", "--markdown").stdout.strip()
    docs = (Path(__file__).parent.parent / "docs" / "sweeps.md").read_text()
    assert table in docs, "docs/sweeps.md's key table is stale: paste `iclsim keys --markdown`"


def test_version_and_help_say_where_results_go():
    import iclsim

    assert run_cli("--version").stdout.strip() == f"iclsim {iclsim.__version__}"
    assert "<code hash>" in run_cli("run", "--help").stdout
