"""Results keyed by (config, code): new code never reuses old numbers; checkpoints keyed by
pytree path with checksums; a corrupt file is recomputed, never loaded; one process per folder."""

import json
import shutil
import textwrap
import tomllib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iclsim import cli
from iclsim.engine import provenance, store, sweep
from iclsim.engine.config import apply_overrides, parse
from iclsim.engine.sweep import CorruptCheckpointWarning, run_sweep
from iclsim.linear.sweep import LINEAR, LinearSweepConfig

TINY = textwrap.dedent(
    """
    name = "tiny"
    seed = 5
    [spectrum]
    values = [2.0, 0.5]
    [train]
    steps = 30
    batch = 8
    chunk_steps = 10
    loss_every = 5
    [axes]
    rank = [1, 2]
    seeds = 1
    n_context = [4]
    [eval]
    label_noise = [0.0, 1.0]
    n_prompts = 64
    batch = 32
    [figures]
    formats = []
    """
)
VARS = ("risk", "gamma", "loss", "eval_risk", "test_risk")


def _cfg(root, *overrides):
    raw = apply_overrides(tomllib.loads(TINY), [f"output_dir='{root}'", *overrides])
    return parse(LinearSweepConfig, raw)


def _with_code(monkeypatch, tag):
    """Pretend the iclsim source is different (as if a line of a model had changed)."""
    real = provenance.code_record

    def fake():
        return {**real(), "source_sha256": tag}

    monkeypatch.setattr(provenance, "code_record", fake)


class Interrupt(Exception):
    pass


def _interrupt_after(monkeypatch, n):
    """Raise after ``n`` chunk checkpoints, as a Ctrl-C between chunks would."""
    original = store.save_checked
    count = {"n": 0}

    def save(path, arrays, meta=None):
        out = original(path, arrays, meta)
        if ".ckpt." in path.name:
            count["n"] += 1
            if count["n"] >= n:
                raise Interrupt
        return out

    monkeypatch.setattr(store, "save_checked", save)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    return run_sweep(_cfg(root), LINEAR, quiet=True)


def _assert_same(ds, ref):
    for name in VARS:
        np.testing.assert_array_equal(ds[name].values, ref[name].values, err_msg=name)


def test_source_hash_sees_a_one_line_change(tmp_path):
    tree = tmp_path / "iclsim"
    shutil.copytree(provenance.PACKAGE_ROOT, tree, ignore=shutil.ignore_patterns("__pycache__"))
    before, n_files = provenance.source_hash.__wrapped__(str(tree))
    assert n_files > 10 and (before, n_files) == provenance.source_hash.__wrapped__(
        str(provenance.PACKAGE_ROOT))
    model = tree / "linear" / "model.py"
    model.write_text(model.read_text().replace("\n", "\n# changed\n", 1))
    assert provenance.source_hash.__wrapped__(str(tree))[0] != before


def test_source_hash_sees_every_file_but_pycache(tmp_path):
    tree = tmp_path / "iclsim"
    shutil.copytree(provenance.PACKAGE_ROOT, tree, ignore=shutil.ignore_patterns("__pycache__"))
    before, n_files = provenance.source_hash.__wrapped__(str(tree))
    cache = tree / "linear" / "__pycache__"
    cache.mkdir()
    (cache / "model.cpython-311.pyc").write_bytes(b"compiled")
    assert provenance.source_hash.__wrapped__(str(tree)) == (before, n_files)
    (tree / "linear" / "table.json").write_text("[1.0, 2.0]\n")  # a data file, not *.py
    after, n_after = provenance.source_hash.__wrapped__(str(tree))
    assert after != before and n_after == n_files + 1


