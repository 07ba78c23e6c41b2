"""Identities of the LSA models (float64): reference implementations, embeddings, padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from jax.test_util import check_grads
from hypothesis import strategies as st

from conftest import covariances, random_rotation
from iclsim import linear
from iclsim.linear import model as lsa

pytestmark = pytest.mark.float64  # identities of the float64 oracle / model code

D, N, B = 4, 6, 32


def _prompts(seed, d=D, n=N, b=B, cov=None):
    cov = np.eye(d) if cov is None else cov
    return linear.sample_prompts(jax.random.key(seed), cov, n, b)


def _random_full(seed, d=D, r=3, rank=None):
    rng = np.random.default_rng(seed)
    mask = lsa.rank_mask(r if rank is None else rank, r)
    weights = {
        "w_pv": jnp.asarray(rng.standard_normal((d + 1, d + 1))),
        "a": jnp.asarray(rng.standard_normal((d + 1, r))),
        "b": jnp.asarray(rng.standard_normal((d + 1, r))),
    }
    return {"weights": weights, "rank_mask": mask}


def _reduced_predictor(gamma, prompts):
    """ŷ = x_qᵀ Γ h, h = (1/N) Σ y_i x_i, written in numpy."""
    x, y, xq = (np.asarray(a) for a in (prompts.x, prompts.y, prompts.x_query))
    h = np.einsum("bn,bnd->bd", y, x) / y.shape[1]
    return np.einsum("bd,de,be->b", xq, np.asarray(gamma), h)


@pytest.mark.parametrize("seed", range(3))
def test_full_apply_matches_literal_spec_formula(seed):
    params = _random_full(seed)
    prompts = _prompts(seed)
    w = params["weights"]
    w_kq = (w["a"] * params["rank_mask"]) @ w["b"].T
    ref = lsa.apply_full_reference(w["w_pv"], w_kq, prompts)
    np.testing.assert_allclose(lsa.apply(params, prompts), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["reduced", "block"])
@pytest.mark.parametrize("rank", [1, 2, 4])
def test_full_lsa_with_block_weights_equals_reduced_predictor(kind, rank):
    cfg = lsa.LSAConfig(D, 4, kind)
    params = lsa.init(jax.random.key(rank), cfg, rank=rank, scale=0.7)
    prompts = _prompts(rank)
    gamma = lsa.effective_gamma(params)
    assert np.linalg.matrix_rank(np.asarray(gamma)) == rank
    want = _reduced_predictor(gamma, prompts)
    np.testing.assert_allclose(lsa.apply(params, prompts), want, rtol=1e-10, atol=1e-10)
    full = lsa.to_full(params)
    w = full["weights"]
    w_kq = (w["a"] * full["rank_mask"]) @ w["b"].T
    np.testing.assert_allclose(
        lsa.apply_full_reference(w["w_pv"], w_kq, prompts), want, rtol=1e-10, atol=1e-10
    )
    np.testing.assert_allclose(lsa.effective_gamma(full), gamma, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_full_effective_gamma_is_the_label_odd_part(seed):
    """ŷ(y) − ŷ(−y) = 2 x_qᵀ Γ_eff h for any full-LSA weights (the odd part in the labels)."""
    params = _random_full(seed)
    prompts = _prompts(seed + 10)
    flipped = prompts._replace(y=-prompts.y)
    odd = 0.5 * (lsa.apply(params, prompts) - lsa.apply(params, flipped))
    want = _reduced_predictor(lsa.effective_gamma(params), prompts)
    np.testing.assert_allclose(odd, want, rtol=1e-9, atol=1e-10)


def test_block_init_of_full_lsa_is_block_structured():
    cfg = lsa.LSAConfig(D, 3, "full", "block")
    params = lsa.init(jax.random.key(0), cfg, rank=2, scale=0.5)
    w = params["weights"]
    np.testing.assert_array_equal(w["w_pv"][:, :D], 0.0)
    np.testing.assert_array_equal(w["a"][D], 0.0)
    np.testing.assert_array_equal(w["b"][D], 0.0)
    np.testing.assert_array_equal(w["a"][:, 2:], 0.0)  # padded column


@pytest.mark.parametrize("kind", ["reduced", "block", "full"])
def test_padded_masked_equals_unpadded_forward_and_gradients(kind):
    rank, r_max = 2, 5
    small = lsa.init(jax.random.key(1), lsa.LSAConfig(D, rank, kind), rank=rank, scale=0.5)
    padded = jax.tree_util.tree_map(lambda a: a, small)
    pad = lambda a: jnp.concatenate([a, jnp.asarray(np.random.default_rng(0).standard_normal((a.shape[0], r_max - rank)))], axis=1)  # noqa: E731
    padded = {
        "weights": {**small["weights"], "a": pad(small["weights"]["a"]), "b": pad(small["weights"]["b"])},
        "rank_mask": lsa.rank_mask(rank, r_max),
    }
    prompts = _prompts(3)

    def loss(weights, params):
        p = {**params, "weights": weights}
        return jnp.mean((lsa.apply(p, prompts) - prompts.y_query) ** 2)

    np.testing.assert_allclose(lsa.apply(padded, prompts), lsa.apply(small, prompts), rtol=1e-12)
    g_small = jax.grad(loss)(small["weights"], small)
    g_pad = jax.grad(loss)(padded["weights"], padded)
    for name in g_small:
        if name in ("a", "b"):
            np.testing.assert_allclose(g_pad[name][:, :rank], g_small[name], rtol=1e-10, atol=1e-12)
        else:
            np.testing.assert_allclose(g_pad[name], g_small[name], rtol=1e-10, atol=1e-12)
    # The masked factor's padded columns get no gradient.
    np.testing.assert_array_equal(g_pad["a"][:, rank:], 0.0)


@given(covariances(min_d=1, max_d=5), st.floats(0, 5), st.floats(0, 2), st.integers(1, 30))
@settings(max_examples=20)
def test_jax_training_objective_equals_numpy_oracle(cov_lam_u, s2, sx2, n):
    cov, _, _ = cov_lam_u
    d = cov.shape[0]
    gamma = np.random.default_rng(n).standard_normal((d, d))
    got = float(lsa.reduced_population_risk(jnp.asarray(gamma), jnp.asarray(cov), n, s2, sx2))
    want = linear.population_risk(gamma, cov, n, label_noise=s2, input_noise=sx2)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-10)


def test_model_config_validation():
    with pytest.raises(ValueError, match="parametrization"):
        lsa.LSAConfig(3, 2, "diagonal")
    with pytest.raises(ValueError, match="init"):
        lsa.LSAConfig(3, 2, "reduced", "block")
    with pytest.raises(ValueError, match="r_max"):
        lsa.LSAConfig(3, 0)


def test_rotation_covariance_in_prompts():
    """sample_prompts draws x with covariance Λ: empirical second moment within 5 SE."""
    u = random_rotation(4, 3)
    cov = (u * np.array([3.0, 1.0, 0.2])) @ u.T
    p = linear.sample_prompts(jax.random.key(5), cov, 4, 20000)
    x = np.asarray(p.x).reshape(-1, 3)
    emp = x.T @ x / len(x)
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / len(x))
    assert np.all(np.abs(emp - cov) < 5 * se)


# --------------------------------------------------------------------------------------
# Stackable layers
# --------------------------------------------------------------------------------------

EPS = np.finfo(np.float64).eps


def _layer_tol(*arrays):
    """A float64 round-off bound: 1000 eps times the largest magnitude involved."""
    return 1e3 * EPS * max(1.0, *(float(np.max(np.abs(np.asarray(a)))) for a in arrays))


def _numpy_full_layer(w_pv, w_kq, tokens):
    """f(E) = E + W^{PV} E (Eᵀ W^{KQ} E)/N with E = Zᵀ, written literally in numpy (O(N²))."""
    z = np.asarray(tokens)
    emb = np.swapaxes(z, -1, -2)
    n = z.shape[-2] - 1
    out = emb + np.asarray(w_pv) @ emb @ (z @ np.asarray(w_kq) @ emb) / n
    return np.swapaxes(out, -1, -2)


def _random_params(kind, seed, d=D, r_max=3, rank=2, scale=0.8):
    if kind == "full":
        return _random_full(seed, d, r_max, rank)
    params = lsa.init(jax.random.key(seed), lsa.LSAConfig(d, r_max, kind), rank=rank, scale=scale)
    if kind == "block":
        params["weights"]["u"] = jnp.asarray(1.7)
    return params


def _zero_like(params):
    return {**params, "weights": jax.tree_util.tree_map(jnp.zeros_like, params["weights"])}


def test_prompt_tokens_layout():
    prompts = _prompts(0, b=5)
    z = lsa.prompt_tokens(prompts)
    assert z.shape == (5, N + 1, D + 1)
    np.testing.assert_array_equal(z[:, :N, :D], prompts.x)
    np.testing.assert_array_equal(z[:, :N, D], prompts.y)
    np.testing.assert_array_equal(z[:, N, :D], prompts.x_query)
    np.testing.assert_array_equal(z[:, N, D], 0.0)
    np.testing.assert_array_equal(lsa.read_prediction(z), 0.0)


@pytest.mark.parametrize("kind", ["full", "block", "reduced"])
@pytest.mark.parametrize("seed", range(2))
def test_layer_prediction_equals_apply(kind, seed):
    params = _random_params(kind, seed)
    prompts = _prompts(seed + 20)
    out = lsa.lsa_layer(params, lsa.prompt_tokens(prompts))
    assert out.shape == (B, N + 1, D + 1) and out.dtype == jnp.float64
    want = lsa.apply(params, prompts)
    np.testing.assert_allclose(lsa.read_prediction(out), want, rtol=0, atol=_layer_tol(want))
    stacked = lsa.apply_stack([params], prompts)
    np.testing.assert_allclose(stacked, want, rtol=0, atol=_layer_tol(want))


@pytest.mark.parametrize("kind", ["full", "block", "reduced"])
def test_layer_equals_literal_formula_on_all_tokens(kind):
    """Every output token (not just ŷ) is f(E) = E + W^{PV} E (Eᵀ W^{KQ} E)/N, for tokens whose
    query y-slot is not 0 (as inside a stack); block/reduced through their full embedding."""
    params = _random_params(kind, 3)
    tokens = np.array(lsa.prompt_tokens(_prompts(4)))
    tokens[:, N, D] = np.random.default_rng(0).standard_normal(B)
    full = lsa.to_full(params)
    w_kq = (full["weights"]["a"] * full["rank_mask"]) @ full["weights"]["b"].T
    want = _numpy_full_layer(full["weights"]["w_pv"], w_kq, tokens)
    got = lsa.lsa_layer(params, tokens)
    np.testing.assert_allclose(got, want, rtol=0, atol=_layer_tol(want))
    np.testing.assert_allclose(lsa.lsa_layer(full, tokens), want, rtol=0, atol=_layer_tol(want))


@pytest.mark.parametrize("kinds", [("full", "full"), ("reduced", "block"), ("block", "full")])
def test_two_stacked_layers_run_and_differentiate(kinds):
    layers = [_random_params(k, 5 + i, scale=0.5) for i, k in enumerate(kinds)]
    prompts = _prompts(6)

    def loss(weights):
        stack = [{**p, "weights": w} for p, w in zip(layers, weights)]
        return jnp.mean((lsa.apply_stack(stack, prompts) - prompts.y_query) ** 2)

    weights = [p["weights"] for p in layers]
    tokens = lsa.lsa_layer(layers[1], lsa.lsa_layer(layers[0], lsa.prompt_tokens(prompts)))
    assert tokens.shape == (B, N + 1, D + 1) and np.all(np.isfinite(tokens))
    value, grads = jax.value_and_grad(loss)(weights)
    assert np.isfinite(value)
    for w, g in zip(weights, grads):
        assert jax.tree_util.tree_structure(w) == jax.tree_util.tree_structure(g)
        for name in w:
            assert g[name].shape == w[name].shape and np.all(np.isfinite(g[name]))
    # The second layer does see the first one: its gradient is not zero.
    assert any(np.any(np.asarray(g) != 0) for g in grads[1].values())
    # Reverse-mode gradients agree with finite differences (float64).
    check_grads(loss, (weights,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", ["full", "block", "reduced"])
def test_stack_with_zero_second_layer_equals_one_layer(kind):
    """A zero layer is the identity on tokens, and its Jacobian in the tokens is I, so the
    stack's prediction and its gradient in the first layer's weights are one layer's."""
    first = _random_params("full", 7)
    second = _zero_like(_random_params(kind, 8))
    prompts = _prompts(9)
    tokens = lsa.prompt_tokens(prompts)
    np.testing.assert_array_equal(lsa.lsa_layer(second, tokens), tokens)
    want = lsa.apply(first, prompts)
    stacked = lsa.apply_stack([first, second], prompts)
    np.testing.assert_allclose(stacked, want, rtol=0, atol=_layer_tol(want))

    def loss(weights, stack):
        p = [{**first, "weights": weights}] + stack
        return jnp.mean((lsa.apply_stack(p, prompts) - prompts.y_query) ** 2)

    g_two = jax.grad(loss)(first["weights"], [second])
    g_one = jax.grad(loss)(first["weights"], [])
    for name in g_one:
        tol = _layer_tol(g_one[name])
        np.testing.assert_allclose(g_two[name], g_one[name], rtol=1e-12, atol=tol)


