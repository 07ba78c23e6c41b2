"""Sweeps: config validation, CLI errors, resume after kill -9, sharding, compile count, store."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from iclsim import cli
from iclsim.engine import store
from iclsim.engine.config import ConfigError, apply_overrides, parse
from iclsim.engine.setting import build_groups
from iclsim.engine import sweep as sweep_module
from iclsim.engine.sweep import DivergedRunWarning, run_sweep
from iclsim.linear import oracle
from iclsim.linear.sweep import LINEAR, LinearSweepConfig
from conftest import result_folder, run_cli

SMALL = textwrap.dedent(
    """
    name = "small"
    setting = "linear"
    seed = 3

    [spectrum]
    family = "explicit"
    values = [2.0, 1.0, 0.3]
    rotation = "random"

    [model]
    parametrization = "block"

    [train]
    mode = "monte_carlo"
    sampler = "statistic"
    loo = false
    adam_b1 = 0.9
    average_tail = 0.0
    steps = 40
    batch = 16
    chunk_steps = 10
    loss_every = 5

    [axes]
    rank = [1, 2, 3]
    seeds = 2
    learning_rate = [0.02]
    n_context = [6]

    [eval]
    label_noise = [0.0, 4.0]
    n_prompts = 512
    batch = 256

    [figures]
    formats = ["png"]
    """
)

RESULT_VARS = ("risk", "gamma", "loss", "eval_risk", "eval_se", "test_risk", "verdict")


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL.replace('name = "small"', f'name = "small"\noutput_dir = "{tmp_path / "out"}"'))
    return path


def _cli(*args, **kwargs):
    return run_cli(*args, **kwargs)


def _main(capsys, *argv):
    """``iclsim *argv`` in this process (the CLI's own code path, without a JAX start-up per
    call): exit status, stdout and stderr as a subprocess would give them.  A Python warning on
    the way fails the test (a real process would print it on stderr).  test_cli_errors checks
    the one-line contract through a real process too."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse: --help
            code = exc.code
    captured = capsys.readouterr()
    assert not caught, [str(w.message) for w in caught]
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)


def _config(path, *overrides):
    return cli.load_config(path, overrides)[1]


# ---------------------------------------------------------------- config and CLI errors

@pytest.mark.parametrize(
    "override, key",
    [
        ("train.stepz=3", "train.stepz: unknown key"),
        ("train.steps='many'", "train.steps: expected integer"),
        ("train.steps=0", "train.steps: 0 is out of range"),
        ("model.parametrization='diag'", "model.parametrization: 'diag' is not allowed"),
        ("axes.rank=[1, 9]", "axes.rank: 9 is out of range"),
        ("axes.learning_rate=[-1.0]", "axes.learning_rate: -1.0 is out of range"),
        ("eval.label_noise=[-1.0]", "eval.label_noise: -1.0 is out of range"),
        ("axes.rank=[2, 2]", "axes.rank: values must be distinct"),
        ("setting='quantum'", "setting: 'quantum' is not allowed"),
    ],
)
def test_bad_keys_give_one_clear_error(sweep_file, override, key):
    with pytest.raises(ConfigError) as info:
        _config(sweep_file, override)
    message = str(info.value)
    assert key in message and "\n" not in message


def test_population_mode_rejects_full_lsa(sweep_file):
    with pytest.raises(ConfigError, match="model.parametrization"):
        _config(sweep_file, "model.parametrization='full'", "train.mode='population'")


def test_overrides_are_typed(sweep_file):
    cfg = _config(sweep_file, "train.steps=20", "axes.rank=[1,3]", "axes.learning_rate=0.5")
    assert cfg.train.steps == 20 and cfg.axes.rank == (1, 3) and cfg.axes.learning_rate == (0.5,)
    assert apply_overrides({}, ["a.b=word"]) == {"a": {"b": "word"}}


def test_cli_error_is_one_line_and_exit_2(sweep_file, capsys):
    proc = _main(capsys, "run", str(sweep_file), "--set", "train.steps=-5")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "iclsim: error: train.steps: -5 is out of range; allowed [1, 10000000]"
    ]
    missing = _main(capsys, "run", "no/such/file.toml")
    assert missing.returncode == 2 and "no such sweep file" in missing.stderr


def test_cli_help_lists_commands(capsys):
    proc = _main(capsys, "--help")
    assert proc.returncode == 0
    for word in ("run", "show", "plot", "keys"):
        assert word in proc.stdout
    keys = _main(capsys, "keys")
    assert keys.returncode == 0
    assert "train.chunk_steps" in keys.stdout and "axes.rank" in keys.stdout


def test_every_preset_parses():
    root = os.path.join(os.path.dirname(__file__), "..", "sweeps")
    for name in sorted(os.listdir(root)):
        if name.endswith(".toml"):
            setting, cfg = cli.load_config(os.path.join(root, name))
            assert cfg.name and setting.name == cfg.setting


