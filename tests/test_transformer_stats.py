"""The statistics of setting 3 (iclsim.engine.stats, iclsim.transformer.analysis) on synthetic
data that is NOT from the LSA ladder: concave risk curves, seed effects that are correlated
across σ², and Monte Carlo errors that are correlated across σ² and largely shared by the seeds
(the runs of a sweep are evaluated on the same prompts).  Every interval's coverage, the
ladder-fit test's size and power, and the law test's false-positive rate are measured and held
to stated bands; a few exact checks pin the formulas.

Coverage bands: with T independent trials at a true coverage of 95 % the measured coverage
falls in 95 % ± 3·√(0.95·0.05/T) with probability 0.997 (``binomial_band``)."""

import numpy as np
import pytest

from iclsim.engine.stats import (
    binomial_band, bootstrap_interval, curve_test, percentile_interval, seed_bootstrap, t_quantile,
)
from iclsim.engine.verdict import NOT_SUPPORTED, SUPPORTED
from iclsim.linear import oracle
from iclsim.transformer.analysis import (
    SizeData, _crossing, clean_rung, law_test, local_slopes, rung_fit, rung_position,
)

S2 = np.array([0.0, 2.0, 4.0, 8.0, 16.0, 32.0])
LEVEL = 0.95
TRIALS = 400
N_BOOT = 400
SEEDS = 10


def concave(a, b, scale):
    """A concave risk curve a + b(1 − exp(−σ²/scale)): not affine, so on no ladder rung."""
    return a + b * (1.0 - np.exp(-S2 / scale))


def _mc_cov(mu, rel=0.04, corr=3.0):
    sd = rel * mu
    j = np.arange(mu.size)
    return np.outer(sd, sd) * np.exp(-np.abs(j[:, None] - j[None, :]) / corr)


def draw(rng, mu, n=SEEDS, shared=0.9, seed_sd=0.06, mc_rel=0.04):
    """n seed curves around ``mu``: a multiplicative and an additive seed effect (correlated
    across σ² through the curve) plus Monte Carlo error whose ``shared`` part is common to all
    seeds.  Returns (units (n, levels), per-run Monte Carlo covariance)."""
    cov = _mc_cov(mu, rel=mc_rel)
    root = np.linalg.cholesky(cov)
    common = np.sqrt(shared) * root @ rng.standard_normal(mu.size)
    own = np.sqrt(1 - shared) * rng.standard_normal((n, mu.size)) @ root.T
    z = rng.standard_normal((n, 2))
    units = mu * (1 + seed_sd * z[:, :1]) + 0.5 * seed_sd * z[:, 1:] + common + own
    return units, cov


def size(units, cov, s=1):
    return SizeData(s, 1e-3, 1.0, units, cov, np.sqrt(np.diag(cov)), {}, {})


def band():
    return binomial_band(LEVEL, TRIALS)


# ------------------------------------------------------------------------- exact formulas

def test_rung_position_is_linear_between_rungs_and_clipped():
    lad = np.array([4.0, 2.0, 1.5, 1.0])
    assert rung_position(4.0, lad) == 0.0 and rung_position(2.0, lad) == 1.0
    assert rung_position(1.75, lad) == pytest.approx(1.5)
    assert rung_position(3.0, lad) == pytest.approx(0.5)
    assert rung_position(9.0, lad) == 0.0 and rung_position(0.1, lad) == 3.0
    assert np.isnan(rung_position(np.nan, lad))


def test_widened_interval_of_a_mean_is_the_t_interval():
    """Replicates of a mean, widened by t/z, give x̄ ± t s/√n on average over samples (one
    sample's bootstrap distribution is skewed; its width is still t s/√n)."""
    rng = np.random.default_rng(1)
    ratio, centre = [], []
    for t in range(150):
        x = rng.standard_normal(8)
        iv = bootstrap_interval(x, n_boot=3000, seed=t)
        half = t_quantile(0.95, 7) * x.std(ddof=1) / np.sqrt(8)
        ratio.append((iv.hi - iv.lo) / (2 * half))
        centre.append((iv.hi + iv.lo) / 2 - x.mean())
    assert np.mean(ratio) == pytest.approx(1.0, abs=0.03)
    assert abs(np.mean(centre)) < 0.02


