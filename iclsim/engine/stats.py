"""Seed-level resampling shared by the settings: a bootstrap over independent training seeds
that also carries the Monte Carlo error of the evaluation, a small-sample widened interval,
and a Hotelling-type test of a whole curve.

Design.  A trained setting evaluates every run on the *same* Monte Carlo prompts (common
random numbers).  A per-seed value x_s (a risk, a paired difference of risks, a whole curve
over noise levels) is then the run's true value plus two errors: the training randomness
(independent across seeds) and the Monte Carlo error of the prompt set (largely common to the
seeds, so it does not average down with more seeds).  The seed mean x̄ has covariance

    Σ_seed / n  +  C_mc,

Σ_seed the covariance of x_s over seeds and C_mc that of the common Monte Carlo error.
:func:`seed_bootstrap` resamples seeds (with replacement, deviations rescaled by √(n/(n−1))
so a replicate's variance is s²/n, not the plug-in (n−1)s²/n²) and adds one Gaussian draw of
C_mc to each replicate.  C_mc is taken as the mean over seeds of each run's own Monte Carlo
covariance: an upper bound of the common part when the runs' errors on the shared prompts are
non-negatively correlated, as squared errors of predictors on the same prompts are (the part
of the Monte Carlo error that differs between seeds is already in the seed spread, so this
counts it twice: conservative).

Small samples.  With n seeds the plain percentile interval of a mean covers ≈ 91–92 % at
n = 10 for a nominal 95 % (it uses z where the t quantile belongs).  ``seed_bootstrap(...,
level=…)`` therefore widens the *seed* part of each replicate by t_{n−1}/z (the Monte Carlo
part is known, not estimated from the seeds, and is left as it is), and
:func:`percentile_interval` reads the interval off the replicates about their median, placed
at the estimate: for a mean with no Monte Carlo error this is the Student t interval
x̄ ± t s/√n, for a smooth non-linear statistic (a crossing point) it keeps the bootstrap's
asymmetry.  Coverage is measured in ``tests/test_transformer_stats.py``.

:func:`curve_test` tests H0: E[x] = μ for a curve of p cells from n seeds with the statistic
T² = (x̄ − μ)ᵀ (S/n + C_mc)⁻¹ (x̄ − μ) referred to Hotelling's (n−1)p/(n−p) F(p, n−p) (exact
for Gaussian seeds when C_mc = 0; with C_mc it is conservative to the extent C_mc is).  It
needs n > p.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import NamedTuple

import numpy as np

__all__ = ["seed_bootstrap", "percentile_interval", "Interval", "bootstrap_interval",
           "CurveTest", "curve_test", "binomial_band", "t_quantile"]


def t_quantile(level: float, df: float) -> float:
    """The two-sided Student t quantile t_{(1+level)/2, df}."""
    from scipy.stats import t

    return float(t.ppf((1.0 + level) / 2.0, df))


def seed_bootstrap(units, *, n_boot: int = 2000, seed: int = 0, mc_cov=None,
                   rng: np.random.Generator | None = None, level: float | None = None
                   ) -> np.ndarray:
    """Replicates of the seed mean of ``units`` ((n, cells) or (n,)): each resamples the n
    rows with replacement (deviations from the mean rescaled by √(n/(n−1)), n ≥ 2) and adds a
    draw of N(0, ``mc_cov``) ((cells, cells) or a scalar variance) when given.  With
    ``level`` the seed part (only: the Monte Carlo covariance is known, not estimated from
    the n seeds) is widened by t_{n−1}/z at that level, so that percentiles of the replicates
    are small-sample intervals (:func:`percentile_interval`).  Rows with a non-finite value are
    dropped first.  Returns (n_boot, cells) (or (n_boot,))."""
    x = np.asarray(units, float)
    flat = x.reshape(x.shape[0], -1)
    flat = flat[np.all(np.isfinite(flat), axis=1)]
    n, cells = flat.shape
    rng = np.random.default_rng(seed) if rng is None else rng
    if n == 0:
        return np.full((n_boot, *x.shape[1:]), np.nan)
    mean = flat.mean(axis=0)
    scale = np.sqrt(n / (n - 1)) if n > 1 else 0.0
    if level is not None and n > 1:
        scale *= t_quantile(level, n - 1) / NormalDist().inv_cdf((1.0 + level) / 2.0)
    pick = rng.integers(0, n, size=(n_boot, n))
    reps = mean + scale * (flat[pick].mean(axis=1) - mean)
    if mc_cov is not None:
        cov = np.atleast_2d(np.asarray(mc_cov, float))
        if cov.shape == (1, 1) and cells > 1:
            cov = np.eye(cells) * cov[0, 0]
        w, v = np.linalg.eigh((cov + cov.T) / 2.0)
        root = v * np.sqrt(np.clip(w, 0.0, None))
        reps = reps + rng.standard_normal((n_boot, cells)) @ root.T
    return reps.reshape((n_boot, *x.shape[1:]))


class Interval(NamedTuple):
    estimate: float
    lo: float
    hi: float
    level: float
    n: int
    """seeds behind the interval"""


def percentile_interval(estimate, replicates, n: int, level: float = 0.95) -> Interval:
    """The percentile interval of ``replicates`` (1-D, non-finite ones dropped) about their
    median, placed at ``estimate`` (replicates from :func:`seed_bootstrap` with ``level``).
    NaN when fewer than 2 seeds or under half of the replicates are finite."""
    reps = np.asarray(replicates, float).ravel()
    ok = reps[np.isfinite(reps)]
    if n < 2 or not np.isfinite(estimate) or ok.size < max(2, reps.size // 2):
        return Interval(float(estimate), np.nan, np.nan, level, int(n))
    a = (1.0 - level) / 2.0
    lo_q, med, hi_q = np.quantile(ok, [a, 0.5, 1.0 - a])
    return Interval(float(estimate), float(estimate + lo_q - med), float(estimate + hi_q - med),
                    level, int(n))


def bootstrap_interval(units, statistic=None, *, level: float = 0.95, n_boot: int = 2000,
                       seed: int = 0, mc_cov=None) -> Interval:
    """:func:`percentile_interval` of ``statistic(seed mean)`` (default: the mean itself, for
    1-D ``units``) over :func:`seed_bootstrap` replicates widened at ``level``."""
    x = np.asarray(units, float)
    keep = np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)
    stat = statistic if statistic is not None else (lambda m: m)
    est = float(stat(x[keep].mean(axis=0))) if keep.any() else np.nan
    reps = seed_bootstrap(x, n_boot=n_boot, seed=seed, mc_cov=mc_cov, level=level)
    vals = reps if statistic is None else np.array([stat(r) for r in reps], float)
    return percentile_interval(est, vals, int(keep.sum()), level)


class CurveTest(NamedTuple):
    t2: float
    """(x̄ − μ)ᵀ (S/n + C_mc)⁻¹ (x̄ − μ)"""
    p_value: float
    cells: int
    n: int


def curve_test(units, mu, mc_cov=None) -> CurveTest:
    """Test H0: E[x] = ``mu`` for a curve ((n, p) ``units``), see the module docstring.
    NaN p-value when n ≤ p."""
    from scipy.stats import f

    x = np.asarray(units, float)
    x = x[np.all(np.isfinite(x), axis=1)]
    n, p = x.shape
    if n <= p:
        return CurveTest(np.nan, np.nan, p, n)
    diff = x.mean(axis=0) - np.asarray(mu, float)
    cov = np.cov(x, rowvar=False, ddof=1).reshape(p, p) / n
    if mc_cov is not None:
        cov = cov + np.asarray(mc_cov, float).reshape(p, p)
    t2 = float(diff @ np.linalg.pinv(cov) @ diff)
    stat = t2 * (n - p) / (p * (n - 1))
    return CurveTest(t2, float(f.sf(stat, p, n - p)), p, n)


def binomial_band(level: float, trials: int, z: float = 3.0) -> tuple[float, float]:
    """The band level ± z·√(level(1 − level)/trials) a measured coverage of ``trials``
    independent intervals falls in with probability ≈ 1 − 2Φ(−z) when the coverage is
    ``level``."""
    half = z * np.sqrt(level * (1.0 - level) / trials)
    return level - half, level + half
