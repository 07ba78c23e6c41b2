"""Setting 3: the references (Bayes, OLS, ridge) against independent computations, the
convergence rule, and a tiny sweep through the engine (the statistics themselves:
tests/test_transformer_stats.py)."""

import textwrap
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from lsa_reference import lsa_ladder  # noqa: E402

from iclsim.engine import setting as engine_setting
from iclsim.engine.config import ConfigError, apply_overrides, parse
from iclsim.engine.setting import Setting
from iclsim.engine.sweep import run_sweep
from iclsim.transformer import model as tfm
from iclsim.transformer import references as refs
from iclsim.transformer.sweep import (
    TRANSFORMER, TransformerSweepConfig, best_size, convergence, size_table, usable,
)


def _factor(lam):
    return jnp.asarray(np.linalg.cholesky(np.diag(lam)))


# ------------------------------------------------------------------------------ references

@pytest.mark.float64
def test_shrinkage_estimate_is_pinv_at_zero_and_ridge_above():
    rng = np.random.default_rng(0)
    est = jax.jit(refs.shrinkage_estimate)
    x, y = rng.standard_normal((3, 5)), rng.standard_normal(3)  # N = 3 < d = 5
    np.testing.assert_allclose(est(x, y, 0.0), np.linalg.pinv(x) @ y, atol=1e-12)
    x, y = rng.standard_normal((9, 4)), rng.standard_normal(9)
    np.testing.assert_allclose(est(x, y, 0.7), np.linalg.solve(x.T @ x + 0.7 * np.eye(4), x.T @ y),
                               atol=1e-12)
    np.testing.assert_allclose(est(x, y, 0.0), np.linalg.lstsq(x, y, rcond=None)[0], atol=1e-12)


@pytest.fixture(scope="module")
def anisotropic_refs():
    lam, n, s2 = np.array([2.0, 1.0, 0.3]), 10, np.array([0.0, 2.0])
    with jax.enable_x64(True):  # a module fixture: set up outside the tests' own dtype
        out = refs.reference_risks(jax.random.key(0), _factor(lam), n, s2, n_prompts=8192,
                                   batch=1024, ridge_lambda=(0.1, 50.0))
    return lam, n, s2, out


@pytest.mark.float64
def test_ols_risk_matches_its_closed_form(anisotropic_refs):
    """E[(x_qᵀ(X⁺ỹ − w))²] = σ² tr(Λ E[(XᵀX)⁻¹]) = σ² d/(N − d − 1) for N > d + 1, any Λ."""
    lam, n, s2, out = anisotropic_refs
    mean, se = out["ols"]
    d = lam.size
    assert mean[0] < 1e-16
    want = s2[1] * d / (n - d - 1)
    assert abs(mean[1] - want) < 4 * se[1], (mean[1], want, se[1])


@pytest.mark.float64
def test_bayes_risk_matches_posterior_variance(anisotropic_refs):
    """The risk of the posterior mean is E[tr(Λ Σ_post)], Σ_post = σ²(XᵀX + σ²I)⁻¹: computed here
    from independent numpy draws of X only (no labels, no predictor)."""
    lam, n, s2, out = anisotropic_refs
    mean, se = out["bayes"]
    assert mean[0] < 1e-16  # N ≥ d: the clean context pins w down
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20000, n, lam.size)) * np.sqrt(lam)
    post = s2[1] * np.linalg.inv(np.einsum("bni,bnj->bij", x, x) + s2[1] * np.eye(lam.size))
    v = np.einsum("bii->b", post * lam[None, :, None])
    want, want_se = v.mean(), v.std() / np.sqrt(v.size)
    assert abs(mean[1] - want) < 4 * np.hypot(se[1], want_se), (mean[1], want)
    # The floor: nothing on the same prompts does better (OLS, ridge at λ ≠ σ²).
    assert mean[1] < out["ols"][0][1]
    assert np.all(mean[1] < out["ridge"][0][:, 1])


@pytest.mark.float64
def test_bayes_risk_in_one_dimension_by_quadrature():
    """d = 1: risk = λ E[σ²/(λ χ²_N + σ²)], a one-dimensional integral over the χ²_N density."""
    lam, n, s2 = 1.5, 4, 3.0
    out = refs.reference_risks(jax.random.key(2), _factor([lam]), n, [s2], n_prompts=16384,
                               batch=2048)
    mean, se = out["bayes"]
    want = integrate.quad(lambda q: lam * s2 / (lam * q + s2) * stats.chi2.pdf(q, n), 0, np.inf)[0]
    assert abs(mean[0] - want) < 4 * se[0], (mean[0], want, se[0])


