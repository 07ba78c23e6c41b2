"""Parity sweeps (setting 2 on the engine): config errors, CLI, oracle values, resume, compare,
divergence.  Tiny shapes and few steps: the presets in sweeps/ are the real checks.

The CLI runs in this process (``cli.main``): no JAX start-up per command.  One tiny sweep
(module fixture ``cli_run``) serves every test; its second learning rate diverges, for the
divergence test.  The one-line error contract through a real process is
tests/test_cli_errors.py's; only the kill -9 resume (slow) needs a subprocess here.
"""

import io
import signal
import textwrap
import tomllib
import warnings
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import numpy as np
import pytest

from iclsim import cli
from iclsim.engine import store
from iclsim.engine.config import ConfigError, apply_overrides, parse
from iclsim.engine.sweep import DivergedRunWarning, run_sweep
from iclsim.linear.sweep import LINEAR, LinearSweepConfig
from iclsim.parity import oracle
from iclsim.parity.sweep import PARITY, ParitySweepConfig, simulated_best_heads
from conftest import result_folder, run_cli

TINY = textwrap.dedent(
    """
    name = "tiny_parity"
    setting = "parity"
    seed = 1

    [data]
    family = "canonical"
    k = 2

    [train]
    mode = "population"
    protocol = "progressive"
    steps = 40
    chunk_steps = 20
    loss_every = 5

    [axes]
    heads = [1, 2]
    seeds = 2
    learning_rate = [0.1, 1e300]  # 1e300 overflows: test_diverged_run_is_flagged_and_left_out
    n_context = [16]

    [eval]
    label_flip = [0.0, 0.4]
    bit_flip = [0.0, 0.25]
    n_prompts = 512
    test_prompts = 512
    batch = 256

    [figures]
    formats = ["png"]
    """
)

LINEAR_TINY = textwrap.dedent(
    """
    name = "tiny_linear"
    setting = "linear"
    [spectrum]
    values = [2.0, 1.0]
    [train]
    mode = "population"
    steps = 30
    [axes]
    rank = [1, 2]
    seeds = 1
    n_context = [6]
    [eval]
    label_noise = [0.0, 4.0, 20.0]
    n_prompts = 256
    batch = 256
    [figures]
    formats = ["png"]
    """
)

RESULT_VARS = ("risk", "test_risk", "eval_risk", "eval_se", "eval_exact", "block_mass",
               "readout", "attention", "loss", "verdict", "diverged")


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """A persistent XLA compilation cache shared by this module's CLI subprocesses (the slow
    kill -9 test): its two processes compile the tiny sweep's programs once."""
    return tmp_path_factory.mktemp("jax_cache")


