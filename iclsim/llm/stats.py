"""Confidence intervals over seeds for accuracies, paired drops and differences of drops, and
the power of the paired comparison.

Design.  An accuracy in the real-LM experiment is the mean of a ``(seeds, queries)`` array of
0/1 correctness: each seed is an independent draw of demonstrations (and flips) and of the
queries scored under that prompt.  Queries under one prompt are not independent of each
other (a bad prompt hurts them all), but the seeds are independent of each other; so the
unit of every interval here is the SEED.  With ``S`` seeds, ``x_s`` the seed's value (its
mean over queries, or a contrast of such means) and ``s`` the sample sd of the ``x_s``
(ddof 1), the primary interval is the Student t interval

    mean(x) ± t_{(1+level)/2, S-1} · s / √S.

It assumes that the ``x_s`` are independent and identically distributed with a roughly
normal mean (a mean of Q Bernoulli scores plus a seed effect is close enough from Q ≈ 16 on,
away from accuracies of 0 or 1: see the table below).  It needs no assumption about the
within-seed correlation of the queries: whatever it is, it is in the spread of the ``x_s``.

* accuracy (:func:`accuracy_ci`): ``x_s`` = the seed's mean over its queries;
* paired drop ``acc(p=0) - acc(p)`` (:func:`paired_diff_ci`): both arrays are scored on the
  same seeds and queries, ``x_s`` = the seed's difference of means; the shared seed and
  query effects cancel in ``x_s``;
* between-model difference of drops (:func:`drop_diff_ci`): the models share seeds and
  queries, ``x_s = (a0_s - ap_s) - (b0_s - bp_s)``;
* pooled over tasks: the tasks are fixed strata with equal query counts, the seeds are
  independent draws, so ``x_s`` is the seed's value averaged over the tasks (a
  ``(tasks, seeds, queries)`` input does this; ``keep`` leaves runs out, and a seed then
  averages the tasks it has, which weights the tasks slightly unequally).  The task-to-task
  spread is not a source of error here: the estimand is the mean over THESE tasks.

Degenerate cases.  With one seed, or when the ``x_s`` have zero spread (every query correct
in every seed, or every seed at exactly the same count), the t interval is undefined or has
zero width.  Then, for 0/1 data:

* accuracy: the Wilson score interval on the pooled counts (all seeds, tasks and queries as
  independent Bernoulli trials), e.g. 48/48 correct -> [0.926, 1] at 95 %; it assumes no
  seed effect, which the data cannot show in this case;
* contrasts (drops, differences of drops): Newcombe's hybrid score interval (Newcombe 1998,
  method 10), extended to ± sums: with ``D = Σ w_i p_i`` and Wilson intervals
  ``[l_i, u_i]`` of each pooled accuracy, ``D - sqrt(Σ_{w>0} (p_i-l_i)² + Σ_{w<0} (u_i-p_i)²)``
  to ``D + sqrt(Σ_{w>0} (u_i-p_i)² + Σ_{w<0} (p_i-l_i)²)``.  It treats the arrays as
  independent (ignores the pairing, so it is conservative when they are positively
  correlated, as paired accuracies are), and gives a non-zero width even when the two arrays
  are identical (identical finite samples do not show a zero difference).

With one seed these fallbacks are what is returned (``method`` says so): they describe the
query-to-query noise under that one prompt only, not the prompt-to-prompt variation, so they
are too narrow for any claim about other prompts.  For continuous data (the log-probability
margin) the fallback is the t interval over the individual cells (queries as independent
units, same caveat), and a zero-width interval if every cell is equal.  Intervals of 0/1
data are clipped to the range the quantity can take ([0, 1] for an accuracy, [-1, 1] for a
drop, [-2, 2] for a difference of drops); clipping cannot lower the coverage.

Measured coverage (``benchmarks/llm_interval_coverage.py``; 4000 simulated datasets per
cell, so the binomial SE of each number is 0.34 points; nominal 95 %; Q = 40 queries per
seed; a seed's true accuracy 0.7 + N(0, sd²) clipped to [0, 1]; for the drop, the same
prompt at p has accuracy 0.15 lower with a seed-level drop effect of sd 0.05 and shares each
query's uniform draw with p = 0; for the difference of drops, a second model at 0.75 with its
own seed effects and a drop of 0.05, on the same queries):

=================================  =======  =======  ========
interval, between-seed sd          3 seeds  5 seeds  10 seeds
=================================  =======  =======  ========
t: accuracy, sd 0.1                 94.8     94.5     95.2
t: accuracy, sd 0                   96.4     94.4     94.6
t: paired drop, sd 0.1              95.7     94.3     94.4
t: difference of drops, sd 0.1      95.9     94.8     93.9
old two-stage bootstrap, sd 0.1     87.2     89.2     92.3
normal quantile (z), sd 0.1         81.0     87.5     92.3
=================================  =======  =======  ========

The last two rows are wrong on purpose: the replaced procedure (seeds, then queries within
each chosen seed, the seed stage shrunk to variance s²/S, percentile interval) and the t
interval with the normal quantile cannot know the t quantile with S - 1 degrees of freedom.
``tests/test_llm_stats.py`` asserts ``|coverage - 95 %|`` <= 2 points for the t rows and
< 93 % for the wrong ones at 3 seeds.

Near the ceiling the t interval is less good: at a true accuracy of 0.99 with no seed
effect and 40 queries per seed it covers 100 / 99.6 / 91.0 % at 3 / 5 / 10 seeds (32 / 14 /
2 % of the datasets are all-correct and get the Wilson fallback).  A cell near 1.0 with
many seeds is therefore read with care: its interval can be too narrow.

numpy and scipy.stats (imported when first needed).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Interval", "t_interval", "wilson", "accuracy_ci", "mean_ci", "paired_diff_ci",
           "drop_diff_ci", "contrast_ci", "contrast_ci_batch", "seed_units",
           "detectable_difference", "planning_sd_of_drop_difference", "METHOD"]

#: What the intervals are, for labels and result attributes.
METHOD = ("Student t interval over seeds (unit: a seed's mean over its queries, averaged over "
          "tasks when pooled); Wilson score interval on the pooled counts (Newcombe's hybrid "
          "score interval for differences) when there is one seed or the seed means do not vary")


class Interval(NamedTuple):
    """A point estimate and interval; ``method``: ``"t"``, ``"wilson"``, ``"newcombe"``,
    ``"t-cells"`` (continuous data, queries as units), ``"exact"`` (continuous data, every
    cell equal) or ``"none"`` (no data); ``n_seeds``; ``sd``: sample sd of the seed units
    (NaN with one seed)."""

    mean: float
    lo: float
    hi: float
    method: str
    n_seeds: int
    sd: float


def _tq(level: float, df):
    from scipy.stats import t

    return t.ppf((1 + level) / 2, df)


def _check_level(level: float) -> float:
    if not (0.0 < float(level) < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(level)


def t_interval(units, level: float = 0.95):
    """``(mean, lo, hi)`` of the Student t interval on independent units (1-D), or ``None``
    when it is undefined or has zero width (fewer than 2 units, or no spread)."""
    x = np.asarray(units, dtype=np.float64).ravel()
    level = _check_level(level)
    if x.size < 2:
        return None
    s = float(x.std(ddof=1))
    if not s > 0:
        return None
    m = float(x.mean())
    half = float(_tq(level, x.size - 1)) * s / np.sqrt(x.size)
    return m, m - half, m + half


def wilson(k, n, level: float = 0.95):
    """Wilson score interval ``(lo, hi)`` of a binomial proportion ``k / n`` (arrays
    broadcast; NaN where ``n`` is 0)."""
    from scipy.stats import norm

    level = _check_level(level)
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    z = float(norm.ppf((1 + level) / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = np.maximum(0.0, centre - half), np.minimum(1.0, centre + half)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def _as_4d(values, name: str, batched: bool) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if not batched:
        if arr.ndim == 1:
            arr = arr[None, :]  # one seed
        if arr.ndim == 2:
            arr = arr[None]  # one task
        arr = arr[None]
    elif arr.ndim == 3:
        arr = arr[:, None]  # (batch, seeds, queries): one task
    if arr.ndim != 4 or arr.size == 0:
        shapes = "(batch, [tasks,] seeds, queries)" if batched else \
            "(seeds, queries) or (tasks, seeds, queries)"
        raise ValueError(f"{name} must be a non-empty {shapes} array, got shape "
                         f"{np.shape(values)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN)")
    return arr


def _keep_mask(keep, shape) -> np.ndarray:
    """keep of shape (batch, tasks, seeds) (or fewer leading dims) → broadcast to ``shape``."""
    if keep is None:
        return np.ones(shape, bool)
    k = np.asarray(keep, bool)
    while k.ndim < len(shape):
        k = k[None]
    if k.shape != shape:
        raise ValueError(f"keep must have the (tasks, seeds) shape {shape[1:]}, got "
                         f"{np.shape(keep)}")
    return k


def _units(arr: np.ndarray, k: np.ndarray):
    """(B, T, S, Q) values, (B, T, S) keep → (B, S) per-seed means over the kept tasks and
    the (B, S) mask of seeds with at least one kept task."""
    n = k.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        units = np.where(k, arr.mean(axis=3), 0.0).sum(axis=1) / n
    return np.where(n > 0, units, 0.0), n > 0


def _masked_t(x, valid, level):
    """Row-wise t interval of the valid entries of ``x`` (B, N): mean, half width, count, sd
    (half NaN where undefined)."""
    cnt = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, x, 0.0).sum(axis=1) / cnt
        var = np.where(valid, (x - mean[:, None]) ** 2, 0.0).sum(axis=1) / (cnt - 1)
        sd = np.sqrt(var)
        df = np.where(cnt > 1, cnt - 1, 1)
        half = np.where(cnt > 1, _tq(level, df) * sd / np.sqrt(cnt), np.nan)
    return mean, half, cnt, sd


_CODES = np.array(["none", "t", "wilson", "newcombe", "t-cells", "exact"])


def contrast_ci_batch(arrays, weights, *, level: float = 0.95, keep=None, binary=None):
    """Vectorised :func:`contrast_ci` over a leading batch axis: ``arrays`` of shape
    ``(batch, seeds, queries)`` or ``(batch, tasks, seeds, queries)``, ``keep`` of shape
    ``(batch, [tasks,] seeds)``.  Returns a dict of arrays ``mean``, ``lo``, ``hi``,
    ``method`` (strings), ``n_seeds``, ``sd``; ``binary`` is decided per batch element when
    not given."""
    level = _check_level(level)
    arrs = [_as_4d(a, f"arrays[{i}]", True) for i, a in enumerate(arrays)]
    return _contrast(arrs, weights, level, keep, binary)


def _contrast(arrs, weights, level, keep, binary):
    if len({a.shape for a in arrs}) != 1:
        raise ValueError(f"paired arrays must have one shape, got {[a.shape for a in arrs]}")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(arrs),):
        raise ValueError(f"need one weight per array, got {w.shape} for {len(arrs)}")
    shape = arrs[0].shape  # (B, T, S, Q)
    if keep is not None and np.ndim(keep) == 2 and shape[1] == 1:
        keep = np.asarray(keep)[:, None]  # (batch, seeds) with one task
    k = _keep_mask(keep, shape[:3])
    x = 0.0
    for wi, a in zip(w, arrs):
        u, valid = _units(a, k)
        x = x + wi * u
    mean, half, n_seeds, sd = _masked_t(x, valid, level)
    if binary is None:
        binary = np.all([np.isin(a, (0.0, 1.0)).all(axis=(1, 2, 3)) for a in arrs], axis=0)
    binary = np.broadcast_to(np.asarray(binary, bool), mean.shape)
    lo_b, hi_b = float(w[w < 0].sum()), float(w[w > 0].sum())  # range of a 0/1 contrast
    use_t = np.isfinite(half) & (half > 0)
    lo, hi = mean - half, mean + half
    method = np.where(n_seeds == 0, 0, np.where(use_t, 1, 0))
    fall = ~use_t & (n_seeds > 0)
    if fall.any():
        kq = k[..., None]
        nn = k.sum(axis=(1, 2)) * shape[3]  # kept cells per array
        # 0/1 data: Wilson (one array) / Newcombe's hybrid score interval on pooled counts
        lo2 = hi2 = 0.0
        for wi, a in zip(w, arrs):
            kk = np.where(kq, a, 0.0).sum(axis=(1, 2, 3))
            p = kk / np.maximum(nn, 1)
            wl, wu = wilson(kk, nn, level)
            down, up = (p - wl, wu - p) if wi > 0 else (wu - p, p - wl)
            lo2 = lo2 + (abs(wi) * down) ** 2
            hi2 = hi2 + (abs(wi) * up) ** 2
        single = len(arrs) == 1 and w[0] == 1.0
        bin_fall = fall & binary
        lo = np.where(bin_fall, mean - np.sqrt(lo2), lo)
        hi = np.where(bin_fall, mean + np.sqrt(hi2), hi)
        method = np.where(bin_fall, 2 if single else 3, method)
        # continuous data: t over the individual kept cells (queries as units)
        cont = fall & ~binary
        if cont.any():
            cells = sum(wi * a for wi, a in zip(w, arrs)).reshape(shape[0], -1)
            cvalid = np.broadcast_to(kq, shape).reshape(shape[0], -1)
            _, chalf, _, _ = _masked_t(cells, cvalid, level)
            chalf = np.where(np.isfinite(chalf), chalf, 0.0)
            lo = np.where(cont, mean - chalf, lo)
            hi = np.where(cont, mean + chalf, hi)
            method = np.where(cont, np.where(chalf > 0, 4, 5), method)
    lo = np.where(binary, np.maximum(lo, lo_b), lo)
    hi = np.where(binary, np.minimum(hi, hi_b), hi)
    none = n_seeds == 0
    mean, lo, hi = (np.where(none, np.nan, v) for v in (mean, lo, hi))
    sd = np.where(n_seeds > 1, sd, np.nan)
    return {"mean": mean, "lo": lo, "hi": hi, "method": _CODES[method], "n_seeds": n_seeds,
            "sd": sd}


def contrast_ci(arrays, weights, *, level: float = 0.95, keep=None, binary=None) -> Interval:
    """Interval of ``Σ w_i mean(arrays[i])``, the arrays (each ``(seeds, queries)`` or
    ``(tasks, seeds, queries)``) on the SAME seeds, tasks and queries: t interval over the
    seed units ``x_s = Σ w_i x_{i,s}``; fallbacks as in the module docstring.  ``keep``:
    ``(seeds,)`` or ``(tasks, seeds)`` mask of the runs to use; ``binary``: whether the
    arrays are 0/1 (default: detected)."""
    level = _check_level(level)
    arrs = [_as_4d(a, f"arrays[{i}]", False) for i, a in enumerate(arrays)]
    if keep is not None:
        keep = np.asarray(keep, bool)
        keep = keep.reshape((1,) * (3 - keep.ndim) + keep.shape)
    r = _contrast(arrs, weights, level, keep, binary)
    return Interval(float(r["mean"][0]), float(r["lo"][0]), float(r["hi"][0]),
                    str(r["method"][0]), int(r["n_seeds"][0]), float(r["sd"][0]))


def seed_units(values, keep=None) -> np.ndarray:
    """Per-seed means of a ``(seeds, queries)`` or ``(tasks, seeds, queries)`` array: over
    the queries, then over the tasks kept for that seed; seeds with nothing kept are
    dropped."""
    arr = _as_4d(values, "values", False)
    if keep is not None:
        keep = np.asarray(keep, bool)
        keep = keep.reshape((1,) * (3 - keep.ndim) + keep.shape)
    u, valid = _units(arr, _keep_mask(keep, arr.shape[:3]))
    return u[0][valid[0]]


def accuracy_ci(values, *, level: float = 0.95, keep=None) -> Interval:
    """Accuracy of a 0/1 ``(seeds, queries)`` (or ``(tasks, seeds, queries)``) array: t over
    seeds, Wilson on the pooled counts when degenerate."""
    return contrast_ci([values], [1.0], level=level, keep=keep)


def mean_ci(values, *, level: float = 0.95, keep=None) -> Interval:
    """Mean of any ``(seeds, queries)`` / ``(tasks, seeds, queries)`` array (0/1 data: as
    :func:`accuracy_ci`; otherwise the t interval over the cells when degenerate)."""
    return contrast_ci([values], [1.0], level=level, keep=keep)


def paired_diff_ci(a, b, *, level: float = 0.95, keep=None) -> Interval:
    """``mean(a) - mean(b)`` on the same seeds and queries (e.g. ``acc(p=0) - acc(p)``): t on
    the per-seed differences, Newcombe when degenerate."""
    return contrast_ci([a, b], [1.0, -1.0], level=level, keep=keep)


def drop_diff_ci(a0, ap, b0, bp, *, level: float = 0.95, keep=None) -> Interval:
    """``(mean(a0) - mean(ap)) - (mean(b0) - mean(bp))``: the difference between models A and
    B of their drops, all four on the same seeds and queries; t on the per-seed differences
    of per-seed drops, Newcombe (four Wilson intervals) when degenerate."""
    return contrast_ci([a0, ap, b0, bp], [1.0, -1.0, -1.0, 1.0], level=level, keep=keep)


def detectable_difference(sd_of_seed_differences: float, n_seeds: int, level: float = 0.95,
                          power: float = 0.8) -> float:
    """Smallest true mean difference that the two-sided paired t test at ``level`` (on
    ``n_seeds`` per-seed differences with sd ``sd_of_seed_differences``) rejects with
    probability ``power``.  Exact for normal differences: solves
    ``P(|T| > t_{(1+level)/2, n-1}) = power`` with ``T`` noncentral t (df ``n - 1``,
    noncentrality ``δ √n / sd``).  ``inf`` with fewer than 2 seeds; 0 when sd is 0."""
    from scipy.optimize import brentq
    from scipy.stats import nct

    level = _check_level(level)
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    n = int(n_seeds)
    sd = float(sd_of_seed_differences)
    if n < 2 or not np.isfinite(sd):
        return float("inf")
    if sd <= 0:
        return 0.0
    df = n - 1
    crit = float(_tq(level, df))

    def excess(nc):
        # P(T < -crit | nc) = P(T > crit | -nc); scipy's nct.cdf far in the tail is NaN
        return nct.sf(crit, df, nc) + np.nan_to_num(nct.sf(crit, df, -nc)) - power

    hi = 2 * (crit + float(_tq(2 * power - 1, df))) + 1  # above the approximate answer
    while excess(hi) < 0:
        hi *= 2
    nc = brentq(excess, 0.0, hi, xtol=1e-10)
    return float(nc * sd / np.sqrt(n))


def planning_sd_of_drop_difference(n_queries: int, *, drop_sd: float, acc: float = 0.75,
                                   acc_flipped: float | None = None,
                                   query_correlation: float = 0.0) -> float:
    """Predicted sd of the per-seed between-model difference of drops,
    ``(a0_s - ap_s) - (b0_s - bp_s)``.

    Assumptions: each model's seed has a true drop that varies between seeds with sd
    ``drop_sd`` (independently for the two models); given the seed, each of the
    ``n_queries`` queries (per seed and flip fraction, all tasks together when pooled) is
    correct with probability ``acc`` at p = 0 and ``acc_flipped`` (default ``acc``) at p,
    independently across queries; the two flip fractions' scores of one query have
    correlation ``query_correlation`` (0: independent, conservative; the same query under
    two prompts is in fact positively correlated); both models have the same accuracies.
    Then per model ``Var(drop_s) = drop_sd² + [v0 + vp - 2 ρ √(v0 vp)] / Q`` with
    ``v = acc (1 - acc)``, and the difference of two independent models doubles it."""
    q = int(n_queries)
    if q < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries!r}")
    pf = acc if acc_flipped is None else acc_flipped
    v0, vp = acc * (1 - acc), pf * (1 - pf)
    within = (v0 + vp - 2 * query_correlation * np.sqrt(v0 * vp)) / q
    return float(np.sqrt(2 * (drop_sd ** 2 + within)))
