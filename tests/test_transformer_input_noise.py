"""Setting 3 with context input noise σ_x² at evaluation (``eval.input_noise``): the LSA ladder
against ``iclsim.linear.oracle.population_risk`` of Γ_r directly, the references (OLS, ridge)
against independent numpy draws, the Bayes reference left out where σ_x² > 0, and a tiny sweep
through ``run_sweep`` with input noise."""

import textwrap
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsa_reference import lsa_ladder  # noqa: E402

from iclsim.engine.config import apply_overrides, config_hash, parse
from iclsim.engine.sweep import run_sweep
from iclsim.linear import oracle
from iclsim.transformer import references as refs
from iclsim.transformer import sweep as tsweep
from iclsim.transformer.sweep import TRANSFORMER, TransformerSweepConfig, best_size, size_table

LAM = np.array([1.0, 0.5, 0.25])


def _cfg(**eval_keys):
    data = {"name": "x", "setting": "transformer", "spectrum": {"values": LAM.tolist()},
            "eval": eval_keys}
    return parse(TransformerSweepConfig, data)


def test_input_noise_defaults_to_zero_and_is_validated():
    cfg = _cfg()
    assert cfg.eval.input_noise == (0.0,)
    assert _cfg(input_noise=[0.0, 1.0]).eval.input_noise == (0.0, 1.0)
    with pytest.raises(Exception, match="input_noise"):
        _cfg(input_noise=[-1.0])
    # A new key with a default is part of the resolved config: hashes differ from before
    # it existed, but an explicit [0.0] and the default hash alike.
    assert config_hash(_cfg(input_noise=[0.0])) == config_hash(cfg)


@pytest.mark.parametrize("s0", [0.0, 3.0])
def test_ladder_with_input_noise_is_the_oracle_risk_of_gamma_r(s0):
    """R_r(σ², σ_x²) of the stored ladder = population_risk(Γ_r(σ₀²), σ², σ_x²), rank by rank
    (the general-Γ risk formula, not the closed form over eigenvalues the ladder uses)."""
    s2, sx2 = [0.0, 2.0, 7.0], [0.0, 0.3, 1.5]
    cfg = _cfg(label_noise=s2, input_noise=sx2)
    n = 9
    ladder = tsweep._ladder(cfg, n, s0)
    assert ladder.shape == (3, 3, LAM.size + 1)
    cov = np.diag(LAM)
    for r in range(LAM.size + 1):
        gamma = oracle.optimal_gamma(cov, n, r, pretrain_label_noise=s0)
        for a, v in enumerate(s2):
            for b, u in enumerate(sx2):
                want = oracle.population_risk(gamma, cov, n, label_noise=v, input_noise=u)
                assert ladder[a, b, r] == pytest.approx(want, rel=1e-12, abs=1e-12)
    # Input noise raises every rank's risk (r ≥ 1), never rank 0's (ŷ = 0 ignores the context).
    assert np.all(np.diff(ladder[:, :, 1:], axis=1) > 0)
    np.testing.assert_allclose(ladder[:, :, 0], LAM.sum())


def _numpy_risks(lam, n, s2, sx2, ridge_lambda, n_prompts, seed):
    """OLS and ridge risks on prompts drawn here with numpy (independent of the JAX sampler)."""
    rng = np.random.default_rng(seed)
    d = lam.size
    w = rng.standard_normal((n_prompts, d))
    x = rng.standard_normal((n_prompts, n, d)) * np.sqrt(lam)
    xq = rng.standard_normal((n_prompts, d)) * np.sqrt(lam)
    y = np.einsum("bnd,bd->bn", x, w) + np.sqrt(s2) * rng.standard_normal((n_prompts, n))
    xs = x + np.sqrt(sx2) * rng.standard_normal(x.shape)
    gram = np.einsum("bni,bnj->bij", xs, xs)
    rhs = np.einsum("bni,bn->bi", xs, y)
    out = {}
    for name, lam_r in (("ols", 0.0), ("ridge", ridge_lambda)):
        est = np.linalg.solve(gram + lam_r * np.eye(d), rhs[..., None])[..., 0]
        e = (np.sum((est - w) * xq, axis=1)) ** 2
        out[name] = (e.mean(), e.std() / np.sqrt(e.size))
    return out


def test_references_with_input_noise_against_numpy_draws():
    lam, n = LAM, 12
    s2, sx2 = [0.5], [0.0, 0.8]
    factor = jnp.asarray(np.linalg.cholesky(np.diag(lam)))
    out = refs.reference_risks(jax.random.key(5), factor, n, s2, n_prompts=4096, batch=2048,
                               ridge_lambda=(2.0,), input_noise=sx2)
    assert out["ols"][0].shape == (1, 2) and out["ridge"][0].shape == (1, 1, 2)
    want = _numpy_risks(lam, n, 0.5, 0.8, 2.0, 12000, 11)
    for name, got in (("ols", out["ols"]), ("ridge", (out["ridge"][0][0], out["ridge"][1][0]))):
        mean, se = got[0][0, 1], got[1][0, 1]
        ref, ref_se = want[name]
        assert abs(mean - ref) < 4 * np.hypot(se, ref_se), (name, mean, ref, se, ref_se)
    # Input noise hurts least squares (attenuation bias), on the same prompts.
    assert out["ols"][0][0, 1] > out["ols"][0][0, 0] + 4 * out["ols"][1][0, 1]
    # No Bayes number where σ_x² > 0; at σ_x² = 0 the same prompts as without input noise.
    assert np.isnan(out["bayes"][0][0, 1]) and np.isnan(out["bayes"][1][0, 1])
    plain = refs.reference_risks(jax.random.key(5), factor, n, s2, n_prompts=4096, batch=2048,
                                 ridge_lambda=(2.0,))
    np.testing.assert_array_equal(out["bayes"][0][:, 0], plain["bayes"][0])
    np.testing.assert_array_equal(out["ols"][0][:, 0], plain["ols"][0])