def test_local_slope_uses_the_paired_monte_carlo_variance():
    """Seeds without spread: the band slope's interval is the Monte Carlo error of the paired
    difference, var = (C_jj + C_kk − 2 C_jk)/Δ², not C_jj + C_kk, at the normal quantile (the
    Monte Carlo covariance is known: no t widening)."""
    mu = concave(1.0, 2.0, 10.0)
    cov = _mc_cov(mu, corr=20.0)  # strongly correlated neighbours
    units = np.tile(mu, (SEEDS, 1))
    out = local_slopes(size(units, cov), S2, np.linspace(0, 0.2, 5), n_boot=20000)
    d = S2[1] - S2[0]
    sd = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]) / d
    half = 1.959964 * sd
    assert out["slope"][0] == pytest.approx((mu[1] - mu[0]) / d)
    assert out["hi"][0] - out["slope"][0] == pytest.approx(half, rel=0.06)
    assert half < 0.5 * 1.959964 * np.sqrt(cov[0, 0] + cov[1, 1]) / d


def test_crossing_point():
    assert _crossing(np.array([-1.0, -0.5, 0.5, 1, 1, 1]), S2) == pytest.approx(3.0)
    assert _crossing(np.array([0.1, 1, 1, 1, 1, 1]), S2) == -np.inf
    assert _crossing(-np.ones(6), S2) == np.inf


# -------------------------------------------------------------------------------- coverage

def _coverage(fn):
    rng = np.random.default_rng(7)
    hits = [fn(rng, t) for t in range(TRIALS)]
    return np.mean(np.array(hits, float), axis=0)


def test_coverage_of_the_clean_risk_and_rung_intervals():
    mu = concave(1.6, 1.4, 9.0)
    ladder = oracle.optimal_risks(np.diag([2.0, 1.0, 0.5, 0.25]), 10,
                                  label_noise=S2[:, None])[:, 0, :]
    true_rung = rung_position(mu[0], ladder[0])

    def one(rng, t):
        units, cov = draw(rng, mu)
        r = clean_rung(size(units, cov), ladder, n_boot=N_BOOT, seed=t)
        return (r["lo"] <= mu[0] <= r["hi"], r["rung_lo"] <= true_rung <= r["rung_hi"])

    cov_risk, cov_rung = _coverage(one)
    lo, hi = band()
    assert lo <= cov_risk <= hi, cov_risk
    assert cov_rung >= lo, cov_rung  # the same event, up to clipping at the ends


def test_coverage_of_the_local_slope_intervals():
    mu = concave(1.6, 1.4, 9.0)
    truth = np.diff(mu) / np.diff(S2)

    def one(rng, t):
        units, cov = draw(rng, mu)
        out = local_slopes(size(units, cov), S2, np.linspace(0, 0.2, 5), n_boot=N_BOOT, seed=t)
        return (out["lo"] <= truth) & (truth <= out["hi"])

    cov_bands = _coverage(one)
    lo, hi = band()
    assert np.all((lo <= cov_bands) & (cov_bands <= hi)), cov_bands


def test_coverage_of_the_law_difference_and_crossing():
    small, large = concave(2.2, 0.8, 6.0), concave(1.4, 2.4, 12.0)
    truth = large - small
    cross = _crossing(truth, S2)
    assert np.isfinite(cross)
    ladder = np.stack([np.full(S2.size, 3.75), concave(1.0, 3.0, 30.0)], axis=1)

    def one(rng, t):
        a, b = draw(rng, small), draw(rng, large)
        law = law_test([size(*a, 1), size(*b, 2)], [100, 200], ladder, S2, n_boot=N_BOOT,
                       seed=t)
        return [*((law.lo <= truth) & (truth <= law.hi)),
                law.crossing[1] <= cross <= law.crossing[2]]

    cov_all = _coverage(one)
    lo, hi = band()
    assert np.all((lo <= cov_all[:-1]) & (cov_all[:-1] <= hi)), cov_all
    assert lo <= cov_all[-1] <= hi, cov_all[-1]


# ------------------------------------------------------------------ tests: size and power

