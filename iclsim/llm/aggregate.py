"""Aggregates of an LLM sweep result: means with t intervals over seeds, pooled tasks,
sensitivity.

Added to the labelled result by the setting (so they are stored beside the per-query
numbers, and ``iclsim show`` / the figures only read them):

* ``accuracy`` (run axes): the fraction of a run's queries answered correctly;
* ``acc_mean``, ``acc_lo``, ``acc_hi`` (run axes without ``seed``): the mean over seeds
  and queries with a Student t interval over the seeds (unit: a seed's accuracy over its
  queries; the Wilson interval on the pooled counts when there is one seed or the seeds do
  not vary, e.g. every query correct: :func:`iclsim.llm.stats.accuracy_ci`);
  ``margin_mean/lo/hi`` likewise for the log-probability margin of the true label word
  (continuous: the t interval over the queries when degenerate);
* ``pooled_acc_mean/lo/hi`` (also without ``task``): the tasks are fixed strata with equal
  query counts, so the unit is a seed's accuracy averaged over the tasks;
* ``sensitivity_mean/lo/hi`` (without ``seed`` and ``label_flip``): accuracy at p = 0
  minus accuracy at p = ``eval.sensitivity_flip``, paired over the same seeds and queries:
  t interval on the per-seed drops (Newcombe's hybrid score interval from two Wilson
  intervals when degenerate: :func:`iclsim.llm.stats.paired_diff_ci`);
  ``pooled_sensitivity_*`` over tasks (a seed's drop averaged over the tasks).

``ds.attrs["interval_method"]`` says this in words.  Runs that are missing (another host's
shard) or diverged (non-finite scores) are left out of every aggregate (a seed then averages
the tasks it has; a seed with none is left out).
numpy and xarray only (scipy for the quantiles).
"""

from __future__ import annotations

import numpy as np

from iclsim.llm import stats

__all__ = ["add_aggregates"]


def _blocks(da, ok, outer: tuple[str, ...]):
    """DataArray → (values ``(cells, *outer sizes, query)`` with left-out runs zeroed,
    keep ``(cells, *outer sizes)``, the remaining dims, their sizes)."""
    rest = [d for d in da.dims if d not in outer and d != "query"]
    vals = da.transpose(*rest, *outer, "query").values
    keep = ok.transpose(*rest, *outer).values.astype(bool)
    rest_shape = vals.shape[:len(rest)]
    n = int(np.prod(rest_shape))
    vals = vals.reshape(n, *vals.shape[len(rest):])
    keep = keep.reshape(n, *keep.shape[len(rest):])
    vals = np.where(keep[..., None], vals, 0.0)
    return vals, keep, rest, rest_shape


def _interval(arrays, weights, keep, level, binary, rest_shape):
    r = stats.contrast_ci_batch(arrays, weights, level=level, keep=keep, binary=binary)
    return tuple(r[k].reshape(rest_shape) for k in ("mean", "lo", "hi"))


def add_aggregates(ds, *, level: float = 0.95, sensitivity_flip: float = 0.5):
    """``ds`` with the aggregates above added (a new Dataset)."""
    ds = ds.copy()
    ok = ds["present"] & ~ds["diverged"]
    ds["accuracy"] = ds["correct"].mean("query").where(ok)
    ds["accuracy"].attrs["long_name"] = "fraction of the run's queries answered correctly"
    pct = f"{100 * level:g} %"

    def put(prefix, dims, mean, lo, hi, what, how):
        for suffix, arr, text in (("mean", mean, what),
                                  ("lo", lo, f"lower end of the {pct} {how} of the {what}"),
                                  ("hi", hi, f"upper end of the {pct} {how} of the {what}")):
            ds[f"{prefix}_{suffix}"] = (dims, arr, {"long_name": text})

    for var, prefix, what, binary, fallback in (
            ("correct", "acc", "accuracy", True, "Wilson on the pooled counts"),
            ("margin", "margin", "mean log-probability margin", False, "t over the queries")):
        for outer, pre in ((("seed",), prefix), (("task", "seed"), f"pooled_{prefix}")):
            vals, keep, rest, shape = _blocks(ds[var], ok, outer)
            m, lo, hi = _interval([vals], [1.0], keep, level, binary, shape)
            put(pre, tuple(rest), m, lo, hi,
                what + (" pooled over tasks" if "task" in outer else "") +
                " (mean over seeds and queries)",
                f"t interval over seeds ({fallback} when degenerate)")

    flips = [float(p) for p in ds["label_flip"].values]
    if 0.0 in flips and sensitivity_flip in flips and sensitivity_flip != 0.0:
        clean = ds["correct"].sel(label_flip=0.0)
        noisy = ds["correct"].sel(label_flip=sensitivity_flip)
        both = ok.sel(label_flip=0.0) & ok.sel(label_flip=sensitivity_flip)
        for outer, pre in ((("seed",), "sensitivity"), (("task", "seed"),
                                                        "pooled_sensitivity")):
            a, keep, rest, shape = _blocks(clean, both, outer)
            b, _, _, _ = _blocks(noisy, both, outer)
            m, lo, hi = _interval([a, b], [1.0, -1.0], keep, level, True, shape)
            put(pre, tuple(rest), m, lo, hi,
                f"accuracy drop from p = 0 to p = {sensitivity_flip:g}" +
                (" pooled over tasks" if "task" in outer else ""),
                "paired t interval over seeds (Newcombe from two Wilson intervals when "
                "degenerate)")
        ds.attrs["sensitivity_flip"] = sensitivity_flip

    counted = ds["n_params"].where(ds["n_params"] > 0)
    n_params = counted.max([d for d in counted.dims if d != "model"])
    ds = ds.assign_coords(n_params_model=("model", np.nan_to_num(n_params.values, nan=-1)
                                          .astype(np.int64)))
    ds["n_params_model"].attrs["long_name"] = "parameters of the model (-1: not evaluated)"
    ds.attrs["confidence"] = level
    ds.attrs["interval_method"] = stats.METHOD
    return ds