def _cli(*argv):
    """``iclsim *argv`` in this process: the exit status, stdout and stderr as a subprocess
    would give them, and the Python warnings raised on the way (a real process prints them on
    stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, redirect_stdout(out), \
            redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue(),
                           warnings=caught)


def _parse(text, *overrides):
    return parse(ParitySweepConfig, apply_overrides(tomllib.loads(text), overrides))


# ---------------------------------------------------------------- config errors

@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stepz=3", "train.stepz: unknown key; allowed keys here: steps, chunk_steps"),
        ("axes.heads='two'", "axes.heads[0]: expected integer"),
        ("train.steps=1.5", "train.steps: expected integer"),
        ("axes.heads=[1, 7]", "axes.heads: 7 is out of range; allowed 1..K = 1..6"),
        ("axes.heads=[0]", "axes.heads: 0 is out of range; allowed >= 1"),
        ("eval.label_flip=[0.6]", "eval.label_flip: 0.6 is out of range; allowed [0.0, 0.5]"),
        ("eval.bit_flip=[-0.1]", "eval.bit_flip: -0.1 is out of range; allowed [0.0, 0.5]"),
        ("eval.label_flip=[0.1, 0.1]", "eval.label_flip: values must be distinct"),
        ("train.protocol='greedy'", "train.protocol: 'greedy' is not allowed; choose one of "
                                    "'joint', 'progressive'"),
        ("data.family='zipf'", "data.family: 'zipf' is not allowed"),
        ("model.m_max=1", "model.m_max: 1 is below the largest head count 2"),
        ("setting='linear'", "setting: 'linear' is not allowed; choose one of 'parity'"),
        ("train.protocol='joint'", "axes.init_scale: 0 with train.protocol = 'joint'"),
        ("train.adam_b1=1.0", "train.adam_b1: 1.0 is out of range; allowed [0.0, 0.9999]"),
    ],
)
def test_bad_keys_give_one_clear_error(override, message):
    with pytest.raises(ConfigError) as info:
        _parse(TINY, override)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_explicit_pi_is_checked_and_families_resolve():
    with pytest.raises(ConfigError, match=r"^data\.pi: must sum to 1"):
        _parse(TINY, "data.family='explicit'", "data.pi=[0.5, 0.4]")
    with pytest.raises(ConfigError, match=r"^data\.pi: must be sorted in decreasing order"):
        _parse(TINY, "data.family='explicit'", "data.pi=[0.4, 0.6]")
    cfg = _parse(TINY, "data.family='geometric'", "data.K=3", "data.ratio=0.5", "axes.heads=[3]")
    np.testing.assert_allclose(cfg.pi(), np.array([4, 2, 1]) / 7)
    with pytest.raises(ConfigError, match="allowed 1..K = 1..3"):
        _parse(TINY, "data.family='power_law'", "data.K=3", "axes.heads=[4]")


def test_cli_error_is_one_line_exit_2_and_keys_lists_parity(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    proc = _cli("run", str(path), "--set", "axes.heads=[9]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "iclsim: error: axes.heads: 9 is out of range; allowed 1..K = 1..6"]
    assert not proc.warnings, [str(w.message) for w in proc.warnings]
    keys = _cli("keys", "parity")
    assert keys.returncode == 0
    for key in ("data.pi", "train.protocol", "eval.label_flip", "eval.bit_flip"):
        assert key in keys.stdout


# ---------------------------------------------------------------- running

@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """The tiny sweep run once through the CLI (module-scoped; float32 like any CLI run)."""
    root = tmp_path_factory.mktemp("parity")
    path = root / "tiny.toml"
    path.write_text(TINY)
    proc = _cli("run", str(path), "--quiet", "--set", f"output_dir='{root / 'ref'}'")
    assert proc.returncode == 0, proc.stderr
    folder = result_folder(root / "ref")
    return root, path, folder, proc


def test_cli_run_writes_result_and_figures(cli_run):
    _, _, folder, proc = cli_run
    assert "best head count under evaluation noise" in proc.stdout
    assert "1 compile(s)" in proc.stdout  # every m, seed, learning rate and chunk: one program
    ds = store.load_result(folder)
    assert ds.attrs["setting"] == "parity"
    assert set(RESULT_VARS) <= set(ds.data_vars)
    assert ds["risk"].dims == ("n_context", "heads", "seed", "learning_rate", "init_scale")
    assert ds["eval_risk"].dims[-2:] == ("label_flip", "bit_flip")
    assert ds["block_mass"].dims[-2:] == ("head", "block")
    # heads h >= m are NaN, heads h < m are on the simplex (runs that did not diverge)
    mass = ds["block_mass"].sel(heads=1, learning_rate=0.1).values
    assert np.isnan(mass[..., 1, :]).all() and np.allclose(mass[..., 0, :].sum(-1), 1, atol=1e-5)
    for stem in ("parity_risk_vs_label_flip", "parity_risk_vs_bit_flip", "parity_attention_mass",
                 "parity_readout", "parity_training_curves"):
        assert (folder / f"{stem}.png").exists(), stem
    shown = _cli("show", str(folder))
    assert shown.returncode == 0 and "R_m" in shown.stdout


def test_dataset_oracle_values_equal_the_oracle(cli_run):
    _, _, folder, _ = cli_run
    ds = store.load_result(folder)
    pi = np.array([0.40, 0.25, 0.15, 0.10, 0.06, 0.04])
    for p in (0.0, 0.4):
        for q in (0.0, 0.25):
            at = dict(n_context=16, label_flip=p, bit_flip=q)
            for m in range(7):
                got = float(ds["optimal_risk"].sel(heads_all=m, **at))
                assert got == pytest.approx(
                    oracle.optimal_risk(pi, 16, m, label_flip=p, bit_flip=q, k=2), rel=1e-12)
            assert int(ds["best_heads"].sel(**at)) == oracle.best_heads(
                pi, 16, label_flip=p, bit_flip=q, k=2).heads
    # Canonical table (docs/theory/parity.md): m* = 3 at p = 0.4 and m* = 4 at q = 0.25.
    assert int(ds["best_heads"].sel(n_context=16, label_flip=0.4, bit_flip=0.0)) == 3
    assert int(ds["best_heads"].sel(n_context=16, label_flip=0.0, bit_flip=0.25)) == 4
    np.testing.assert_allclose(ds["gamma"].sel(n_context=16), oracle.optimal_readout(pi, 16),
                               rtol=1e-12)
    np.testing.assert_allclose(ds["thresholds"].sel(n_context=16), oracle.thresholds(pi, 16),
                               rtol=1e-12)
    np.testing.assert_allclose(ds["clean_risk"].sel(n_context=16), oracle.optimal_risks(pi, 16),
                               rtol=1e-12)
    # eval_exact is the exact loss (5) of the stored trained weights at the noisy μ.
    sel = dict(n_context=16, heads=2, seed=0, learning_rate=0.1, init_scale=0.0)
    alpha = ds["attention"].sel(**sel).values[:2]
    c = ds["readout"].sel(**sel).values[:2]
    want = oracle.population_loss(alpha, c, pi, 16, 2, label_flip=0.4, bit_flip=0.25)
    got = float(ds["eval_exact"].sel(label_flip=0.4, bit_flip=0.25, **sel))
    assert got == pytest.approx(want, rel=1e-9)


# ~40 s (two CLI processes, the first compiles into the module's cache); the default run keeps
# the engine's resume twins (tests/test_cli_errors.py: Ctrl-C mid-training;
# tests/test_llm_sweep.py: SIGKILL)
@pytest.mark.slow
def test_kill_minus_9_then_resume_is_bitwise_equal(cli_run, jax_cache):
    root, path, ref_folder, _ = cli_run
    out = root / "resume"
    args = ("run", str(path), "--quiet", "--set", f"output_dir='{out}'")
    killed = run_cli(*args, kill_after_checkpoints=1, cache=jax_cache)
    assert killed.returncode == -signal.SIGKILL
    folder = result_folder(out)
    assert list(folder.glob("group-000.ckpt.p0.npz")) and not list(folder.glob("result*.nc"))
    resumed = run_cli(*args, cache=jax_cache)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed run" in resumed.stdout
    got, ref = store.load_result(folder), store.load_result(ref_folder)
    for name in RESULT_VARS:
        np.testing.assert_array_equal(got[name].values, ref[name].values, err_msg=name)


# ~20 s; tests/test_compare.py places real results of every setting in the default run
@pytest.mark.slow
def test_compare_draws_the_side_by_side_figure(cli_run, tmp_path, capsys):
    _, _, parity_folder, _ = cli_run
    cfg = parse(LinearSweepConfig, apply_overrides(tomllib.loads(LINEAR_TINY),
                                                   [f"output_dir='{tmp_path / 'lin'}'"]))
    linear = run_sweep(cfg, LINEAR, quiet=True)
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(linear.path), str(parity_folder), "--out", str(out)]) == 0
    assert (out / "scale_vs_noise.png").exists() and (out / "scale_vs_noise.pdf").exists()
    # Each result is placed by its setting: the order of the arguments does not matter, two
    # results of one setting are one clear error, exit 2.
    assert cli.main(["compare", str(parity_folder), str(linear.path), "--out", str(out),
                     "--format", "png"]) == 0
    assert cli.main(["compare", str(parity_folder), str(parity_folder)]) == 2
    assert "two parity results" in capsys.readouterr().err


def test_diverged_run_is_flagged_and_left_out(cli_run):
    """lr = 1e300 (the tiny sweep's second learning rate) overflows: those runs are flagged,
    warned about and left out of aggregates; the figures are drawn from the others."""
    _, _, folder, proc = cli_run
    diverged = [str(w.message) for w in proc.warnings if w.category is DivergedRunWarning]
    assert len(diverged) == 1 and "learning_rate=1e+300" in diverged[0], diverged
    ds = store.load_result(folder)
    assert ds["diverged"].sel(learning_rate=1e300).all()
    assert (ds["verdict"].sel(learning_rate=1e300) == "diverged").all()
    assert not ds["diverged"].sel(learning_rate=0.1).any()
    # Aggregates use the finite runs only: pooled over both learning rates, the best m is the
    # finite runs' best m; the summary names the all-diverged slice instead of a number.
    for p in (0.0, 0.4):
        assert simulated_best_heads(ds, 16, p, 0.0) == simulated_best_heads(
            ds, 16, p, 0.0, learning_rate=0.1) >= 0
    text = PARITY.summary(ds)
    finite = float(ds["eval_risk"].sel(learning_rate=0.1, heads=2, label_flip=0.4,
                                       bit_flip=0.0).mean("seed").squeeze())
    assert f"{finite:.4f}/" in text
    assert "all diverged" in text and "diverged x2" in text
    for stem in ("parity_attention_mass", "parity_readout", "parity_risk_vs_label_flip"):
        assert (folder / f"{stem}.png").exists()