TINY = textwrap.dedent(
    """
    name = "tiny_transformer_input_noise"
    setting = "transformer"
    [spectrum]
    values = [1.0, 0.25]
    [model]
    heads = [1, 2]
    width = [8, 8]
    layers = [1, 1]
    head_dim = 2
    mlp_ratio = 1
    [train]
    steps = 40
    chunk_steps = 40
    warmup_steps = 5
    batch = 32
    loss_every = 5
    [axes]
    size = [1, 2]
    seeds = 2
    learning_rate = [0.01]
    n_context = [8]
    [eval]
    label_noise = [0.0, 2.0]
    input_noise = [0.0, 0.5, 2.0]
    n_prompts = 512
    batch = 256
    ridge_lambda = [1.0]
    trivial_tolerance = 0.0
    converged_tolerance = 1.0
    converged_window = 0.5
    [figures]
    formats = ["png"]
    """
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("transformer_input_noise")
    cfg = parse(TransformerSweepConfig,
                apply_overrides(tomllib.loads(TINY), [f"output_dir='{root}'"]))
    return cfg, run_sweep(cfg, TRANSFORMER, quiet=True)


@pytest.mark.slow  # 25-40 s: a training sweep (the references and ladder tests above stay)
def test_tiny_sweep_with_input_noise(tiny):
    cfg, out = tiny
    ds = out.dataset
    assert out.compiles == 1
    assert ds["eval_risk"].dims[-2:] == ("label_noise", "input_noise")
    assert ds["eval_mc_cov"].dims[-3:] == ("input_noise", "label_noise", "label_noise_2")
    conv = ds["verdict"] == "converged"
    # The stored ladder is (B) on the same (σ², σ_x²) grid, written in this test (not the
    # oracle that produced it), and r* is its smallest argmin over r.
    for u in cfg.eval.input_noise:
        want = lsa_ladder([1.0, 0.25], 8, cfg.eval.label_noise, u)
        np.testing.assert_allclose(
            ds["ladder_risk"].sel(input_noise=u).squeeze().transpose("label_noise", "rank_all"),
            want, rtol=1e-12)
        np.testing.assert_array_equal(ds["best_rank"].sel(input_noise=u).squeeze(),
                                      np.argmin(want, axis=1))
    # Bayes: a number at σ_x² = 0 only; there the paired gap is eval_risk − bayes_risk.
    assert np.isnan(ds["bayes_risk"].sel(input_noise=[0.5, 2.0])).all()
    assert np.isnan(ds["bayes_gap"].sel(input_noise=[0.5, 2.0])).all()
    clean = dict(input_noise=0.0)
    np.testing.assert_allclose(ds["bayes_gap"].sel(**clean),
                               (ds["eval_risk"] - ds["bayes_risk"]).sel(**clean), atol=1e-9)
    # OLS and every trained model are evaluated on the noisy inputs: risk rises with σ_x²
    # (at σ² = 0, where OLS is exact without input noise).
    ols = ds["ols_risk"].sel(label_noise=0.0).squeeze().values
    assert ols[0] < 1e-12 and ols[1] > 0.05 and ols[2] > ols[1]
    risk = ds["eval_risk"].sel(label_noise=0.0).mean("seed").squeeze()
    assert (risk.sel(input_noise=2.0) > risk.sel(input_noise=0.0)).all()
    # Tables: the label-noise table names σ_x²; the input-noise table and figure appear.
    text = TRANSFORMER.summary(ds)
    assert "Risk vs context input noise σ_x² at σ²=0" in text
    assert "input σ_x²=0" in text
    tab = size_table(ds, n_context=8, learning_rate=0.01, init_scale=1.0,
                     train_label_noise=0.0, input_noise=2.0)
    np.testing.assert_allclose(tab["risk"][1], ds["eval_risk"].where(conv).sel(
        size=2, input_noise=2.0).squeeze().mean("seed").transpose("label_noise"))
    best, support = best_size(ds, axis="input_noise", n_context=8, learning_rate=0.01,
                              init_scale=1.0, train_label_noise=0.0, label_noise=0.0)
    # Recomputed: argmin over {0 (trivial_risk)} ∪ sizes of the seed-mean risk at σ² = 0.
    means = ds["eval_risk"].where(conv).sel(label_noise=0.0).squeeze().mean("seed") \
        .transpose("size", "input_noise").fillna(np.inf).values
    table = np.vstack([np.full(means.shape[1], float(ds["trivial_risk"])), means])
    np.testing.assert_array_equal(best, np.array([0, 1, 2])[np.argmin(table, axis=0)])
    assert not out.figure_error
    assert "transformer_risk_vs_input_noise" in {p.stem for p in out.figures}