# ----------------------------------------------------------------------------- convergence

def test_convergence_rule_separates_flat_from_falling_losses():
    """A flat noisy loss converges; one still falling by 10 % over the last fifth does not;
    a loss whose level at 80 % of steps is 20 % above the end fails the second criterion even
    when its last window is flat."""
    rng = np.random.default_rng(0)
    steps = 2000
    t = np.arange(steps)
    noise = 0.05 * rng.standard_normal((3, 200, steps))
    flat = 1.0 + noise[0]
    falling = 1.0 + 0.5 * np.exp(-t / 1500.0) + noise[1]
    step_down = 1.0 + 0.2 * (t < 0.8 * steps) + noise[2]
    ok = [convergence(x)[0].mean() for x in (flat, falling, step_down)]
    assert ok[0] >= 0.9  # 2-SE rule on the slope: ~95 % pass when flat
    assert ok[1] == 0.0 and ok[2] == 0.0
    # The rule as written: recomputed with numpy for one run.
    x = falling[0]
    w = int(np.ceil(0.2 * steps))
    slope, _ = np.polyfit(np.arange(w), x[-w:], 1)
    assert convergence(x[None])[1][0] == pytest.approx(slope, rel=1e-9)


# -------------------------------------------------------------------- config, engine, e2e

def test_registered_and_implements_the_contract():
    assert isinstance(TRANSFORMER, Setting)
    assert engine_setting.get_setting("transformer") is TRANSFORMER


@pytest.mark.parametrize("override, match", [
    ({"model": {"heads": [1, 2], "width": [8], "layers": [1, 1]}}, "equal lengths"),
    ({"axes": {"size": [1, 5]}}, "axes.size: 5 is out of range"),
])
def test_config_errors_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        parse(TransformerSweepConfig, {"name": "x", "setting": "transformer", **override})


