"""Sweep execution: grouped, sharded, chunked, resumable.

A *setting* (:class:`iclsim.engine.setting.Setting`: ``iclsim.linear.sweep.LINEAR``,
…) declares its axes, model, assessment and oracle; :mod:`iclsim.engine.setting`
turns a config into :class:`Group` s — runs that share one static shape — and the
assessed runs into the labelled dataset.  This module runs them:

* one compiled program per static shape: the jitted, vmapped ``init`` and
  chunk ``run`` functions are cached by (static, chunk length, mesh), so a second
  group of the same shape reuses them (``compiles`` counts traces);
* the run axis is sharded over all devices (``jax.sharding``: a 1-D mesh named
  ``runs``, no collectives); groups are padded to a multiple of the device count;
* steps run in chunks of ``chunk_steps``; after each chunk the state and the
  loss curve so far are checkpointed atomically, and a progress bar (tqdm, on
  stderr) is advanced from the host loop;
* results are keyed by (config, code): the folder is
  ``<output_dir>/<name>-<config hash>/<code hash>/`` where the code hash covers
  the iclsim source, its version, JAX and the backend (:mod:`iclsim.engine.provenance`);
  nothing made by other code is reused unless ``resume_stale=True`` says so, and
  then the result records it;
* ``run_sweep`` on the same config and code after an interruption — ``kill -9``
  included — resumes from the last checkpoint and gives bitwise the results of
  an uninterrupted run (same chunk programs on the same inputs).  Checkpoints are
  keyed by pytree path with a sha256 per array (:func:`store.save_checked`); a
  truncated or altered one is recomputed, never loaded.  A lock on the folder
  keeps a second process off it; wall time and compiles add up over all legs;
* multi-host: call :func:`jax.distributed.initialize` first (``iclsim run
  --distributed``); every host runs this same function, holds the runs of its
  own devices and writes only its own files (``*.p<process>.*``).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import iclsim
from iclsim.engine import provenance, store
from iclsim.engine.precision import precision_scope
from iclsim.engine.config import config_hash, keyed_dict, to_dict, training_hash
from iclsim.engine.setting import (
    Group, Setting, build_dataset, build_groups, check_setting, describe_run, evaluate_group,
    finalize_group, is_evaluation, pad_group,
)
from iclsim.engine.trainer import trace_count

__all__ = [
    "Group", "Setting", "SweepOutcome", "run_sweep", "sweep_dir", "run_mesh", "pad_group",
    "DivergedRunWarning", "CorruptCheckpointWarning", "trained_dir",
]



class CorruptCheckpointWarning(UserWarning):
    """A checkpoint or finished-group file failed its checksum; it is recomputed, not loaded."""


class DivergedRunWarning(UserWarning):
    """Some runs of a sweep produced NaN or inf; they are flagged and left out of aggregates."""


@dataclass
class SweepOutcome:
    path: Path
    dataset: Any
    compiles: int
    wall_time: float
    resumed: bool
    figures: list
    figure_error: str = ""
    """Why figures were not drawn (the result is stored regardless); empty when they were."""


def run_mesh(devices=None) -> Mesh:
    """1-D mesh over all (global) devices, axis name ``runs``."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("runs",))


def sweep_dir(cfg) -> Path:
    """The config folder ``<output_dir>/<name>-<config hash>``; results live one level
    below it, in one folder per code version (``provenance.code_hash``)."""
    return Path(cfg.output_dir) / f"{cfg.name}-{config_hash(cfg)}"


def trained_dir(cfg, code: str) -> Path:
    """The folder of the trained parameters of ``cfg`` made by code ``code``:
    ``<output_dir>/.trained/<training hash>/<code hash>/``.  The training hash leaves out
    the evaluation keys (``[eval]``) and the ``key=False`` keys, so sweeps that differ only
    in how they evaluate share one set of trained parameters (one file per group)."""
    return Path(cfg.output_dir) / ".trained" / training_hash(cfg) / code


