"""Run a trainer on a batch of runs from Python, with optional progress.

``linear.train`` and ``parity.train`` (and research code) call :func:`train_runs`:
one compiled program trains every run (``jit(vmap(trainer.train))``).  With
``progress=True`` the same steps run as a host loop over chunks
(``trainer.run``), advancing a progress bar on stderr between chunks.  The two are
different XLA programs, so they agree to rounding (~1e-17 after a step in float64),
not bitwise; a float32 L-BFGS finish can amplify that difference on ill-conditioned
problems.  (The sweep engine's bitwise resume compares the same chunk programs.)
"""

from __future__ import annotations

import functools

import jax
import numpy as np

__all__ = ["train_runs", "runs_dataset"]


@functools.lru_cache(maxsize=64)
def _whole(trainer):
    return jax.jit(jax.vmap(trainer.train, in_axes=(0, 0, None)))


@functools.lru_cache(maxsize=64)
def _pieces(trainer, n_steps: int):
    from iclsim.engine.sweep import strong_init

    init = jax.jit(jax.vmap(strong_init(trainer.init), in_axes=(0, 0, None)))
    run = jax.jit(jax.vmap(lambda s, h, d: trainer.run(s, h, d, n_steps), in_axes=(0, 0, None)))
    final = jax.jit(jax.vmap(trainer.averaged_params))
    return init, run, final


def train_runs(trainer, keys, hyper, data, *, progress: bool = False, chunks: int = 20,
               desc: str = "training"):
    """(params, {"loss": (runs, steps)}) of every run; ``progress`` shows a bar per chunk."""
    if not progress:
        return _whole(trainer)(keys, hyper, data)
    from tqdm.auto import tqdm

    steps = trainer.steps
    size = max(1, -(-steps // max(1, chunks)))
    sizes = [size] * (steps // size) + ([steps % size] if steps % size else [])
    runs = int(np.shape(jax.tree_util.tree_leaves(hyper)[0])[0])
    state = _pieces(trainer, sizes[0])[0](keys, hyper, data)
    losses = []
    with tqdm(total=steps * runs, unit="run-step", unit_scale=True, desc=desc,
              dynamic_ncols=True) as bar:
        for n in sizes:
            state, loss = _pieces(trainer, n)[1](state, hyper, data)
            losses.append(loss)
            jax.block_until_ready(loss)
            bar.update(n * runs)
    params = _pieces(trainer, sizes[0])[2](state)
    return params, {"loss": jax.numpy.concatenate(losses, axis=1)}


def runs_dataset(scale_name: str, run_scale, run_seed, per_run: dict, *,
                 trailing_dims: dict | None = None, coords: dict | None = None,
                 attrs: dict | None = None):
    """An ``xarray.Dataset`` of per-run arrays labelled by (scale, seed) instead of a flat run axis.

    ``run_scale`` and ``run_seed`` are the (runs,) scale and seed of each run, scale-major as
    :func:`train_runs` lays them out (run = i_scale·seeds + seed).  Each value of ``per_run``
    has a leading run axis (a list of strings counts as a (runs,) array); its trailing axes
    are named by ``trailing_dims[name]`` (default ``name_dim0``, …).  ``coords`` are added as
    they are (e.g. a ladder ``L_0..L_d`` on its own dimension).  A run layout that is not
    scale-major over a full (scale, seed) grid raises ``ValueError``.
    """
    import xarray as xr

    run_scale, run_seed = np.asarray(run_scale), np.asarray(run_seed)
    scales = np.asarray(list(dict.fromkeys(run_scale.tolist())))
    seeds = np.arange(int(run_seed.max()) + 1) if run_seed.size else np.arange(0)
    expected_scale = np.repeat(scales, len(seeds))
    expected_seed = np.tile(seeds, len(scales))
    if not (np.array_equal(run_scale, expected_scale) and np.array_equal(run_seed, expected_seed)):
        raise ValueError(f"runs are not {scale_name}-major over a full ({scale_name}, seed) grid")
    trailing_dims = trailing_dims or {}
    variables = {}
    for name, value in per_run.items():
        arr = np.asarray(value)
        if arr.shape[:1] != run_scale.shape:
            raise ValueError(f"{name}: leading axis {arr.shape[:1]} is not the run axis "
                             f"{run_scale.shape}")
        rest = arr.shape[1:]
        dims = tuple(trailing_dims.get(name, [f"{name}_dim{i}" for i in range(len(rest))]))
        variables[name] = ((scale_name, "seed", *dims),
                           arr.reshape(len(scales), len(seeds), *rest))
    return xr.Dataset(variables, coords={scale_name: scales, "seed": seeds, **(coords or {})},
                      attrs=attrs or {})