def test_code_record_holds_libraries_python_flags_and_jax_config(monkeypatch):
    import platform
    import sys

    import numpy
    import optax
    import scipy
    import xarray

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    record = provenance.code_record()
    assert record["libraries"]["optax"] == optax.__version__
    assert record["libraries"]["numpy"] == numpy.__version__
    assert record["libraries"]["scipy"] == scipy.__version__
    assert record["libraries"]["xarray"] == xarray.__version__
    assert record["python"].endswith(".".join(map(str, sys.version_info[:3])))
    assert record["xla_flags"] == ""
    config = record["jax_config"]
    assert config["jax_enable_x64"] is bool(jax.numpy.zeros(()).dtype == np.float64)
    assert config["jax_default_prng_impl"] == str(jax.random.key_impl(jax.random.key(0)))
    assert set(config) == {"jax_default_prng_impl", "jax_threefry_partitionable",
                           "jax_enable_x64", "jax_default_matmul_precision"}
    base = provenance.code_hash()
    # each part moves the key on its own
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
    assert provenance.code_hash() != base
    monkeypatch.delenv("XLA_FLAGS")
    with jax.default_matmul_precision("bfloat16"):
        assert provenance.code_record()["jax_config"]["jax_default_matmul_precision"] == "bfloat16"
        assert provenance.code_hash() != base
    with jax.threefry_partitionable(not config["jax_threefry_partitionable"]):
        assert provenance.code_hash() != base
    assert provenance.code_hash() == base


def _fake_version(monkeypatch, name, version):
    real = provenance.library_version
    monkeypatch.setattr(provenance, "library_version",
                        lambda lib: version if lib == name else real(lib))


@pytest.mark.parametrize("change", ["optax_version", "xla_flags"])
def test_library_or_flag_change_makes_a_new_result_folder(reference, tmp_path, monkeypatch,
                                                           change):
    root = tmp_path / "results"
    shutil.copytree(reference.path.parent.parent, root)
    cfg = _cfg(root)
    old = sweep.sweep_dir(cfg) / reference.path.name
    assert run_sweep(cfg, LINEAR, quiet=True).path == old  # unchanged: reused
    if change == "optax_version":
        _fake_version(monkeypatch, "optax", "0.0.1-fake")
    else:
        monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    fresh = run_sweep(cfg, LINEAR, quiet=True)
    assert fresh.path.parent == old.parent and fresh.path != old and not fresh.resumed
    record = json.loads(fresh.dataset.attrs["provenance"])
    if change == "optax_version":
        assert record["libraries"]["optax"] == "0.0.1-fake"
    else:
        assert record["xla_flags"] == "--xla_cpu_multi_thread_eigen=false"
    assert json.loads((fresh.path / "provenance.json").read_text())["code_hash"] == fresh.path.name


def test_result_folder_is_keyed_by_config_and_code(reference, tmp_path, monkeypatch):
    out = reference.path
    assert out.parent == sweep.sweep_dir(_cfg(out.parent.parent))
    assert out.name == provenance.code_hash() == reference.dataset.attrs["code_hash"]
    assert (out / "provenance.json").exists()
    # Same config, same code: the finished result is reused (no training, no compile).
    again = run_sweep(_cfg(out.parent.parent), LINEAR, quiet=True)
    assert again.path == out and again.resumed and again.compiles == 0
    _assert_same(again.dataset, reference.dataset)
    # Same config, other code: a fresh folder, trained again; the old one is untouched.
    _with_code(monkeypatch, "a-model-line-changed")
    fresh = run_sweep(_cfg(out.parent.parent), LINEAR, quiet=True)
    assert fresh.path.parent == out.parent and fresh.path != out
    assert not fresh.resumed and fresh.dataset.attrs["resumed_stale_from"] == ""
    record = json.loads((fresh.path / "provenance.json").read_text())
    assert record["source_sha256"] == "a-model-line-changed"


def test_resume_stale_is_explicit_and_recorded(tmp_path, monkeypatch, reference):
    _with_code(monkeypatch, "old-code")
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        with pytest.raises(Interrupt):
            run_sweep(_cfg(tmp_path), LINEAR, quiet=True)
    (old,) = [p for p in sweep.sweep_dir(_cfg(tmp_path)).iterdir()]
    _with_code(monkeypatch, "new-code")
    out = run_sweep(_cfg(tmp_path), LINEAR, quiet=True, resume_stale=True)
    assert out.path == old and out.resumed
    assert out.dataset.attrs["resumed_stale_from"] == old.name
    _assert_same(out.dataset, reference.dataset)  # the code change was cosmetic


def test_interrupted_then_resumed_adds_up_legs(tmp_path, monkeypatch, reference):
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        with pytest.raises(Interrupt):
            run_sweep(_cfg(tmp_path), LINEAR, quiet=True)
    out = run_sweep(_cfg(tmp_path), LINEAR, quiet=True)
    assert out.resumed and out.dataset.attrs["legs"] == 2
    assert out.dataset.attrs["wall_time_s"] >= out.wall_time
    _assert_same(out.dataset, reference.dataset)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "wrong_leaf"])