# ---------------------------------------------------------------- running

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the small sweep (module-scoped: reused by several tests), its
    6 runs in three groups of 2 (one static shape), compiled afresh.  No figure files: the
    plot test below draws them from the stored result, and test_config_keys checks that a
    sweep draws the formats its figures.formats asks for."""
    out = tmp_path_factory.mktemp("ref")
    cfg = parse(LinearSweepConfig, apply_overrides(
        __import__("tomllib").loads(SMALL), [f"output_dir='{out}'", "train.max_group_runs=2",
                                            "figures.formats=[]"]))
    sweep_module._compiled.cache_clear()  # no program of an earlier test may be reused
    outcome = run_sweep(cfg, LINEAR, quiet=True)
    return cfg, outcome


def test_result_is_labelled_and_loads(reference):
    cfg, outcome = reference
    ds = store.load_result(outcome.path)
    assert set(RESULT_VARS) <= set(ds.data_vars)
    assert ds["risk"].dims == ("n_context", "rank", "seed", "learning_rate", "init_scale",
                               "train_label_noise")
    assert list(ds["rank"].values) == [1, 2, 3] and list(ds.label_noise.values) == [0.0, 4.0]
    assert json.loads(ds.attrs["config"])["train"]["steps"] == 40
    for attr in ("iclsim_version", "git_commit", "jax_version", "device_kind", "compiles"):
        assert attr in ds.attrs
    frame = ds["risk"].to_dataframe()
    assert len(frame) == 3 * 2
    # The oracle values stored beside the simulation are the oracle's (independent call).
    cov = cfg.spectrum.covariance()
    want = oracle.optimal_risk(cov, 6, 2, label_noise=4.0)
    got = float(ds["oracle_risk"].sel(n_context=6, rank_all=2, train_label_noise=0.0,
                                      label_noise=4.0, input_noise=0.0))
    assert got == pytest.approx(want, rel=1e-12)
    assert outcome.compiles == 1  # one program for all ranks, seeds, groups and chunks
    assert outcome.figures == [] and not list(outcome.path.glob("*.png"))  # none asked for


def test_show_and_plot_from_stored_result(reference, tmp_path, capsys):
    _, outcome = reference
    proc = _main(capsys, "show", str(outcome.path))
    assert proc.returncode == 0 and "L_r" in proc.stdout
    proc = _main(capsys, "plot", str(outcome.path / "result.nc"), "--out", str(tmp_path),
                 "--format", "png")
    assert proc.returncode == 0
    assert (tmp_path / "linear_risk_vs_label_noise.png").exists()


@pytest.mark.slow  # ~60-120 s; kill -9 and resume stay in the default run in test_parity_sweep,
# test_llm_sweep and (in-process, linear) test_provenance
def test_kill_minus_9_then_resume_is_bitwise_equal(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    uninterrupted = _cli("run", str(path), "--quiet", "--set", f"output_dir='{tmp_path / 'ref'}'")
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    out = tmp_path / "resume"
    args = ("run", str(path), "--quiet", "--set", f"output_dir='{out}'")
    killed = _cli(*args, kill_after_checkpoints=2)
    assert killed.returncode == -signal.SIGKILL
    folder = result_folder(out)
    assert list(folder.glob("group-000.ckpt.p0.npz")), "the checkpoint of chunk 2 is on disk"
    assert not list(folder.glob("result*.nc"))
    assert not list(folder.glob(".*.tmp"))  # nothing half-written left behind
    resumed = _cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed run" in resumed.stdout
    got = store.load_result(folder)
    ref = store.load_result(result_folder(tmp_path / "ref"))
    for name in RESULT_VARS:
        np.testing.assert_array_equal(got[name].values, ref[name].values, err_msg=name)


SHARD_SCRIPT = textwrap.dedent(
    """
    import sys, tomllib, jax
    from iclsim.engine.config import apply_overrides, parse
    from iclsim.engine.sweep import run_sweep
    from iclsim.linear.sweep import LINEAR, LinearSweepConfig
    raw = apply_overrides(tomllib.loads(open(sys.argv[1]).read()), [f"output_dir='{sys.argv[2]}'"])
    out = run_sweep(parse(LinearSweepConfig, raw), LINEAR, quiet=True)
    print(jax.device_count(), out.path)
    """
)


@pytest.mark.slow  # ~50-100 s; test_multihost_cli (default run) compares 2x2 devices with 4
def test_sharded_equals_unsharded(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL.replace("seeds = 2", "seeds = 1"))  # 3 runs: padded to 4 devices
    results = {}
    for devices in (1, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                   JAX_PLATFORMS="cpu")
        proc = subprocess.run([sys.executable, "-c", SHARD_SCRIPT, str(path), str(tmp_path / f"d{devices}")],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        count, folder = proc.stdout.split()[-2:]
        assert int(count) == devices
        results[devices] = store.load_result(folder)
    assert results[4].attrs["device_count"] == 4
    for name in ("risk", "gamma", "loss", "eval_risk"):
        np.testing.assert_allclose(results[4][name].values, results[1][name].values,
                                   rtol=1e-6, atol=1e-7, err_msg=name)


def test_groups_of_same_shape_compile_once(reference):
    """The reference's three groups (max_group_runs = 2) share one traced program."""
    cfg, outcome = reference
    assert len(build_groups(cfg, LINEAR)) == 3  # 6 runs in groups of 2
    assert outcome.compiles == 1  # three groups, one chunk length: one traced program
    assert int(outcome.dataset.attrs["compiles"]) == 1


