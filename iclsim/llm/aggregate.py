"""Aggregates of an LLM sweep result: means with bootstrap intervals, pooled tasks, sensitivity.

Added to the labelled result by the setting (so they are stored beside the per-query
numbers, and ``iclsim show`` / the figures only read them):

* ``accuracy`` (run axes): the fraction of a run's queries answered correctly;
* ``acc_mean``, ``acc_lo``, ``acc_hi`` (run axes without ``seed``): the mean over seeds
  and queries with a two-stage bootstrap interval (seeds, then queries within each seed;
  :func:`iclsim.llm.stats.bootstrap_ci`); ``margin_mean/lo/hi`` likewise for the
  log-probability margin of the true label word;
* ``pooled_acc_mean/lo/hi`` (also without ``task``): the (task, seed) pairs as the outer
  units, every task weighted equally (same number of queries);
* ``sensitivity_mean/lo/hi`` (without ``seed`` and ``label_flip``): accuracy at p = 0
  minus accuracy at p = ``eval.sensitivity_flip``, paired over the same seeds and queries
  (:func:`iclsim.llm.stats.bootstrap_diff_ci`); ``pooled_sensitivity_*`` over tasks.

Runs that are missing (another host's shard) or diverged (non-finite scores) are left
out of every aggregate.  numpy and xarray only.
"""

from __future__ import annotations

import numpy as np

from iclsim.llm import stats

__all__ = ["add_aggregates"]


def _cells(values: np.ndarray, keep: np.ndarray, level: float, n_boot: int):
    """values (..., units, query), keep (..., units) → mean, lo, hi over the leading dims.

    The seed-level shrinkage of :func:`iclsim.llm.stats.bootstrap_ci` can put a percentile
    just outside the range the mean can take (an accuracy of 1.01); the interval is clipped
    to that range (the values' own minimum and maximum possible: [0, 1] for 0/1 data)."""
    shape = values.shape[:-2]
    mean, lo, hi = (np.full(shape, np.nan) for _ in range(3))
    for idx in np.ndindex(*shape):
        rows = values[idx][keep[idx]]
        if rows.size == 0:
            continue
        mean[idx] = rows.mean()
        lo[idx], hi[idx] = stats.bootstrap_ci(rows, level=level, n_boot=n_boot, seed=0)
    if np.isin(values[np.isfinite(values)], (0.0, 1.0)).all():  # accuracies
        lo, hi = np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
    return mean, lo, hi


def _diff_cells(a, b, keep, level, n_boot):
    shape = a.shape[:-2]
    mean, lo, hi = (np.full(shape, np.nan) for _ in range(3))
    for idx in np.ndindex(*shape):
        rows = keep[idx]
        if not rows.any():
            continue
        x, y = a[idx][rows], b[idx][rows]
        mean[idx] = x.mean() - y.mean()
        lo[idx], hi[idx] = stats.bootstrap_diff_ci(x, y, level=level, n_boot=n_boot, seed=0)
    return mean, np.clip(lo, -1.0, 1.0), np.clip(hi, -1.0, 1.0)  # a difference of accuracies


def _stacked(da, outer: tuple[str, ...]):
    """DataArray → (values with ``outer`` stacked into one unit axis before ``query``, the
    remaining dims)."""
    rest = [d for d in da.dims if d not in outer and d != "query"]
    arr = da.transpose(*rest, *outer, "query").values
    shape = arr.shape[:len(rest)] + (-1, arr.shape[-1])
    return arr.reshape(shape), rest


def add_aggregates(ds, *, level: float = 0.95, n_boot: int = 1000,
                   sensitivity_flip: float = 0.5):
    """``ds`` with the aggregates above added (a new Dataset)."""
    ds = ds.copy()
    ok = ds["present"] & ~ds["diverged"]
    ds["accuracy"] = ds["correct"].mean("query").where(ok)
    ds["accuracy"].attrs["long_name"] = "fraction of the run's queries answered correctly"
    pct = f"{100 * level:g} %"

    def put(prefix, dims, mean, lo, hi, what):
        for suffix, arr, text in (("mean", mean, what), ("lo", lo, f"lower end of the {pct} "
                                  f"bootstrap interval of the {what}"),
                                  ("hi", hi, f"upper end of the {pct} bootstrap interval of "
                                  f"the {what}")):
            ds[f"{prefix}_{suffix}"] = (dims, arr, {"long_name": text})

    for var, prefix, what in (("correct", "acc", "accuracy"), ("margin", "margin",
                                                               "mean log-probability margin")):
        for outer, pre in ((("seed",), prefix), (("task", "seed"), f"pooled_{prefix}")):
            values, rest = _stacked(ds[var], outer)
            keep, _ = _stacked(ok.expand_dims(query=[0]), outer)
            m, lo, hi = _cells(values, keep[..., 0].astype(bool), level, n_boot)
            put(pre, tuple(rest), m, lo, hi,
                what + (" pooled over tasks" if "task" in outer else "") +
                " (mean over seeds and queries)")

    flips = [float(p) for p in ds["label_flip"].values]
    if 0.0 in flips and sensitivity_flip in flips and sensitivity_flip != 0.0:
        clean = ds["correct"].sel(label_flip=0.0)
        noisy = ds["correct"].sel(label_flip=sensitivity_flip)
        both = ok.sel(label_flip=0.0) & ok.sel(label_flip=sensitivity_flip)
        for outer, pre in ((("seed",), "sensitivity"), (("task", "seed"),
                                                        "pooled_sensitivity")):
            a, rest = _stacked(clean, outer)
            b, _ = _stacked(noisy, outer)
            keep, _ = _stacked(both.expand_dims(query=[0]), outer)
            m, lo, hi = _diff_cells(a, b, keep[..., 0].astype(bool), level, n_boot)
            put(pre, tuple(rest), m, lo, hi,
                f"accuracy drop from p = 0 to p = {sensitivity_flip:g}" +
                (" pooled over tasks" if "task" in outer else ""))
        ds.attrs["sensitivity_flip"] = sensitivity_flip

    counted = ds["n_params"].where(ds["n_params"] > 0)
    n_params = counted.max([d for d in counted.dims if d != "model"])
    ds = ds.assign_coords(n_params_model=("model", np.nan_to_num(n_params.values, nan=-1)
                                          .astype(np.int64)))
    ds["n_params_model"].attrs["long_name"] = "parameters of the model (-1: not evaluated)"
    ds.attrs["confidence"] = level
    ds.attrs["n_boot"] = n_boot
    return ds