@pytest.mark.parametrize("parametrization", ["reduced", "block", "full"])
def test_apply_gram_equals_apply_on_the_tokens(parametrization):
    """ŷ from the context Gram (what the statistic sampler draws) equals ŷ from the tokens."""
    from iclsim.linear.data import context_gram, sample_prompts

    d, n = 4, 7
    cfg = lsa.LSAConfig(d, 3, parametrization, "random")
    params = lsa.init(jax.random.key(3), cfg, rank=2, scale=0.7)
    cov = np.diag([2.0, 1.0, 0.5, 0.25])
    prompts = sample_prompts(jax.random.key(4), cov, n, 16, label_noise=0.3)
    g = context_gram(prompts)
    got = lsa.apply_gram(params, g.gram, g.x_query, n)
    want = lsa.apply(params, prompts)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_loo_loss_is_the_population_risk():
    """Leave-one-out squared errors average to the exact risk of Γ (Monte Carlo, 4 SE)."""
    from iclsim.linear import oracle
    from iclsim.linear.training import loo_squared_errors

    d, n = 3, 5
    cov = np.diag([1.5, 1.0, 0.4])
    cfg = lsa.LSAConfig(d, 3, "reduced", "random")
    params = lsa.init(jax.random.key(0), cfg, rank=3, scale=0.5)
    factor = jnp.asarray(np.linalg.cholesky(cov))
    errs = np.asarray(loo_squared_errors(params, jax.random.key(1), factor, n, 40000, 0.7, 0.2))
    per_prompt = errs.mean(axis=1)  # the N + 1 terms of a prompt are correlated: SE per prompt
    gamma = np.asarray(lsa.effective_gamma(params))
    want = oracle.population_risk(gamma, cov, n, label_noise=0.7, input_noise=0.2)
    se = per_prompt.std(ddof=1) / np.sqrt(per_prompt.size)
    assert abs(per_prompt.mean() - want) < 4 * se, (per_prompt.mean(), want, se)
    # power: the same statistic rejects a risk off by 3 %
    assert abs(per_prompt.mean() - 1.03 * want) > 4 * se
