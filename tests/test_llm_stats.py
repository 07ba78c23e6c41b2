"""iclsim.llm.stats: the t intervals over seeds have their nominal coverage (simulation from
benchmarks/llm_interval_coverage.py), the check can fail (the replaced two-stage bootstrap and
a normal-quantile interval are caught), the degenerate fallbacks (Wilson / Newcombe) by hand,
and the power statement and planning helper against Monte Carlo."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from iclsim.llm import stats

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "llm_interval_coverage.py"
_spec = importlib.util.spec_from_file_location("llm_interval_coverage", _PATH)
cov = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cov)

N_DATA = 4000  # simulated datasets per coverage check
# a 95 % interval covers with probability 0.95; over 4000 independent datasets the observed
# coverage has binomial SE sqrt(0.95 * 0.05 / 4000) = 0.0034, so +-2 points is ~6 SE: a
# correct interval fails this by chance with probability ~1e-9, and an interval whose true
# coverage is 92.5 % or lower fails it with probability > 0.999.
TOL = 0.02
SEEDS = (3, 5, 10)


def _data(n_seeds, sd, n=N_DATA, acc=cov.ACC):
    return cov.simulate(np.random.default_rng([7, n_seeds, int(100 * sd)]), n, n_seeds, 40, sd,
                        acc=acc)


@pytest.mark.parametrize("n_seeds", SEEDS)
@pytest.mark.parametrize("sd", (0.1, 0.0))
def test_accuracy_interval_coverage(n_seeds, sd):
    # measured (benchmark): sd 0.1: 94.8 / 94.5 / 95.2 %; sd 0: 96.4 / 94.4 / 94.6 %
    c = cov.t_coverage(_data(n_seeds, sd), "acc")
    assert abs(c - 0.95) <= TOL, c


@pytest.mark.parametrize("n_seeds", SEEDS)
@pytest.mark.parametrize("kind", ("drop", "diff"))
def test_paired_drop_and_difference_of_drops_coverage(n_seeds, kind):
    c = cov.t_coverage(_data(n_seeds, 0.1), kind)
    assert abs(c - 0.95) <= TOL, (kind, c)


def test_coverage_check_can_fail():
    # the replaced two-stage bootstrap (measured 87 % at 3 seeds) and the t interval with
    # the normal quantile (81 %) are caught; 1000 datasets for the bootstrap: SE 1.1 points
    data = _data(3, 0.1, n=1000)
    assert cov.old_bootstrap_coverage(data) < 0.93
    assert cov.z_coverage(_data(3, 0.1)) < 0.93


def test_paired_interval_is_narrower_than_unpaired():
    # the shared seed effect cancels in the per-seed drop
    d = _data(5, 0.1, n=200)
    paired = stats.contrast_ci_batch([d["a0"], d["ap"]], [1, -1])
    a = stats.contrast_ci_batch([d["a0"]], [1])
    b = stats.contrast_ci_batch([d["ap"]], [1])
    assert np.mean(paired["hi"] - paired["lo"]) < 0.8 * np.mean(
        np.hypot(a["hi"] - a["lo"], b["hi"] - b["lo"]))


def test_t_interval_by_hand_and_pooling_unit():
    rng = np.random.default_rng(0)
    v = (rng.random((3, 4, 16)) < 0.7).astype(float)  # (tasks, seeds, queries)
    units = v.mean(axis=(0, 2))  # per seed, averaged over tasks
    half = sps.t.ppf(0.975, 3) * units.std(ddof=1) / 2
    r = stats.accuracy_ci(v)
    assert r.method == "t" and r.n_seeds == 4
    np.testing.assert_allclose([r.mean, r.lo, r.hi], [v.mean(), v.mean() - half,
                                                      v.mean() + half], atol=1e-12)
    np.testing.assert_allclose(stats.seed_units(v), units)
    # a 90 % interval sits inside the 99 % one
    r90, r99 = stats.accuracy_ci(v, level=0.9), stats.accuracy_ci(v, level=0.99)
    assert r99.lo < r90.lo < r.mean < r90.hi < r99.hi
    # keep: a left-out (task, seed) run; that seed averages the tasks it has
    keep = np.ones((3, 4), bool)
    keep[1, 2] = False
    u = stats.seed_units(v, keep)
    assert u[2] == pytest.approx(v[[0, 2], 2].mean()) and u[0] == pytest.approx(units[0])
    keep[:, 3] = False  # a seed with nothing kept is dropped
    assert stats.accuracy_ci(v, keep=keep).n_seeds == 3
    # paired drop: t on per-seed differences
    w = (rng.random((3, 4, 16)) < 0.5).astype(float)
    dx = v.mean(axis=(0, 2)) - w.mean(axis=(0, 2))
    half = sps.t.ppf(0.975, 3) * dx.std(ddof=1) / 2
    r = stats.paired_diff_ci(v, w)
    np.testing.assert_allclose([r.lo, r.hi], [dx.mean() - half, dx.mean() + half], atol=1e-12)
    r4 = stats.drop_diff_ci(v, w, w, v)  # (v - w) - (w - v) = 2 (v - w)
    np.testing.assert_allclose([r4.mean, r4.lo, r4.hi], [2 * r.mean, 2 * r.lo, 2 * r.hi])
    # margins (continuous) are not clipped; accuracies are
    m = stats.mean_ci(rng.standard_normal((3, 16)) + 0.9)
    assert m.method == "t"
    near = np.ones((3, 16))
    near[0, 0] = 0.0
    assert stats.accuracy_ci(near).hi == 1.0


def test_degenerate_fallbacks():
    level = 0.95
    z = sps.norm.ppf(0.975)
    # all correct in every seed: Wilson on 48/48, not a zero-width interval
    r = stats.accuracy_ci(np.ones((3, 16)))
    assert r.method == "wilson" and r.hi == 1.0
    assert r.lo == pytest.approx(48 / (48 + z * z))  # Wilson lower bound at k = n
    assert r.lo == pytest.approx(0.9259, abs=1e-4)
    # every seed at the same count (zero spread, not at the edge)
    same = np.zeros((4, 10))
    same[:, :7] = 1
    r = stats.accuracy_ci(same)
    assert r.method == "wilson"
    assert (r.lo, r.hi) == pytest.approx(stats.wilson(28, 40, level))
    # one seed: Wilson on its queries
    one = stats.accuracy_ci(same[:1])
    assert one.method == "wilson" and one.n_seeds == 1 and np.isnan(one.sd)
    assert (one.lo, one.hi) == pytest.approx(stats.wilson(7, 10))
    # a difference with zero spread: Newcombe's hybrid score interval from two Wilsons
    a = np.ones((3, 16))
    b = np.zeros((3, 16))
    b[:, :12] = 1  # 36/48 in every seed: the drop 0.25 in every seed
    r = stats.paired_diff_ci(a, b)
    la, ua = stats.wilson(48, 48)
    lb, ub = stats.wilson(36, 48)
    assert r.method == "newcombe"
    assert r.lo == pytest.approx(0.25 - np.hypot(1 - la, ub - 0.75))
    assert r.hi == pytest.approx(0.25 + np.hypot(ua - 1, 0.75 - lb))
    # identical arrays: zero difference but a non-zero width
    r = stats.paired_diff_ci(a, a)
    assert r.mean == 0 and r.lo < 0 < r.hi
    # difference of drops: four Wilsons, range [-2, 2]
    r = stats.drop_diff_ci(a, b, b, a)
    assert r.method == "newcombe" and r.mean == pytest.approx(0.5) and r.lo < 0.5 < r.hi <= 2
    # continuous data: every cell equal -> exact; one seed -> t over the queries
    assert stats.mean_ci(np.full((3, 4), 2.5))[:4] == (2.5, 2.5, 2.5, "exact")
    x = np.random.default_rng(1).standard_normal((1, 30))
    r = stats.mean_ci(x)
    assert r.method == "t-cells"
    assert (r.lo, r.hi) == pytest.approx(stats.t_interval(x[0])[1:])
    # nothing kept
    assert stats.accuracy_ci(same, keep=np.zeros(4, bool)).method == "none"


def test_batch_equals_scalar():
    d = _data(3, 0.1, n=50)
    d["a0"][0] = 1.0  # one all-correct dataset: the fallback inside a batch
    res = stats.contrast_ci_batch([d["a0"], d["ap"]], [1, -1])
    for i in (0, 1, 17):
        r = stats.paired_diff_ci(d["a0"][i], d["ap"][i])
        assert (r.mean, r.lo, r.hi, r.method) == pytest.approx(
            (res["mean"][i], res["lo"][i], res["hi"][i], res["method"][i]))


def test_detectable_difference_against_monte_carlo():
    # normal per-seed differences with the true mean set to the detectable difference: the
    # two-sided paired t test at 5 % rejects in 80 % of 20000 datasets (SE 0.28 points)
    rng = np.random.default_rng(3)
    for n in (3, 5, 10):
        delta = stats.detectable_difference(0.1, n)
        x = delta + 0.1 * rng.standard_normal((20_000, n))
        t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / np.sqrt(n))
        power = np.mean(np.abs(t) > sps.t.ppf(0.975, n - 1))
        assert abs(power - 0.8) < 3 * np.sqrt(0.8 * 0.2 / 20_000), (n, power)
    # scales with sd, shrinks with n, the (t + t) approximation is close for n >= 10
    assert stats.detectable_difference(0.2, 10) == pytest.approx(
        2 * stats.detectable_difference(0.1, 10))
    approx = (sps.t.ppf(0.975, 39) + sps.t.ppf(0.8, 39)) * 0.1 / np.sqrt(40)
    assert stats.detectable_difference(0.1, 40) == pytest.approx(approx, rel=0.01)
    assert stats.detectable_difference(0.1, 1) == np.inf
    assert stats.detectable_difference(0.0, 5) == 0.0


@pytest.mark.parametrize("shared", (False, True))
def test_planning_sd_against_monte_carlo(shared):
    # the planning assumptions, simulated: per model and seed a true drop with sd drop_sd,
    # Q Bernoulli queries at p = 0 (0.75) and p (0.6); "shared": the two flip fractions
    # score a query with the same uniform (correlation (min - p0 pp) / sqrt(v0 vp) = 0.707)
    rng = np.random.default_rng(4)
    n, q, drop_sd, p0, pp = 20_000, 32, 0.05, 0.75, 0.6

    def drops():
        tp = np.clip(pp + drop_sd * rng.standard_normal((n, 1)), 0, 1)
        u = rng.random((n, q))
        up = u if shared else rng.random((n, q))
        return (u < p0).mean(axis=1) - (up < tp).mean(axis=1)

    d = drops() - drops()
    rho = (min(p0, pp) - p0 * pp) / np.sqrt(p0 * (1 - p0) * pp * (1 - pp)) if shared else 0.0
    want = stats.planning_sd_of_drop_difference(q, drop_sd=drop_sd, acc=p0, acc_flipped=pp,
                                                query_correlation=rho)
    # 20000 seeds: relative SE of an sd about 1 / sqrt(2 n) = 0.5 %; allow 2 %
    assert d.std(ddof=1) == pytest.approx(want, rel=0.02)


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        stats.accuracy_ci(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="level"):
        stats.accuracy_ci(np.ones((2, 2)), level=95)
    with pytest.raises(ValueError, match="one shape"):
        stats.paired_diff_ci(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="keep"):
        stats.accuracy_ci(np.ones((2, 2)), keep=np.ones(3, bool))