def test_corrupt_checkpoint_is_recomputed_not_loaded(tmp_path, monkeypatch, reference, damage):
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        with pytest.raises(Interrupt):
            run_sweep(_cfg(tmp_path), LINEAR, quiet=True)
    (ckpt,) = sweep.sweep_dir(_cfg(tmp_path)).glob("*/group-000.ckpt.p0.npz")
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "flip_byte":
        raw = store.load_npz(ckpt)
        manifest = json.loads(bytes(raw["__manifest__"]).decode())
        name = next(k for k in manifest["arrays"] if "weights" in k)
        key = manifest["arrays"][name]["key"]
        raw[key] = raw[key] + 1.0  # a silently altered array, manifest unchanged
        store.save_npz(ckpt, raw)
    else:  # a checkpoint of another layout: right checksums, unknown pytree paths
        arrays, meta = store.load_checked(ckpt)
        store.save_checked(ckpt, {k.replace("weights", "w"): v for k, v in arrays.items()}, meta)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run_sweep(_cfg(tmp_path), LINEAR, quiet=True)
    assert any(issubclass(w.category, CorruptCheckpointWarning) for w in caught)
    _assert_same(out.dataset, reference.dataset)


def test_corrupt_finished_group_is_recomputed(tmp_path, reference):
    first = run_sweep(_cfg(tmp_path), LINEAR, quiet=True)
    done = first.path / "group-000.p0.npz"
    done.write_bytes(b"PK\x03\x04 not a zip any more")
    (first.path / "result.nc").unlink()
    with pytest.warns(CorruptCheckpointWarning):
        out = run_sweep(_cfg(tmp_path), LINEAR, quiet=True)
    _assert_same(out.dataset, reference.dataset)


def test_checkpoint_restores_by_path_not_position():
    state = {"b": jnp.arange(6.0).reshape(2, 3), "a": {"k": jax.random.split(jax.random.key(1), 2),
                                                       "x": jnp.ones((2,), jnp.int32)}}
    saved = sweep._flatten_state(state)
    assert set(saved) == {"['b']", "['a']['k']#key_data", "['a']['x']"}
    shuffled = dict(reversed(list(saved.items())))
    mesh = sweep.run_mesh()
    back = sweep._restore_state(state, shuffled, mesh, 2)
    np.testing.assert_array_equal(back["b"], state["b"])
    np.testing.assert_array_equal(jax.random.key_data(back["a"]["k"]),
                                  jax.random.key_data(state["a"]["k"]))
    with pytest.raises(store.CorruptFileError):
        sweep._restore_state(state, {k: v for k, v in saved.items() if k != "['b']"}, mesh, 2)
    with pytest.raises(store.CorruptFileError):
        other = np.float16 if saved["['b']"].dtype != np.float16 else np.float32  # another dtype
        sweep._restore_state(state, {**saved, "['b']": saved["['b']"].astype(other)}, mesh, 2)


def test_second_process_on_the_same_folder_is_refused(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    cfg = _cfg(tmp_path / "out")
    folder = sweep.sweep_dir(cfg) / provenance.code_hash()
    with store.sweep_lock(folder, ".lock.p0"):
        with pytest.raises(store.SweepLocked):
            run_sweep(cfg, LINEAR, quiet=True)
        code = cli.main(["run", str(path), "--quiet", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another iclsim process" in err[0]
    assert not list(folder.glob("*.npz")) and not list(folder.glob("result*"))


def test_checked_file_detects_tampering(tmp_path):
    path = tmp_path / "x.npz"
    store.save_checked(path, {"w": np.arange(4.0)}, {"n": 1})
    arrays, meta = store.load_checked(path)
    np.testing.assert_array_equal(arrays["w"], np.arange(4.0))
    assert meta == {"n": 1}
    raw = store.load_npz(path)
    raw["a0"] = raw["a0"][::-1].copy()
    store.save_npz(path, raw)
    with pytest.raises(store.CorruptFileError):
        store.load_checked(path)
    path.write_bytes(b"")
    with pytest.raises(store.CorruptFileError):
        store.load_checked(path)
