"""iclsim.llm.stats: bootstrap intervals have their nominal coverage (by simulation), and the
coverage check is able to fail (a deliberately wrong interval is caught)."""

import numpy as np
import pytest

from iclsim.llm.stats import bootstrap_ci, bootstrap_diff_ci, bootstrap_means

REPS = 300  # simulated datasets per coverage check
# a 95 % interval covers with probability 0.95; over 300 independent datasets the observed
# coverage has binomial SE sqrt(0.95 * 0.05 / 300) = 0.0126; we accept 0.95 +- 3 SE.
SE = np.sqrt(0.95 * 0.05 / REPS)
LO, HI = 0.95 - 3 * SE, 0.95 + 3 * SE  # [0.912, 0.988]
ACC, SD_SEED, SD_QUERY = 0.7, 0.1, 0.2


def correctness(rng, n_seeds, n_queries, *, crossed, sd_seed=SD_SEED, shift=0.0, effects=None):
    """0/1 correctness with a seed effect and a query effect (own queries per seed: nested;
    the same queries for all seeds: crossed), probability clipped to [0, 1]."""
    if effects is None:
        a = sd_seed * rng.standard_normal((n_seeds, 1))
        b = SD_QUERY * rng.standard_normal((1 if crossed else n_seeds, n_queries))
        effects = a + b
    prob = np.clip(ACC + shift + effects, 0.0, 1.0)
    return (rng.random(prob.shape) < prob).astype(float), effects


def true_mean(sd_seed=SD_SEED, shift=0.0):
    """E clip(ACC + shift + a + b): the estimand, by a 4e6-draw Monte Carlo (SE < 2e-4)."""
    rng = np.random.default_rng(12345)
    z = np.sqrt(sd_seed**2 + SD_QUERY**2) * rng.standard_normal(4_000_000)
    return float(np.clip(ACC + shift + z, 0, 1).mean())


def flat_ci(values, rng, n_boot=500):
    """The deliberately wrong interval: every (seed, query) cell treated as independent."""
    flat = values.ravel()
    means = flat[rng.integers(flat.size, size=(n_boot, flat.size))].mean(axis=1)
    return np.quantile(means, [0.025, 0.975])


def coverage(n_seeds, n_queries, *, crossed, design, sd_seed=SD_SEED, wrong=False):
    rng = np.random.default_rng(2024)
    mu = true_mean(sd_seed)
    hits = 0
    for r in range(REPS):
        values, _ = correctness(rng, n_seeds, n_queries, crossed=crossed, sd_seed=sd_seed)
        if wrong:
            lo, hi = flat_ci(values, rng)
        else:
            lo, hi = bootstrap_ci(values, n_boot=500, seed=r, design=design)
        hits += lo <= mu <= hi
    return hits / REPS


def test_two_stage_coverage_nested_design():
    # measured 0.947 (10 seeds x 100 own queries each, seed sd 0.05; sd 0.1: 0.927, 0: 0.96)
    cov = coverage(10, 100, crossed=False, design="two_stage", sd_seed=0.05)
    assert LO <= cov <= HI, cov


def test_crossed_coverage_crossed_design():
    # measured 0.963 (10 seeds x the same 100 queries)
    cov = coverage(10, 100, crossed=True, design="crossed")
    assert LO <= cov <= HI, cov


def test_coverage_check_catches_wrong_intervals():
    # power: the flat bootstrap ignores the seed effect (measured 0.63), and two-stage
    # resampling on a crossed design averages the shared query effect away (measured 0.64)
    assert coverage(10, 100, crossed=False, design=None, wrong=True) < LO
    assert coverage(20, 100, crossed=True, design="two_stage", sd_seed=0.03) < LO


def test_paired_difference_coverage_and_width():
    # acc(p=0) - acc(p=0.5) on the same prompts and queries: the shared effects cancel
    rng = np.random.default_rng(7)
    delta = true_mean() - true_mean(shift=-0.15)
    hits, paired_w, unpaired_w = 0, [], []
    for r in range(REPS):
        a, eff = correctness(rng, 10, 100, crossed=False)
        b, _ = correctness(rng, 10, 100, crossed=False, shift=-0.15, effects=eff)
        lo, hi = bootstrap_diff_ci(a, b, n_boot=500, seed=r)
        hits += lo <= delta <= hi
        if r < 20:
            paired_w.append(hi - lo)
            la, ha = bootstrap_ci(a, n_boot=500, seed=r)
            lb, hb = bootstrap_ci(b, n_boot=500, seed=r + 1000)
            unpaired_w.append(np.hypot(ha - la, hb - lb))
    assert LO <= hits / REPS <= HI, hits / REPS  # measured 0.96 (unadjusted two-stage: 0.997)
    assert np.mean(paired_w) < 0.8 * np.mean(unpaired_w)


def test_exact_cases_and_determinism():
    const = np.full((4, 6), 0.75)
    assert bootstrap_ci(const) == (0.75, 0.75)
    v = np.random.default_rng(0).random((5, 20))
    assert bootstrap_ci(v, seed=3) == bootstrap_ci(v, seed=3)
    lo90, hi90 = bootstrap_ci(v, level=0.90)
    lo99, hi99 = bootstrap_ci(v, level=0.99)
    assert lo99 <= lo90 < v.mean() < hi90 <= hi99
    # every resampled mean lies in [min, max] and averages close to the grand mean
    m = bootstrap_means(v, n_boot=4000)[:, 0]
    assert v.min() <= m.min() and m.max() <= v.max()
    assert abs(m.mean() - v.mean()) < 4 * m.std() / np.sqrt(4000)
    # the two-stage bootstrap variance of the grand mean, checked against its closed form:
    # adjusted two-stage: Var* = s^2 / S (s^2 the ddof-1 variance of the seed means) when the
    # seeds vary more than their queries explain, else (mean plug-in within variance / Q) / S
    rng = np.random.default_rng(1)
    for seed_sd in (0.0, 0.3):
        v = rng.random((6, 20)) + seed_sd * rng.standard_normal((6, 1))
        S, Q = v.shape
        row = v.mean(axis=1)
        within = ((v - row[:, None]) ** 2).mean(axis=1).mean()
        expected = max(np.sum((row - row.mean()) ** 2) / (S - 1), within / Q) / S
        m = bootstrap_means(v, n_boot=4000, seed=seed_sd > 0)[:, 0]
        assert abs(m.var() / expected - 1) < 0.1  # 4000 resamples: relative SE ~ 0.022
    # paired difference of an array with itself is exactly zero
    assert bootstrap_diff_ci(v, v) == (0.0, 0.0)


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(np.ones((2, 2)), level=95)
    with pytest.raises(ValueError, match="one shape"):
        bootstrap_diff_ci(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="design"):
        bootstrap_ci(np.ones((2, 2)), design="flat")
