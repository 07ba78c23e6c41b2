"""The engine's analysis layer: the one error bar of a seed-mean (against numpy and by
Monte Carlo coverage), cell selection, the best-scale helpers, verdict counts."""

import warnings

import numpy as np
import pytest
import xarray as xr

from iclsim.engine import analysis as A


@pytest.mark.parametrize("prompts", ["shared", "independent"])
def test_error_bar_equals_an_independent_numpy_computation(prompts):
    rng = np.random.default_rng(1)
    values = rng.normal(2.0, 0.3, size=(4, 5, 7))
    se = rng.uniform(0.01, 0.2, size=values.shape)
    values[1, 2, [0, 3]] = np.nan  # diverged seeds: left out with their SEs
    err = A.seed_mean_error(values, se, axis=-1, prompts=prompts)
    for i in range(4):
        for j in range(5):
            keep = np.isfinite(values[i, j])
            v, s = values[i, j][keep], se[i, j][keep]
            n = v.size
            mc = np.mean(s ** 2) if prompts == "shared" else np.mean(s ** 2) / n
            expect = np.sqrt(np.var(v, ddof=1) / n + mc)
            assert err[i, j] == pytest.approx(expect, rel=1e-12)
    # any axis: the seeds on axis 0 give the same numbers
    np.testing.assert_allclose(A.seed_mean_error(np.moveaxis(values, -1, 0),
                                                 np.moveaxis(se, -1, 0), axis=0,
                                                 prompts=prompts), err)
    # exact evaluation: no MC term, the bar is the seed SE
    v = values[0, 0]
    assert A.seed_mean_error(v, prompts=prompts) == pytest.approx(
        np.std(v, ddof=1) / np.sqrt(v.size))
    assert A.seed_mean_error(v, np.zeros_like(v), prompts=prompts) == pytest.approx(
        A.seed_mean_error(v, prompts=prompts))
    # one seed: the MC error alone; no seed: NaN
    assert A.seed_mean_error([3.0, np.nan], [0.5, 9.0], prompts=prompts) == pytest.approx(0.5)
    assert np.isnan(A.seed_mean_error([np.nan, np.nan], [0.5, 0.5], prompts=prompts))


def test_how_the_seeds_were_evaluated_must_be_stated():
    with pytest.raises(TypeError):
        A.seed_mean_error([1.0, 2.0], [0.1, 0.1])  # noqa: the keyword has no default
    with pytest.raises(ValueError, match="prompts must be one of"):
        A.seed_mean_error([1.0, 2.0], [0.1, 0.1], prompts="same")


def test_seed_mean_on_xarray_masks_and_matches_numpy():
    rng = np.random.default_rng(2)
    values = xr.DataArray(rng.normal(size=(3, 6)), dims=("rank", "seed"))
    se = xr.DataArray(rng.uniform(0.1, 0.2, size=(3, 6)), dims=("rank", "seed"))
    ok = xr.DataArray(np.arange(6) != 4, dims=("seed",))
    mean, err = A.seed_mean(values, se, ok=ok, prompts="shared")
    assert mean.dims == ("rank",) and err.dims == ("rank",)
    v, s = values.values[:, ok.values], se.values[:, ok.values]
    np.testing.assert_allclose(mean.values, v.mean(axis=1))
    np.testing.assert_allclose(err.values, np.sqrt(v.var(axis=1, ddof=1) / v.shape[1]
                                                   + np.mean(s ** 2, axis=1)))


def _coverage(rng, *, trials, seeds, tau, sigma, common=False, prompts="independent"):
    """Fraction of trials whose mean ± 1.96·err covers the true mean 0: per seed a true
    value θ_i ~ N(0, τ²), estimated with Monte Carlo noise of SD σ_i (σ_i drawn around
    ``sigma``, reported as its SE): independent per seed, or (``common``) one standard
    normal draw shared by every seed of a trial, as when seeds share their prompts."""
    theta = rng.normal(0.0, tau, size=(trials, seeds))
    sd = sigma * rng.uniform(0.5, 1.5, size=(trials, seeds))
    z = rng.normal(size=(trials, 1 if common else seeds))
    x = theta + z * sd
    err = A.seed_mean_error(x, sd, prompts=prompts)
    return float(np.mean(np.abs(x.mean(axis=1)) <= 1.96 * err))