TINY = textwrap.dedent(
    """
    name = "tiny_transformer"
    setting = "transformer"
    [spectrum]
    values = [1.0, 0.25]
    [model]
    heads = [1, 2]
    width = [8, 8]
    layers = [1, 2]
    head_dim = 2
    mlp_ratio = 2
    [train]
    steps = 100
    chunk_steps = 50
    warmup_steps = 10
    batch = 32
    loss_every = 5
    [axes]
    size = [1, 2]
    seeds = 2
    learning_rate = [1e-12, 0.01]
    n_context = [8]
    [eval]
    label_noise = [0.0, 1.0, 4.0]
    n_prompts = 1024
    batch = 256
    ridge_lambda = [1.0]
    trivial_tolerance = 0.15
    converged_tolerance = 1.0
    """
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("transformer")
    overrides = [f"output_dir='{root}'", "figures.formats=['png']"]
    cfg = parse(TransformerSweepConfig, apply_overrides(tomllib.loads(TINY), overrides))
    return cfg, run_sweep(cfg, TRANSFORMER, quiet=True)


def test_tiny_sweep_end_to_end(tiny):
    cfg, out = tiny
    ds = out.dataset
    assert out.compiles == 1  # both sizes, both learning rates: one program
    assert ds["eval_risk"].dims == ("n_context", "size", "seed", "learning_rate", "init_scale",
                                    "train_label_noise", "label_noise", "input_noise")
    assert ds["input_noise"].values.tolist() == [0.0]  # the default: label noise only
    verdicts = ds["verdict"]
    # A learning rate of 1e-12 never leaves the initial predictor: trivial, not trained.
    assert (verdicts.sel(learning_rate=1e-12) == "trivial").all()
    # The others: the convergence rule on the stored loss slope and 80 % drop.
    trained = verdicts.sel(learning_rate=0.01)
    assert trained.isin(["converged", "not_converged"]).all()
    # (converged_tolerance = 1.0 here: only the slope criterion can fail.)
    flat = (np.abs(ds["loss_slope"]) <= 2 * ds["loss_slope_se"]).sel(learning_rate=0.01)
    np.testing.assert_array_equal(trained == "converged", flat)
    assert not ds["diverged"].any()
    # Trivial runs count as excluded for this setting's aggregates.
    assert bool(usable(ds)["diverged"].sel(learning_rate=1e-12).all())
    # The paired gap is eval_risk − bayes_risk: the Bayes reference of the oracle and the runs
    # were evaluated on the same prompts.
    gap = ds["eval_risk"] - ds["bayes_risk"]
    np.testing.assert_allclose(ds["bayes_gap"], gap, rtol=0, atol=1e-5)  # float32 rounding
    assert float(ds["bayes_risk"].sel(label_noise=0.0).squeeze()) < 1e-12  # N ≥ d
    # Trained models beat ŷ = 0 on clean prompts, and never the Bayes floor.
    trained = ds["eval_risk"].sel(learning_rate=0.01, label_noise=0.0)
    assert (trained < float(ds["trivial_risk"])).all()
    assert (ds["bayes_gap"].sel(learning_rate=0.01) > 0).all()
    # The stored ladder is (B) with σ_x² = 0, recomputed here from the theory page.
    ladder = lsa_ladder([1.0, 0.25], 8, cfg.eval.label_noise, 0.0)
    np.testing.assert_allclose(
        ds["ladder_risk"].squeeze().transpose("label_noise", "rank_all"), ladder, rtol=1e-12)
    # The Monte Carlo covariance across σ²: its diagonal is SE², it is a covariance (PSD), and
    # the paired difference of neighbouring levels is more precise than either risk alone
    # (same prompts), which is what the local slopes rest on.
    cell = ds.sel(learning_rate=0.01).squeeze()
    cov = cell["eval_mc_cov"].transpose("size", "seed", "label_noise", "label_noise_2").values
    se = cell["eval_se"].transpose("size", "seed", "label_noise").values
    np.testing.assert_allclose(np.diagonal(cov, axis1=-2, axis2=-1), se**2, rtol=1e-6)
    assert np.all(np.linalg.eigvalsh(cov) > -1e-9 * np.abs(cov).max())
    var_diff = cov[..., 0, 0] + cov[..., 1, 1] - 2 * cov[..., 0, 1]
    assert np.all(var_diff < cov[..., 0, 0] + cov[..., 1, 1])  # positively correlated levels
    np.testing.assert_array_equal(ds["param_count"], [tfm.param_count(2, 1, 8, 1, 2, 2),
                                                      tfm.param_count(2, 2, 8, 2, 2, 2)])


def test_tiny_sweep_tables_and_figures(tiny):
    cfg, out = tiny
    ds = out.dataset
    text = TRANSFORMER.summary(ds)
    assert "clean rung" in text and "best size" in text and "LSA r*" in text and "law:" in text
    tab = size_table(ds, n_context=8, learning_rate=0.01, init_scale=1.0, train_label_noise=0.0)
    conv = (ds["verdict"] == "converged").sel(learning_rate=0.01).squeeze()
    assert tab["n_ok"].tolist() == conv.sum("seed").values.tolist()
    for a, size in enumerate(ds["size"].values):
        want = ds["eval_risk"].sel(size=size, learning_rate=0.01).squeeze().where(
            conv.sel(size=size)).mean("seed")
        np.testing.assert_allclose(tab["risk"][a], want)
    # Without a learning rate given each size is tuned: lr 1e-12 is trivial, so 0.01.
    assert size_table(ds)["lr"].tolist() == [0.01, 0.01]
    best, support = best_size(ds, learning_rate=0.01, n_context=8, init_scale=1.0,
                              train_label_noise=0.0)
    # The best size recomputed: argmin over {0 (ŷ = 0: trivial_risk)} ∪ sizes of the seed-mean
    # risk at lr = 0.01 (the only learning rate with usable runs).
    means = ds["eval_risk"].sel(learning_rate=0.01).squeeze().where(conv).mean("seed") \
        .transpose("size", "label_noise").fillna(np.inf).values
    table = np.vstack([np.full(means.shape[1], float(ds["trivial_risk"])), means])
    np.testing.assert_array_equal(best, np.array([0, 1, 2])[np.argmin(table, axis=0)])
    # Only trivial runs at lr = 1e-12: no size is usable there.
    best0, _ = best_size(ds, learning_rate=1e-12, n_context=8, init_scale=1.0,
                         train_label_noise=0.0)
    assert np.all(np.isnan(best0))
    assert not out.figure_error
    assert {p.stem for p in out.figures} == {
        "transformer_risk_vs_label_noise", "transformer_best_size",
        "transformer_rung_and_sensitivity", "transformer_training_curves"}