def test_ladder_fit_size_and_power():
    """Size: curves that ARE a rung (plus seed and Monte Carlo error) are rejected at most at
    the nominal 5 % (+ band); power: a concave curve that starts on rung 2 and bends away is
    rejected for every rung ("no rung fits") in most trials."""
    ladder = oracle.optimal_risks(np.diag([2.0, 1.0, 0.5, 0.25]), 10,
                                  label_noise=S2[:, None])[:, 0, :]
    rng = np.random.default_rng(3)
    n = 12
    rejected, no_fit = 0, 0
    bend = ladder[:, 2] - 0.5 * (ladder[:, 2] - ladder[0, 2]) * (S2 / S2[-1])
    for t in range(TRIALS):
        units, cov = draw(rng, ladder[:, 2], n=n)
        rejected += 2 not in rung_fit(size(units, cov), ladder)["fits"]
        units, cov = draw(rng, bend, n=n)
        no_fit += rung_fit(size(units, cov), ladder)["fits"] == []
    lo, hi = band()
    size_rate, power = rejected / TRIALS, no_fit / TRIALS
    assert size_rate <= 1 - lo, size_rate
    assert power >= 0.8, power
    # Seed spread only (Gaussian, full rank, correlated across σ²; no Monte Carlo error):
    # Hotelling's reference is exact, so the size is the nominal 5 % (a χ² reference, which
    # ignores that the covariance is estimated from 12 seeds, would reject far more often).
    root = np.linalg.cholesky(_mc_cov(ladder[:, 2], rel=0.05))
    tiny = sum(2 not in rung_fit(size(ladder[:, 2] + rng.standard_normal((n, S2.size)) @ root.T,
                                      np.zeros((S2.size, S2.size))), ladder)["fits"]
               for _ in range(TRIALS)) / TRIALS
    assert 1 - hi <= tiny <= 1 - lo, tiny


def test_curve_test_needs_more_seeds_than_levels():
    units = np.ones((6, 6)) + np.random.default_rng(0).standard_normal((6, 6))
    assert np.isnan(curve_test(units, np.ones(6)).p_value)
    assert not rung_fit(size(units, np.eye(6)), np.ones((6, 3)))["testable"]


def test_law_false_positive_rate_when_all_sizes_are_equal():
    """Two sizes with the same concave curve: SUPPORTED at most at the nominal level (the
    intersection-union test: far below it) and NOT SUPPORTED at most at 2 × 2.5 % + band."""
    mu = concave(1.6, 1.4, 9.0)
    ladder = np.stack([np.full(S2.size, 3.75), mu], axis=1)
    rng = np.random.default_rng(11)
    decisions = []
    for t in range(TRIALS):
        a, b = draw(rng, mu), draw(rng, mu)
        law = law_test([size(*a, 1), size(*b, 2)], [100, 200], ladder, S2, n_boot=N_BOOT,
                       seed=t)
        decisions.append(law.verdict.decision)
    decisions = np.array(decisions)
    lo, _ = band()
    assert np.mean(decisions == SUPPORTED) <= 1 - lo
    assert np.mean(decisions == NOT_SUPPORTED) <= 2 * (1 - lo)


def test_law_power_against_a_clear_crossing():
    small, large = concave(2.2, 0.8, 6.0), concave(1.4, 2.4, 12.0)
    ladder = np.stack([np.full(S2.size, 3.75), concave(1.0, 3.0, 30.0)], axis=1)
    rng = np.random.default_rng(5)
    wins = 0
    for t in range(200):
        law = law_test([size(*draw(rng, small), 1), size(*draw(rng, large), 2)], [1, 2],
                       ladder, S2, n_boot=N_BOOT, seed=t)
        wins += law.verdict.decision == SUPPORTED
    assert wins / 200 >= 0.7


def test_seed_bootstrap_replicate_variance_is_s2_over_n_plus_mc():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 2))
    mc = np.array([[0.04, 0.01], [0.01, 0.09]])
    reps = seed_bootstrap(x, n_boot=200000, seed=1, mc_cov=mc)
    want = np.cov(x, rowvar=False) / 10 + mc
    np.testing.assert_allclose(np.cov(reps, rowvar=False), want, rtol=0.03, atol=1.5e-3)
    assert np.isnan(percentile_interval(0.0, reps[:, 0], 1).lo)  # one seed: no interval