TRIALS = 20000
#: binomial SE of a measured coverage near 0.95 over TRIALS trials: √(0.95·0.05/20000) ≈ 0.0015
BAND = 4 * np.sqrt(0.95 * 0.05 / TRIALS)  # ± 4 SE ≈ ± 0.006


def test_coverage_is_nominal_when_seeds_dominate():
    """Seed spread ≫ MC error: the bar is the seed SE; with 40 seeds the 1.96 interval covers
    at P(|t₃₉| ≤ 1.96) ≈ 0.943, within the binomial band of the measurement."""
    from scipy import stats

    got = _coverage(np.random.default_rng(3), trials=TRIALS, seeds=40, tau=1.0, sigma=0.01)
    shared = _coverage(np.random.default_rng(3), trials=TRIALS, seeds=40, tau=1.0, sigma=0.01,
                       prompts="shared")
    assert abs(shared - got) <= BAND  # the MC term is negligible either way
    expect = 2 * stats.t.cdf(1.96, 39) - 1
    assert abs(got - expect) <= BAND, (got, expect)
    assert abs(got - 0.95) <= 0.01


def test_coverage_is_at_least_nominal_when_mc_error_dominates():
    """No seed spread, independent per-seed MC noise: s²/n already holds the MC variance, so
    the added mean(SE²)/n makes the bar √2 too wide — conservative, coverage ≈ P(|Z| ≤ 1.96·√2)
    ≈ 0.994 (not below nominal)."""
    from scipy import stats

    got = _coverage(np.random.default_rng(4), trials=TRIALS, seeds=40, tau=0.0, sigma=1.0)
    expect = 2 * stats.norm.cdf(1.96 * np.sqrt(2)) - 1
    assert abs(got - expect) <= BAND, (got, expect)
    assert got >= 0.95 - BAND
    # without the MC term (the seed SE alone) a one-seed bar would be 0: the MC term is what
    # keeps a bar when the seeds cannot show the scatter
    assert A.seed_mean_error([0.3], [0.2], prompts="independent") == pytest.approx(0.2)


def test_coverage_when_the_seeds_share_their_prompts():
    """No seed spread, one Monte Carlo error common to all 40 seeds (shared prompts): x̄ − θ̄
    is that one error, SD mean(σ_i) ≈ σ.  The shared bar √(s²/n + mean SE²) ≈ √(mean σ_i²)
    is slightly wider than mean σ_i (σ_i ~ σ·U(0.5, 1.5): ratio √(13/12) ≈ 1.04), coverage
    ≈ P(|Z| ≤ 1.96·1.04) ≈ 0.958, at least nominal.  Power: the independent rule divides the
    common error by √40 and covers only ≈ P(|Z| ≤ 1.96·1.04/√40) ≈ 0.26."""
    from scipy import stats

    shared = _coverage(np.random.default_rng(5), trials=TRIALS, seeds=40, tau=0.0, sigma=1.0,
                       common=True, prompts="shared")
    ratio = np.sqrt(13 / 12)
    assert abs(shared - (2 * stats.norm.cdf(1.96 * ratio) - 1)) <= 2 * BAND, shared
    assert shared >= 0.95 - BAND
    independent = _coverage(np.random.default_rng(5), trials=TRIALS, seeds=40, tau=0.0,
                            sigma=1.0, common=True, prompts="independent")
    assert independent < 0.4, independent


def test_first_cell_and_first_coords():
    da = xr.DataArray(np.arange(24).reshape(2, 3, 4), dims=("learning_rate", "rank", "seed"),
                      coords={"learning_rate": [0.1, 0.2], "rank": [1, 2, 3]})
    ds = xr.Dataset({"x": da})
    got = A.first_cell(ds, "x", ("learning_rate", "init_scale"))  # init_scale: not a dim
    assert got.dims == ("rank", "seed")
    np.testing.assert_array_equal(got.values, da.values[0])
    np.testing.assert_array_equal(A.first_cell(da, None, ("rank",)).values, da.values[:, 0])
    assert A.first_coords(ds, ("learning_rate", "rank")) == {"learning_rate": 0.1, "rank": 1}