def _git_commit() -> str:
    here = Path(iclsim.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def strong_init(init):
    """``init`` with every leaf of the state strongly typed.

    Some optax states start with weakly typed scalars (e.g. L-BFGS's line-search info)
    that come back strongly typed from the first chunk; without this the second chunk
    (or a state restored from a checkpoint) would be traced and compiled again.
    """

    def wrapped(*args):
        return jax.tree_util.tree_map(
            lambda x: jax.lax.convert_element_type(x, x.dtype)
            if getattr(x, "weak_type", False) else x, init(*args))

    return wrapped


@functools.lru_cache(maxsize=32)
def _compiled(trainer_fn, static, n_steps: int, mesh: Mesh):
    """jit(vmap(init)) and jit(vmap(run n_steps)), sharded over the run axis; cached."""
    trainer = trainer_fn(static)
    rows = NamedSharding(mesh, P("runs"))
    init = jax.jit(jax.vmap(strong_init(trainer.init), in_axes=(0, 0, None)), out_shardings=rows)

    def chunk(state, hyper, data):
        return trainer.run(state, hyper, data, n_steps)

    run = jax.jit(jax.vmap(chunk, in_axes=(0, 0, None)), out_shardings=rows)
    final = jax.jit(jax.vmap(trainer.averaged_params), out_shardings=rows)
    return init, run, final


def _global(mesh, local: np.ndarray, global_rows: int):
    """A run-sharded global array from this process's rows."""
    sharding = NamedSharding(mesh, P("runs"))
    if jax.process_count() == 1:
        return jax.device_put(local, sharding)
    return jax.make_array_from_process_local_data(
        sharding, local, (global_rows,) + local.shape[1:]
    )


def _local_slice(n_rows: int, mesh: Mesh) -> slice:
    """Rows of the run axis held by this process's devices (contiguous)."""
    n_dev = mesh.devices.size
    per = n_rows // n_dev
    mine = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
    return slice(min(mine) * per, (max(mine) + 1) * per)


def _local_rows(arr) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(arr)
    parts = {}
    for shard in arr.addressable_shards:
        start = shard.index[0].start or 0
        parts.setdefault(start, np.asarray(shard.data))
    return np.concatenate([parts[k] for k in sorted(parts)])


def _key_name(path) -> str:
    return jax.tree_util.keystr(path)


def _flatten_state(state) -> dict:
    """This process's rows of every state leaf, keyed by pytree path (PRNG keys as key data)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            out[_key_name(path) + "#key_data"] = _local_rows(jax.random.key_data(leaf))
        else:
            out[_key_name(path)] = _local_rows(leaf)
    return out


def _restore_state(template, saved: dict, mesh, global_rows):
    """The state ``template`` with every leaf replaced by the saved leaf of the same path.

    A missing path, or a leaf of another shape or dtype, raises
    :class:`store.CorruptFileError` (the checkpoint is then recomputed, never loaded).
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    local_rows = _local_slice(global_rows, mesh)
    n_local = local_rows.stop - local_rows.start
    restored = []
    for path, leaf in flat:
        is_key = jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        name = _key_name(path) + ("#key_data" if is_key else "")
        want = jax.random.key_data(leaf) if is_key else leaf
        arr = saved.get(name)
        if arr is None or arr.shape != (n_local,) + tuple(want.shape[1:]) or arr.dtype != want.dtype:
            raise store.CorruptFileError(f"checkpoint leaf {name} is missing or of another "
                                         "shape/dtype")
        data = _global(mesh, arr, global_rows)
        restored.append(jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
                        if is_key else data)
    return jax.tree_util.tree_unflatten(treedef, [r for r in restored])


def _chunks(steps: int, chunk_steps: int) -> list[int]:
    chunk_steps = min(chunk_steps, steps)
    sizes = [chunk_steps] * (steps // chunk_steps)
    if steps % chunk_steps:
        sizes.append(steps % chunk_steps)
    return sizes


@contextlib.contextmanager
def _heartbeat(bar, text: str, every: float = 1.0):
    """Show ``text`` on the progress bar and keep its clock ticking while a long blocking
    step (evaluation) runs, so the bar never sits silent at 100 %."""
    if bar is None or bar.disable:
        yield
        return
    bar.set_description(text)
    done = threading.Event()

    def tick():
        while not done.wait(every):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _progress(total, quiet, unit="run-step"):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, unit=unit, unit_scale=True, disable=quiet, dynamic_ncols=True,
                smoothing=0.1)


def _stale_folder(config_folder: Path, code: str) -> Path | None:
    """The most recently touched folder of this config made by other code (for --resume-stale)."""
    others = [p for p in config_folder.iterdir() if p.is_dir() and p.name != code
              and (p / "provenance.json").exists()] if config_folder.exists() else []
    return max(others, key=lambda p: p.stat().st_mtime, default=None)


def _load_group_file(path: Path, what: str):
    """Arrays of a checked group/checkpoint file, or None (with a warning) if it is corrupt."""
    try:
        return store.load_checked(path)
    except store.CorruptFileError as exc:
        warnings.warn(f"{exc}; the {what} is recomputed", CorruptCheckpointWarning, stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def run_sweep(cfg, setting: Setting, *, quiet: bool = False, devices=None,
              resume_stale: bool = False) -> SweepOutcome:
    """Run (or resume) the sweep ``cfg`` and return its stored, labelled result.

    The result folder is keyed by (config, code): ``sweep_dir(cfg) / code_hash()``.
    A folder is resumed only when both keys match; ``resume_stale=True`` resumes
    the newest folder of the same config made by other code instead, and records
    that in the result (``resumed_stale_from``).
    """
    start = time.perf_counter()
    check_setting(setting)  # a setting run without registering it: its declaration, once
    setting.check(cfg)  # missing files etc.: one line, before anything is written
    record = provenance.code_record()
    setting_record = setting.provenance(cfg)
    if setting_record:
        # what else made the numbers (library versions, model files' sha256): part of the key
        record = {**record, "setting_provenance": setting_record}
    code = provenance.code_hash(record)
    config_folder = sweep_dir(cfg)
    out = config_folder / code
    stale_from = None
    if resume_stale and not out.exists():
        stale = _stale_folder(config_folder, code)
        if stale is not None:
            out, stale_from = stale, stale.name
    pid = jax.process_index()
    suffix = f"p{pid}"
    fresh = not out.exists() and not config_folder.exists()
    with store.sweep_lock(out, f".lock.{suffix}"), precision_scope(cfg.precision):
        traces_before = trace_count()
        try:
            return _run_locked(cfg, setting, out, record, code, stale_from, start, quiet=quiet,
                               devices=devices)
        except ValueError:
            # a bad input found only once the work started (e.g. a model folder that does not
            # load): a fresh folder with no finished group is removed, so nothing is left
            # half-written; otherwise the finished groups stay for the rerun
            if fresh and jax.process_count() == 1 and not any(out.glob("group-*.npz")):
                import shutil

                shutil.rmtree(config_folder, ignore_errors=True)
            elif (out / "config.json").exists():
                _append_leg(out, suffix, start, trace_count() - traces_before, code,
                            interrupted=True)
            raise
        except BaseException:  # interrupted or failed: the leg still counts (wall, compiles)
            if (out / "config.json").exists():
                _append_leg(out, suffix, start, trace_count() - traces_before, code,
                            interrupted=True)
            raise


def _append_leg(out: Path, suffix: str, start: float, compiles: int, code: str,
                interrupted: bool = False) -> list[dict]:
    """Record one leg (one process lifetime) of a sweep; return all legs so far."""
    legs_file = out / f"legs.{suffix}.json"
    legs = json.loads(legs_file.read_text()) if legs_file.exists() else []
    legs.append({"wall_time_s": time.perf_counter() - start, "compiles": compiles,
                 "code_hash": code, "interrupted": interrupted, "ended_utc": _now()})
    store.atomic_write_json(legs_file, legs)
    return legs


def _run_locked(cfg, setting, out: Path, record, code, stale_from, start, *, quiet, devices):
    pid = jax.process_index()
    suffix = f"p{pid}"
    # Temporary files left by an interrupted write (this process holds the folder's lock).
    for stray in out.glob(".*.tmp" if jax.process_count() == 1 else f".*.{suffix}.*.tmp"):
        stray.unlink(missing_ok=True)
    resolved = to_dict(cfg)
    cfg_file = out / "config.json"
    if cfg_file.exists():
        # compare what the hash covers; key=False keys (description, …) may differ
        previous = keyed_dict(json.loads(cfg_file.read_text()), cls=type(cfg))
        if previous != keyed_dict(cfg):
            raise RuntimeError(f"{cfg_file}: a different config is stored under this hash")
        if pid == 0 and json.loads(cfg_file.read_text()) != resolved:
            # the key=False keys of this leg (description, figure formats, …)
            store.atomic_write_json(cfg_file, resolved)
    elif pid == 0:
        store.atomic_write_json(cfg_file, resolved)
        store.atomic_write_json(out / "provenance.json", {**record, "code_hash": code,
                                                          "config_hash": config_hash(cfg)})

    traces_before = trace_count()
    if is_evaluation(setting):
        finals_by_group, resumed = _evaluate_groups(cfg, setting, out, suffix, code, quiet)
    else:
        # the trained parameters of the code that made this folder (the stale one's with
        # --resume-stale: out.name is its code hash)
        finals_by_group, resumed = _train_groups(cfg, setting, out, suffix, code, quiet,
                                                 devices, train_code=out.name)
    return _finish(cfg, setting, out, suffix, code, record, resolved, stale_from, start,
                   traces_before, finals_by_group, resumed)


def _finished_group(done_file: Path, group, bar):
    """The arrays of an already finished group (its checked file), advancing the progress
    bar past it; None when it has to be computed (no file, or a corrupt one)."""
    if not done_file.exists():
        return None
    loaded = _load_group_file(done_file, f"group {group.index}")
    if loaded is None:
        return None
    if bar is not None:
        bar.update(int((group.run_id >= 0).sum()) * group.static.steps)
    return loaded[0]


def _evaluate_groups(cfg, setting, out: Path, suffix: str, code: str, quiet: bool):
    """Evaluate every group of an evaluation setting (no training, no devices): one checked
    file per finished group, so an interrupted sweep resumes at the first unfinished one."""
    groups = build_groups(cfg, setting)
    total = sum(int((g.run_id >= 0).sum()) * g.static.steps for g in groups)
    bar = _progress(total, quiet, setting.progress_unit)
    finals_by_group, resumed = [], False
    for gi, group in enumerate(groups):
        done_file = out / f"group-{group.index:03d}.{suffix}.npz"
        finished = _finished_group(done_file, group, bar)
        if finished is not None:
            finals_by_group.append(finished)
            resumed = True
            continue
        first = int(group.run_id[group.run_id >= 0][0])
        with _heartbeat(bar, f"{gi + 1}/{len(groups)} {describe_run(cfg, setting, first)}"):
            finals = evaluate_group(cfg, setting, group, (lambda n: bar.update(n))
                                    if bar is not None else (lambda n: None))
        store.save_checked(done_file, finals, {"code_hash": code})
        finals_by_group.append(finals)
    if bar is not None:
        bar.close()
    return finals_by_group, resumed


def _train_groups(cfg, setting, out: Path, suffix: str, code: str, quiet: bool, devices,
                  train_code: str | None = None):
    """Train and assess every group of a trained setting (chunked, checkpointed, sharded).

    The trained parameters of each group are stored under the training key
    (:func:`trained_dir` of ``train_code``, the code that made ``out``); a group whose
    parameters are there already (a sweep that differs only in evaluation keys) is only
    evaluated."""
    mesh = run_mesh(devices)
    n_dev = mesh.devices.size
    groups = [pad_group(g, -(-len(g.run_id) // n_dev) * n_dev) for g in build_groups(cfg, setting)]
    resumed = False
    trained = trained_dir(cfg, train_code or code)
    total = sum(int((g.run_id >= 0).sum()) * g.static.steps for g in groups)
    bar = _progress(total, quiet)
    finals_by_group = []

    for gi, group in enumerate(groups):
        done_file = out / f"group-{group.index:03d}.{suffix}.npz"
        ckpt_file = out / f"group-{group.index:03d}.ckpt.{suffix}.npz"
        valid = int((group.run_id >= 0).sum())
        finished = _finished_group(done_file, group, bar)
        if finished is not None:
            finals_by_group.append(finished)
            resumed = True
            continue
        steps = group.static.steps
        sizes = _chunks(steps, cfg.train.chunk_steps)
        rows = len(group.run_id)
        local = _local_slice(rows, mesh)
        run_id = group.run_id[local]
        keep = run_id >= 0
        rows_kept = np.flatnonzero(keep) + local.start
        params_file = trained / f"group-{group.index:03d}.{suffix}.npz"
        trained_params = _load_trained(params_file, cfg, group, run_id[keep], mesh, setting) \
            if params_file.exists() else None
        if trained_params is not None:
            # trained by a sweep that differs only in evaluation keys: evaluate, never retrain
            params, loss_kept = trained_params
            resumed = True
            if bar is not None:
                bar.update(valid * steps)
            with _heartbeat(bar, f"group {gi + 1}/{len(groups)}: evaluating {int(keep.sum())} "
                            "runs (trained parameters reused)"):
                finals = finalize_group(cfg, setting, group, rows_kept, params, loss_kept)
            store.save_checked(done_file, finals, {"code_hash": code})
            finals_by_group.append(finals)
            continue
        data = setting.data(cfg, group.static)
        root = jax.random.key(cfg.seed)
        keys_np = np.asarray(jax.random.key_data(jax.vmap(lambda s: jax.random.fold_in(root, s))(
            jnp.asarray(group.seed))))
        keys = jax.random.wrap_key_data(_global(mesh, keys_np[local], rows))
        hyper = {k: _global(mesh, np.asarray(v)[local], rows) for k, v in group.hyper.items()}
        first = sizes[0]  # the chunk length init/final are compiled with (cache key)
        init_fn = _compiled(setting.trainer, group.static, first, mesh)[0]
        state = init_fn(keys, hyper, data)
        losses, done_chunks = [], 0
        loaded = _load_group_file(ckpt_file, f"checkpoint of group {group.index}") \
            if ckpt_file.exists() else None
        if loaded is not None:
            saved, meta = loaded
            try:
                restored = _restore_state(state, saved, mesh, rows)
            except store.CorruptFileError as exc:
                warnings.warn(f"{ckpt_file}: {exc}; the group is recomputed",
                              CorruptCheckpointWarning, stacklevel=2)
                ckpt_file.unlink(missing_ok=True)
            else:
                state = restored
                # train.chunk_steps is not in the config hash: the checkpoint may have been
                # cut into other chunks, so resume from the steps done (its loss columns)
                steps_done = int(meta.get("steps_done", saved["loss"].shape[1]))
                sizes = [steps_done] + _chunks(steps - steps_done, cfg.train.chunk_steps) \
                    if steps_done < steps else [steps_done]
                done_chunks = 1
                losses = [saved["loss"]] if saved["loss"].size else []
                resumed = True
                if bar is not None:
                    bar.update(valid * steps_done)
        for ci in range(done_chunks, len(sizes)):
            if bar is not None:
                bar.set_description(f"group {gi + 1}/{len(groups)} chunk {ci + 1}/{len(sizes)}")
            run_fn = _compiled(setting.trainer, group.static, sizes[ci], mesh)[1]
            state, chunk_loss = run_fn(state, hyper, data)
            losses.append(_local_rows(chunk_loss))
            payload = _flatten_state(state)
            payload["loss"] = np.concatenate(losses, axis=1)
            store.save_checked(ckpt_file, payload, {"chunks_done": ci + 1, "code_hash": code,
                                                    "steps_done": int(sum(sizes[:ci + 1]))})
            if bar is not None:
                bar.update(valid * sizes[ci])
        final_fn = _compiled(setting.trainer, group.static, first, mesh)[2]
        params = jax.tree_util.tree_map(_local_rows, final_fn(state))
        loss = np.concatenate(losses, axis=1)
        params = jax.tree_util.tree_map(lambda a: a[keep], params)
        _save_trained(params_file, params, loss[keep], run_id[keep], train_code or code)
        with _heartbeat(bar, f"group {gi + 1}/{len(groups)}: evaluating {int(keep.sum())} runs"):
            finals = finalize_group(cfg, setting, group, rows_kept, params, loss[keep])
        store.save_checked(done_file, finals, {"code_hash": code})
        finals_by_group.append(finals)
        if ckpt_file.exists():
            ckpt_file.unlink()
    if bar is not None:
        bar.close()
    return finals_by_group, resumed


def _save_trained(path: Path, params, loss, run_id, code: str) -> None:
    """Store the trained parameters (by pytree path) and raw loss of this process's valid
    runs of one group, with their run ids (checked, atomic)."""
    arrays = {"#run_id": np.asarray(run_id), "#loss": np.asarray(loss)}
    for leaf_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        arrays[_key_name(leaf_path)] = np.asarray(leaf)
    store.save_checked(path, arrays, {"code_hash": code})


def _load_trained(path: Path, cfg, group, run_id, mesh, setting):
    """(params, raw loss) of a group from :func:`_save_trained`, or None when the file is
    corrupt (warned, removed) or holds other runs (other grouping or devices: retrained)."""
    loaded = _load_group_file(path, f"trained parameters of group {group.index}")
    if loaded is None:
        return None
    saved = loaded[0]
    if not np.array_equal(saved.get("#run_id"), run_id):
        return None
    rows = len(group.run_id)
    first = _chunks(group.static.steps, cfg.train.chunk_steps)[0]
    init_fn, _, final_fn = _compiled(setting.trainer, group.static, first, mesh)
    # the pytree of the parameters, traced not compiled (eval_shape)
    keys = jax.random.split(jax.random.key(0), rows)
    hyper = {k: np.asarray(v) for k, v in group.hyper.items()}
    data = setting.data(cfg, group.static)
    template = jax.eval_shape(lambda k, h, d: final_fn(init_fn(k, h, d)), keys, hyper, data)
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for leaf_path, leaf in flat:
        arr = saved.get(_key_name(leaf_path))
        if arr is None or arr.shape[1:] != tuple(leaf.shape[1:]) or arr.dtype != leaf.dtype \
                or arr.shape[0] != len(run_id):
            warnings.warn(f"{path}: parameter {_key_name(leaf_path)} is missing or of another "
                          "shape/dtype; the group is retrained", CorruptCheckpointWarning,
                          stacklevel=3)
            return None
        leaves.append(arr)
    return jax.tree_util.tree_unflatten(treedef, leaves), saved["#loss"]


def _finish(cfg, setting, out: Path, suffix: str, code: str, record, resolved, stale_from,
            start, traces_before, finals_by_group, resumed) -> SweepOutcome:
    """Merge the group files into the labelled result, store it, draw the figures."""
    pid = jax.process_index()
    merged = _merge(finals_by_group)
    diverged = np.flatnonzero(merged["diverged"])
    if diverged.size:
        names = "; ".join(describe_run(cfg, setting, int(merged["run_id"][i]))
                          for i in diverged[:10])
        more = f" and {diverged.size - 10} more" if diverged.size > 10 else ""
        warnings.warn(
            f"{diverged.size} run(s) diverged (NaN/inf) and are left out of aggregates: {names}{more}",
            DivergedRunWarning, stacklevel=2,
        )
    ds = build_dataset(cfg, setting, merged)
    wall = time.perf_counter() - start
    compiles = trace_count() - traces_before
    legs = _append_leg(out, suffix, start, compiles, code)
    device = jax.devices()[0]
    ds.attrs.update({
        "setting": setting.name,
        "config": json.dumps(resolved, sort_keys=True),
        "config_hash": config_hash(cfg),
        "training_hash": training_hash(cfg) if not is_evaluation(setting) else "",
        "code_hash": code,
        "provenance": json.dumps(record, sort_keys=True),
        "iclsim_version": iclsim.__version__,
        "git_commit": _git_commit(),
        "jax_version": jax.__version__,
        "device_kind": getattr(device, "device_kind", device.platform),
        "platform": device.platform,
        "dtype": str(jnp.result_type(float)),
        "precision": cfg.precision,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "compiles": sum(leg["compiles"] for leg in legs),
        "wall_time_s": sum(leg["wall_time_s"] for leg in legs),
        "legs": len(legs),
        "resumed": int(resumed),
        "resumed_stale_from": stale_from or "",
        "created_utc": _now(),
    })
    name = "result.nc" if jax.process_count() == 1 else f"result.{suffix}.nc"
    store.save_dataset(out / name, ds)
    figures, figure_error = [], ""
    if pid == 0 and jax.process_count() == 1 and cfg.figures.formats:  # none asked: none drawn
        try:
            figures = setting.figures(ds, out, tuple(cfg.figures.formats))
        except Exception as exc:  # a figure bug must not lose or hide the stored result
            figure_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return SweepOutcome(out, ds, compiles, wall, resumed, figures, figure_error)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _merge(parts: list[dict]) -> dict:
    keys = parts[0].keys()
    merged = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    order = np.argsort(merged["run_id"], kind="stable")
    return {k: v[order] for k, v in merged.items()}
