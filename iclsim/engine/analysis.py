"""The analysis layer shared by every setting: what a table or figure reads off a result.

A stored sweep result is an xarray Dataset on the setting's run axes.  The pieces here
are the same in every setting, so they live once, here, and a setting's own analysis
keeps only what is specific to its maths:

* :func:`first_cell` / :func:`first_coords` — a variable at the first value of the axes a figure does not show
  (learning rate, init scale, σ₀², N: the run settings printed in the figure's footer);
* :func:`seed_mean_error` / :func:`seed_mean` — the one error bar of a seed-mean:
  seed variance and Monte Carlo error combined, the caller stating whether the seeds
  share their evaluation prompts (``docs/engine.md``, "The analysis layer");
* :func:`best_scale_along` / :func:`best_scale_at` — the engine's
  :func:`iclsim.engine.setting.best_scale` along one noise axis or at one point;
* :func:`verdict_counts` / :func:`verdict_text` — how often each verdict occurs;
* :func:`sweep_line` — the closing line of a summary (hash, compiles, wall time, device).

Nothing here imports a setting.
"""

from __future__ import annotations

import numpy as np

from iclsim.engine.setting import best_scale

__all__ = ["first_cell", "first_coords", "PROMPTS", "seed_mean_error", "seed_mean", "best_scale_along", "best_scale_at",
           "verdict_counts", "verdict_text", "sweep_line"]


def first_cell(ds, var, axes):
    """``ds[var]`` (or the DataArray ``ds`` when ``var`` is None) at the first value of each
    of ``axes`` that is one of its dims (the others are left as they are)."""
    da = ds if var is None else ds[var]
    return da.isel({k: 0 for k in axes if k in da.dims})


def first_coords(ds, axes) -> dict:
    """``{axis: its first value}`` for each of ``axes`` (the ``sel`` of :func:`first_cell`)."""
    return {k: ds[k].values[0] for k in axes}


#: How the seeds' Monte Carlo errors relate (:func:`seed_mean_error`): ``"shared"`` when every
#: seed is evaluated on the same prompts (settings 1-3: one evaluation key per sweep),
#: ``"independent"`` when each seed draws its own (e.g. each run's own training stream).
PROMPTS = ("shared", "independent")


def seed_mean_error(values, se=None, axis=-1, *, prompts):
    """The error (standard error) of the mean over seeds of per-seed estimates.

    ``values[..., i]`` is seed i's estimate, ``se[..., i]`` its Monte Carlo standard error
    (None, or 0, when the evaluation is exact).  NaN entries of ``values`` (diverged runs)
    are left out, and so are their SEs.  With n finite seeds and s²_seeds the sample
    variance (ddof = 1) of their estimates::

        prompts="shared":       err = sqrt( s²_seeds / n + mean_i(SE_i²) )
        prompts="independent":  err = sqrt( s²_seeds / n + mean_i(SE_i²) / n )

    Seed i's estimate is x_i = θ_i + ε_i (θ_i its true value, variance τ² over seeds; ε_i
    the Monte Carlo error, variance σ_i²), so Var(x̄) = τ²/n + Var(ε̄).  Independent
    prompts: Var(ε̄) = mean σ_i²/n.  Shared prompts move the ε_i together, and Var(ε̄) ≤
    (mean σ_i)² ≤ mean σ_i² whatever their correlation (equality when the error is common
    to all seeds), while E[s²] ≥ τ²: the shared bar is never too narrow in expectation.
    One seed: the seed term is 0 (it cannot be estimated) and the bar is the Monte Carlo
    error alone; no seed: NaN.  ``prompts`` has no default: the caller states how its
    seeds were evaluated (docs/engine.md, "The analysis layer").  Returns an array over
    the remaining axes.
    """
    if prompts not in PROMPTS:
        raise ValueError(f"prompts must be one of {PROMPTS}, got {prompts!r}")
    values = np.asarray(values, float)
    shape = values.shape
    values = np.moveaxis(values, axis, -1)
    ok = np.isfinite(values)
    n = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.nansum(np.where(ok, values, 0.0), axis=-1) / np.maximum(n, 1),
                        np.nan)
        dev = np.where(ok, values - mean[..., None], 0.0)
        s2 = np.where(n > 1, np.sum(dev ** 2, axis=-1) / np.maximum(n - 1, 1), 0.0)
        if se is None:
            mc2 = np.zeros_like(s2)
        else:
            se = np.moveaxis(np.broadcast_to(np.asarray(se, float), shape), axis, -1)
            mc2 = np.sum(np.where(ok, se ** 2, 0.0), axis=-1) / np.maximum(n, 1)
        if prompts == "independent":
            mc2 = mc2 / np.maximum(n, 1)
        err = np.sqrt(s2 / np.maximum(n, 1) + mc2)
    return np.where(n > 0, err, np.nan)


def seed_mean(values, se=None, *, prompts, dim="seed", ok=None):
    """Seed-mean and its error (:func:`seed_mean_error`, same ``prompts``) of xarray
    ``values`` over ``dim``.

    ``ok`` (broadcast against ``values``) masks the runs to keep (e.g. ``~diverged``);
    ``se`` is the per-run Monte Carlo SE on the same axes (None when exact).  Returns
    ``(mean, err)``, two DataArrays without ``dim``.
    """
    import xarray as xr

    if ok is not None:
        values = values.where(ok)
    mean = values.mean(dim)
    args = [values] + ([] if se is None else [se.broadcast_like(values)])

    def _err(v, *s):
        return seed_mean_error(v, s[0] if s else None, axis=-1, prompts=prompts)

    err = xr.apply_ufunc(_err, *args, input_core_dims=[[dim]] * len(args),
                         output_dtypes=[float])
    return mean, err.transpose(*mean.dims)


def best_scale_along(ds, dim, other, *, other_index=0, **fixed):
    """Simulated best scale (:func:`iclsim.engine.setting.best_scale`) per level of the noise
    axis ``dim``, at the ``other_index``-th level of the other noise axis ``other`` and at
    the coordinates ``fixed``; a 1-D numpy array (NaN where every run diverged)."""
    return best_scale(ds, **fixed, **{other: ds[other].values[other_index]}).transpose(
        dim).values


def best_scale_at(ds, var="eval_risk", **sel) -> int:
    """Simulated best scale at one point (every remaining axis fixed by ``sel``); -1 when
    every run diverged."""
    best = float(best_scale(ds, var, **sel))
    return int(best) if np.isfinite(best) else -1


def verdict_counts(names) -> dict:
    """``{verdict: count}`` in the order of first occurrence."""
    names = [str(v) for v in np.asarray(names, dtype=object).ravel()]
    return {v: names.count(v) for v in dict.fromkeys(names)}


def verdict_text(names) -> str:
    """``optimum_reached x3, not_converged x1`` (order of first occurrence)."""
    return ", ".join(f"{k} x{c}" for k, c in verdict_counts(names).items())


def sweep_line(ds, default_setting: str) -> str:
    """The closing line of a summary: setting, config hash, compiles, wall time, devices."""
    attrs = ds.attrs
    return (f"{attrs.get('setting', default_setting)} sweep {attrs.get('config_hash', '')}: "
            f"{attrs.get('compiles', '?')} compile(s), "
            f"{float(attrs.get('wall_time_s', 0)):.1f} s "
            f"on {attrs.get('device_count', '?')} x {attrs.get('device_kind', '?')}")