def _best_ds(rng):
    dims = ("rank", "seed", "learning_rate", "init_scale", "label_noise", "input_noise")
    shape = (3, 4, 2, 2, 5, 2)
    risk = rng.uniform(0.5, 2.0, size=shape)
    diverged = rng.random(shape) < 0.15
    diverged[1, :, :, :, 3, 1] = True  # every run of rank 2 diverged at one level
    coords = {"rank": [1, 2, 4], "seed": np.arange(4), "learning_rate": [0.1, 0.2],
              "init_scale": [1.0, 0.5], "label_noise": np.linspace(0, 1, 5),
              "input_noise": [0.0, 0.3]}
    return xr.Dataset({"eval_risk": (dims, risk), "diverged": (dims, diverged),
                       "trivial_risk": ((), 1.2)}, coords=coords,
                      attrs={"scale_axis": "rank", "tuning_axes": "learning_rate init_scale"})


def _numpy_best(ds, other_index):
    risk = np.where(ds["diverged"].values, np.nan, ds["eval_risk"].values)
    risk = risk[..., other_index]  # (rank, seed, lr, init, label_noise)
    with warnings.catch_warnings():  # all-NaN slices (every seed diverged) give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        seed_mean = np.nanmean(risk, axis=1)
        best_tuned = np.nanmin(seed_mean.reshape(3, 4, -1), axis=1)  # (rank, label_noise)
    table = np.vstack([np.full((1, 5), 1.2), np.where(np.isnan(best_tuned), np.inf, best_tuned)])
    scales = np.array([0, 1, 2, 4], float)
    return scales[np.argmin(table, axis=0)]


@pytest.mark.parametrize("other_index", [0, 1])
def test_best_scale_helpers_match_a_numpy_argmin(other_index):
    ds = _best_ds(np.random.default_rng(5))
    got = A.best_scale_along(ds, "label_noise", "input_noise", other_index=other_index)
    expect = _numpy_best(ds, other_index)
    np.testing.assert_array_equal(got, expect)
    for k, s2 in enumerate(ds["label_noise"].values):
        at = A.best_scale_at(ds, label_noise=s2,
                             input_noise=ds["input_noise"].values[other_index])
        assert at == int(expect[k])


def test_best_scale_at_is_minus_one_when_every_run_diverged():
    ds = _best_ds(np.random.default_rng(6))
    ds["diverged"][:] = True
    assert A.best_scale_at(ds, label_noise=0.0, input_noise=0.0) == -1


def test_verdict_counts_and_text_keep_first_occurrence_order():
    names = np.array([["not_converged", "optimum_reached"], ["optimum_reached", "collapsed"]])
    assert A.verdict_counts(names) == {"not_converged": 1, "optimum_reached": 2, "collapsed": 1}
    assert A.verdict_text(names) == "not_converged x1, optimum_reached x2, collapsed x1"


def test_sweep_line():
    ds = xr.Dataset(attrs={"config_hash": "abc", "compiles": 3, "wall_time_s": 1.25,
                           "device_count": 1, "device_kind": "cpu"})
    assert A.sweep_line(ds, "parity") == "parity sweep abc: 3 compile(s), 1.2 s on 1 x cpu"


def test_draw_all_plan_order_and_conditions():
    from iclsim.engine import figures as F

    ds = xr.Dataset(coords={"label_noise": [0.0, 0.5], "input_noise": [0.0], "step": [1, 2]})
    noise = (lambda d, kind, out, fmts: [f"noise-{kind}"],
             {"label_noise": "label", "input_noise": "input"})
    plan = ((True, lambda d, out, fmts: ["always"]), (False, lambda d, out, fmts: ["never"]),
            (lambda d: d.label_noise.size == 2, lambda d, out, fmts: ["callable"]))
    got = F.draw_all(ds, None, ("png",), plan, noise=noise,
                     training=lambda d, out, fmts: ["training"])
    assert got == ["noise-label", "always", "callable", "training"]
    assert F.draw_all(ds.drop_vars("step"), None, ("png",), training=lambda *a: ["t"]) == []