@pytest.mark.slow  # 24 s; test_cli_errors and test_parity_sweep check diverged runs in the default run
def test_diverged_run_is_flagged_and_left_out(tmp_path):
    raw = apply_overrides(__import__("tomllib").loads(SMALL), [
        f"output_dir='{tmp_path}'", "axes.learning_rate=[0.02, 1e300]", "train.schedule='constant'",
        "axes.rank=[2]",
    ])
    cfg = parse(LinearSweepConfig, raw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = run_sweep(cfg, LINEAR, quiet=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, DivergedRunWarning)]
    assert messages and "learning_rate=1e+300" in messages[0]
    ds = outcome.dataset
    assert ds["diverged"].sel(learning_rate=1e300).all()
    assert (ds["verdict"].sel(learning_rate=1e300) == "diverged").all()
    assert not ds["diverged"].sel(learning_rate=0.02).any()


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.npz"

    class Boom(Exception):
        pass

    def bad_writer(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise Boom

    with pytest.raises(Boom):
        store._atomic(target, bad_writer)
    assert list(tmp_path.iterdir()) == []
    store.save_npz(target, {"a": np.arange(3)})
    np.testing.assert_array_equal(store.load_npz(target)["a"], np.arange(3))


MULTIHOST_SCRIPT = textwrap.dedent(
    """
    import sys, tomllib, jax
    jax.distributed.initialize(coordinator_address=f"localhost:{sys.argv[3]}", num_processes=2,
                               process_id=int(sys.argv[4]))
    from iclsim.engine.config import apply_overrides, parse
    from iclsim.engine.sweep import run_sweep
    from iclsim.linear.sweep import LINEAR, LinearSweepConfig
    raw = apply_overrides(tomllib.loads(open(sys.argv[1]).read()), [f"output_dir='{sys.argv[2]}'"])
    out = run_sweep(parse(LinearSweepConfig, raw), LINEAR, quiet=True)
    print(jax.process_index(), jax.device_count(), out.path)
    """
)


@pytest.mark.slow  # 35 s: two jax.distributed processes (sharded = unsharded stays in the default run)
def test_multihost_each_host_writes_its_shard(tmp_path):
    """Two processes on this machine, 2 CPU devices each, joined by jax.distributed."""
    import socket

    path = tmp_path / "small.toml"
    path.write_text(SMALL.replace("seeds = 2", "seeds = 1"))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    # The port is found free by binding port 0 and releasing it, so another program may take
    # it before process 0's coordinator binds it; process 0 then fails to start its RPC server
    # and both processes are launched again on a fresh port.
    for _ in range(5):
        with socket.socket() as sock:
            sock.bind(("localhost", 0))
            port = sock.getsockname()[1]
        procs = [subprocess.Popen([sys.executable, "-c", MULTIHOST_SCRIPT, str(path),
                                   str(tmp_path / "mh"), str(port), str(i)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env) for i in range(2)]
        first = procs[0].communicate(timeout=600)  # timeouts: guards only
        if procs[0].returncode != 0 and "Failed to start RPC server" in first[1]:
            procs[1].kill()
            procs[1].communicate()
            continue
        outs = [first, procs[1].communicate(timeout=600)]
        break
    else:
        raise AssertionError("no free port for the coordinator in 5 attempts")
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    folder = Path(outs[0][0].split()[-1])
    assert folder.parent.parent == tmp_path / "mh"  # <root>/<name>-<config>/<code>/
    assert sorted(f.name for f in folder.glob("result*.nc")) == ["result.p0.nc", "result.p1.nc"]
    ds = store.load_result(folder)
    assert bool(ds["present"].all()) and ds.attrs["device_count"] == 4
    single = subprocess.run([sys.executable, "-c", SHARD_SCRIPT, str(path), str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert single.returncode == 0, single.stderr
    ref = store.load_result(single.stdout.split()[-1])
    for name in ("risk", "gamma", "eval_risk"):
        np.testing.assert_allclose(ds[name].values, ref[name].values, rtol=1e-6, atol=1e-7,
                                   err_msg=name)
