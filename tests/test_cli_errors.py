"""The first hour of a new user: every bad input is one line and exit 2 with nothing written;
Ctrl-C at any phase is exit 130, no core dump, and the sweep resumes to the same numbers;
a figure that cannot be drawn never loses the stored result."""

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import FAULTS, result_folder, run_cli
from iclsim import cli
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


def _in_process(capsys, *argv):
    """``iclsim *argv`` in this process (no JAX start-up per call): the exit status, stdout and
    stderr as a subprocess would give them.  Any Python warning raised on the way is an error
    here (a real process would print it on stderr, so the error would not be one line).  The
    subprocess test below checks the same one-line contract through a real process."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse: --help, --version, usage errors
            code = exc.code
    captured = capsys.readouterr()
    assert not caught, [str(w.message) for w in caught]
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)


def test_a_folder_as_the_sweep_file(tmp_path):
    # a real process: exit status 2 and exactly one line on stderr (nothing from JAX or XLA)
    _one_line(run_cli("run", str(tmp_path)), "is a folder")


def test_a_sweep_file_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    _one_line(_in_process(capsys, "run", str(path)), "not valid TOML", "UTF-8")


@pytest.mark.parametrize("override, needles", [
    ("spectrum.values=[1e308, 1.0, 0.5]", ("spectrum.values", "out of range")),
    ("spectrum.values=[1.0, 2.0, 0.5]", ("spectrum.values", "decreasing")),
    ("eval.n_prompts=10000000000000", ("eval.n_prompts", "out of range")),
    ("eval.label_noise=[1e300]", ("eval.label_noise", "out of range")),
    ("axes.rank=[1,2", ("axes.rank", "not valid TOML")),
    ("axes.rank=true", ("axes.rank", "expected integer")),
])
def test_bad_values_name_the_key_and_the_range(sweep, tmp_path, capsys, override, needles):
    line = _one_line(_in_process(capsys, "run", str(sweep), "--out", str(tmp_path / "o"),
                                 "--set", override), *needles)
    assert len(line) < 200  # no 300-digit numbers
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.npz"))


def test_an_unwritable_output_folder(sweep, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _one_line(_in_process(capsys, "run", str(sweep), "--out", str(blocker / "sub")),
              "output_dir", "cannot write")


def test_every_run_diverging_keeps_the_result(sweep, tmp_path, jax_cache):
    out = tmp_path / "o"
    proc = run_cli("run", str(sweep), "--quiet", "--out", str(out), "--set",
                   "axes.learning_rate=1e300", cache=jax_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    ds = store.load_result(result_folder(out))
    assert bool(ds["diverged"].all())
    assert "all diverged" in proc.stdout
    # stderr names the diverged runs once; no numpy noise from reducing all-NaN cells
    for noise in ("Mean of empty slice", "Degrees of freedom", "invalid value encountered"):
        assert noise not in proc.stderr, proc.stderr[-2000:]
    # Every risk is NaN, so the log-scaled figures cannot be drawn: that failure is one line
    # naming the redraw command, no figure is listed, and the stored result (loaded above) is intact.
    assert "figure:" not in proc.stdout, proc.stdout[-2000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("figures: not drawn")]
    assert "the result is stored" in line and f"iclsim plot {result_folder(out)}" in line, line
    assert (result_folder(out) / "result.nc").is_file()


def _reference(sweep, root, cache, extra=()):
    proc = run_cli("run", str(sweep), "--quiet", "--out", str(root), *extra, cache=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return store.load_result(result_folder(root))


def _interrupt_at(sweep, out, phase, cache, extra=()):
    """The CLI, sent SIGINT (what Ctrl-C sends) by tests/fault_injection.py at ``phase``."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    # Expected: ~10-25 s each on 2 CPU cores with the compilation cache warm; 300 s is a guard.
    proc = subprocess.run([sys.executable, str(FAULTS), f"int@{phase}", "--", "run", str(sweep),
                           "--out", str(out), *extra], capture_output=True, text=True, env=env,
                          timeout=300)
    return proc.returncode, proc.stderr


# What each phase leaves behind (TINY: one group of 6 chunks of 10 steps): the files the
# interrupted process must have written before it stopped, below ``out``.
_LEFT = {
    "start": (),
    "chunk:1": ("*/*/group-000.ckpt.*.npz",),
    "chunk:2": ("*/*/group-000.ckpt.*.npz",),
    "trained:1": (".trained/*/*/group-000.*.npz",),
    "group:1": ("*/*/group-000.p*.npz",),
    "result": ("*/*/result.nc",),
}


@pytest.mark.parametrize("phases", [
    pytest.param(("chunk:1", "trained:1"), id="mid-training-then-before-evaluation"),
    pytest.param(("start", "chunk:1", "chunk:2", "trained:1", "group:1", "result"),
                 id="every-phase", marks=pytest.mark.slow),
])
def test_ctrl_c_at_named_phases(sweep, tmp_path, jax_cache, phases):
    """SIGINT at named phases, one after another on the same output folder (start-up, after a
    chunk checkpoint, after the trained parameters, after the evaluated group, after the result
    before the figures): each time exit 130 with one line and no traceback or core dump, the
    phase's files on disk; the rerun then resumes to bitwise the numbers of an uninterrupted run."""
    # figures (a presentation key, outside the result's key) are drawn only where a phase
    # needs them: the interrupt after the result, before the figures
    extra = () if "result" in phases else ("--set", "figures.formats=[]")
    ref = _reference(sweep, tmp_path / "ref", jax_cache, extra)
    out = tmp_path / "int"
    for phase in phases:
        code, stderr = _interrupt_at(sweep, out, phase, jax_cache, extra)
        assert code == 130, (phase, code, stderr[-3000:])
        assert "Traceback" not in stderr and "Segmentation" not in stderr, (phase, stderr[-3000:])
        assert "interrupted; rerun the same command to resume" in stderr, (phase, stderr[-3000:])
        for pattern in _LEFT[phase]:
            assert list(out.glob(pattern)), (phase, pattern, sorted(map(str, out.rglob("*"))))
        if phase != "result":
            assert not list(out.glob("*/*/result.nc")), phase
    proc = run_cli("run", str(sweep), "--quiet", "--out", str(out), *extra, cache=jax_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed" in proc.stdout, proc.stdout[-2000:]
    folder = result_folder(out)
    assert not list(folder.glob(".*.tmp"))
    got = store.load_result(folder)
    for name in ("risk", "gamma", "eval_risk", "loss"):
        np.testing.assert_array_equal(got[name].values, ref[name].values, err_msg=name)


def test_keys_are_toml_and_the_docs_table_is_generated(capsys):
    proc = _in_process(capsys, "keys")
    assert proc.returncode == 0
    assert "default [1, 2, 3, 4, 5, 6, 7, 8]" in proc.stdout and "None" not in proc.stdout
    parity = _in_process(capsys, "keys", "parity")
    assert "default unset" in parity.stdout  # adam_b1: TOML has no null
    table = _in_process(capsys, "keys", "--markdown").stdout.strip()
    docs = (Path(__file__).parent.parent / "docs" / "sweeps.md").read_text()
    assert table in docs, "docs/sweeps.md's key table is stale: paste `iclsim keys --markdown`"


def test_version_and_help_say_where_results_go(capsys):
    import iclsim

    version = _in_process(capsys, "--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"iclsim {iclsim.__version__}"
    assert "<code hash>" in _in_process(capsys, "run", "--help").stdout
