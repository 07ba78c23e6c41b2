"""Identities of the parity sampler and model (float64): exact parities, padding, the JAX loss.

The references are written here in numpy from docs/theory/parity.md; statistical checks use
4 standard errors with the SE stated in the assert message.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

from iclsim import parity
from iclsim.parity import model as pm

pytestmark = pytest.mark.float64  # identities of the float64 oracle / model code

PI = np.array([0.5, 0.3, 0.2])
K_DEG = 2
D0 = 1
N = 5
B = 8000
D = len(PI) * K_DEG + D0

# The sampler is compiled once per static configuration (compiling costs seconds on
# CPU, eager dispatch more), so every test draws from the same two programs:
# a concrete zero noise level, and traced noise levels.
_sample_clean = jax.jit(
    lambda key: parity.sample_prompts(key, PI, N, K_DEG, B, distractor_bits=D0),
)
_sample_noisy = jax.jit(
    lambda key, p, q: parity.sample_prompts(
        key, PI, N, K_DEG, B, distractor_bits=D0, label_flip=p, bit_flip=q
    ),
)


def _prompts(seed, b=64, label_flip=None, bit_flip=0.0):
    """``b`` prompts of the shared configuration (clean unless a label_flip is given)."""
    key = jax.random.key(seed)
    full = _sample_clean(key) if label_flip is None else _sample_noisy(key, label_flip, bit_flip)
    return jax.tree_util.tree_map(lambda a: a[:b], full)


def _parities(z, n_feat, k):
    """χ_j(z) = Π_{b ∈ B_j} z_b, written in numpy."""
    z = np.asarray(z)
    return np.stack([np.prod(z[..., j * k : (j + 1) * k], axis=-1) for j in range(n_feat)], -1)


def _numpy_forward(logits, readout, mask, prompts, k):
    """ŷ = Σ_h mask_h c_h φ_h(z_q) (1/N) Σ_i y_i φ_h(z_i), in numpy from docs/theory/parity.md."""
    logits = np.asarray(logits)
    alpha = np.exp(logits - logits.max(1, keepdims=True))
    alpha /= alpha.sum(1, keepdims=True)
    phi = lambda z: np.cos(np.pi * k * ((1 - np.asarray(z)) / 2) @ alpha.T)  # noqa: E731
    h = np.einsum("bn,bnh->bh", np.asarray(prompts.y), phi(prompts.z)) / prompts.y.shape[1]
    return np.einsum("h,bh,bh->b", np.asarray(readout) * np.asarray(mask), phi(prompts.z_query), h)


def _assert_rate(hits, want, what):
    hits = np.asarray(hits, dtype=float).ravel()
    se = np.sqrt(max(want * (1 - want), 1e-12) / hits.size)
    assert abs(hits.mean() - want) <= 4 * se, (
        f"{what}: empirical {hits.mean():.5f} vs {want:.5f}, "
        f"> 4 SE (SE = {se:.2e}, n = {hits.size})"
    )


# --------------------------------------------------------------------------------------
# Sampler
# --------------------------------------------------------------------------------------


def test_clean_prompts_are_signed_parities():
    p = _prompts(0, b=500)
    assert p.z.shape == (500, N, D) and p.y.shape == (500, N)
    assert p.z_query.shape == (500, D) and p.y_query.shape == (500,)
    assert p.task.shape == (500,) and p.sign.shape == (500,)
    assert jnp.issubdtype(p.task.dtype, jnp.integer)
    for leaf in (p.z, p.y, p.z_query, p.y_query, p.sign):
        assert set(np.unique(np.asarray(leaf))) <= {-1.0, 1.0}
    chi = _parities(p.z, len(PI), K_DEG)  # (B, N, K)
    task = np.asarray(p.task)
    want_y = np.asarray(p.sign)[:, None] * np.take_along_axis(chi, task[:, None, None], -1)[..., 0]
    np.testing.assert_array_equal(p.y, want_y)
    chi_q = _parities(p.z_query, len(PI), K_DEG)
    np.testing.assert_array_equal(p.y_query, np.asarray(p.sign) * chi_q[np.arange(500), task])


def test_task_and_sign_distribution():
    p = _prompts(1, b=B)
    task = np.asarray(p.task)
    for j, pj in enumerate(PI):
        _assert_rate(task == j, pj, f"P(task = {j})")
    _assert_rate(np.asarray(p.sign) > 0, 0.5, "P(s = +1)")
    _assert_rate(np.asarray(p.z) > 0, 0.5, "P(z_b = +1)")


@pytest.mark.parametrize("p_flip, q_flip", [(0.2, 0.0), (0.0, 0.3), (0.1, 0.25)])
def test_noise_flips_context_only_after_clean_labels(p_flip, q_flip):
    """Same key: the clean prompt differs from the noisy one by independent flips at rates p, q."""
    clean = _prompts(2, b=B)
    noisy = _prompts(2, b=B, label_flip=p_flip, bit_flip=q_flip)
    for name in ("z_query", "y_query", "task", "sign"):
        np.testing.assert_array_equal(getattr(noisy, name), getattr(clean, name))
    # Labels are flipped at rate p, independently of the bit flips (computed before them:
    # at p = 0 the labels are exactly the clean ones however many bits flip).
    _assert_rate(np.asarray(noisy.y) != np.asarray(clean.y), p_flip, "label flip rate")
    _assert_rate(np.asarray(noisy.z) != np.asarray(clean.z), q_flip, "bit flip rate")


def test_concrete_noise_matches_traced_and_zero_draws_nothing():
    key = jax.random.key(3)
    concrete = jax.jit(
        lambda key: parity.sample_prompts(
            key, PI, N, K_DEG, B, distractor_bits=D0, label_flip=0.1, bit_flip=0.25
        ),
    )(key)
    for a, b in zip(concrete, _sample_noisy(key, 0.1, 0.25)):
        np.testing.assert_array_equal(a, b)
    # A concrete zero level draws no random bits; a traced zero draws (and flips nothing).
    static = str(jax.make_jaxpr(lambda k: parity.sample_prompts(k, PI, N, K_DEG, 4))(key))
    dynamic = str(
        jax.make_jaxpr(
            lambda k, p: parity.sample_prompts(k, PI, N, K_DEG, 4, label_flip=p, bit_flip=p)
        )(key, 0.0)
    )
    assert dynamic.count("random_bits") == static.count("random_bits") + 2
    for a, b in zip(_sample_clean(key), _sample_noisy(key, 0.0, 0.0)):
        np.testing.assert_array_equal(a, b)


def test_sampler_validation():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="pi must sum to 1"):
        parity.sample_prompts(key, [0.5, 0.4], N, K_DEG, 4)
    with pytest.raises(ValueError, match="pi must have entries in"):
        parity.sample_prompts(key, [1.2, -0.2], N, K_DEG, 4)
    with pytest.raises(ValueError, match="n_context must be an integer in \\[1, inf\\)"):
        parity.sample_prompts(key, PI, 0, K_DEG, 4)
    with pytest.raises(ValueError, match="k must be an integer in \\[1, inf\\)"):
        parity.sample_prompts(key, PI, N, 0, 4)
    with pytest.raises(ValueError, match="label_flip must be in \\[0.0, 0.5\\]"):
        parity.sample_prompts(key, PI, N, K_DEG, 4, label_flip=0.7)
    with pytest.raises(ValueError, match="bit_flip must be in \\[0.0, 0.5\\]"):
        parity.sample_prompts(key, PI, N, K_DEG, 4, bit_flip=-0.1)
    with pytest.raises(ValueError, match="distractor_bits"):
        parity.sample_prompts(key, PI, N, K_DEG, 4, distractor_bits=-1)
    # The sampler does not need π sorted (traced only: validation happens at trace time).
    jax.make_jaxpr(lambda k: parity.sample_prompts(k, PI[::-1], N, K_DEG, 4))(key)


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_uniform_block_attention_computes_parity_exactly(k):
    cfg = pm.ParityConfig(K=3, k=k, distractor_bits=2, m_max=3)
    alpha = pm.hard_attention([0, 1, 2], cfg)
    np.testing.assert_allclose(alpha.sum(1), 1.0, rtol=0, atol=1e-15)
    z = 2.0 * (np.random.default_rng(k).random((500, cfg.D)) < 0.5) - 1.0
    phi = pm.features(jnp.asarray(alpha), jnp.asarray(z), k)
    np.testing.assert_allclose(phi, _parities(z, 3, k), rtol=0, atol=1e-12)


def test_hard_attention_forward_is_the_oracle_predictor():
    """Heads on blocks (2, 0), readout c: ŷ = Σ_h c_h χ_{j_h}(z_q) · mean_i y_i χ_{j_h}(z_i)."""
    cfg = pm.ParityConfig(K=3, k=K_DEG, distractor_bits=D0, m_max=2)
    alpha = jnp.asarray(pm.hard_attention([2, 0], cfg))
    c = jnp.array([0.7, -1.3])
    p = _prompts(4, label_flip=0.2, bit_flip=0.1)
    got = pm.apply_attention(alpha, c, jnp.ones(2), p, K_DEG)
    chi, chi_q = _parities(p.z, 3, K_DEG), _parities(p.z_query, 3, K_DEG)
    y = np.asarray(p.y)
    want = sum(
        float(c[h]) * chi_q[:, j] * np.mean(y * chi[:, :, j], axis=1) for h, j in enumerate([2, 0])
    )
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(2))
def test_apply_matches_numpy_reference(seed):
    cfg = pm.ParityConfig(K=3, k=K_DEG, distractor_bits=D0, m_max=4)
    params = pm.init(jax.random.key(seed), cfg, heads=3, scale=1.5)
    p = _prompts(seed, label_flip=0.1, bit_flip=0.1)
    want = _numpy_forward(params["weights"]["logits"], params["weights"]["readout"],
                          params["head_mask"], p, K_DEG)
    np.testing.assert_allclose(pm.apply(params, p, K_DEG), want, rtol=1e-12, atol=1e-13)


def test_init_shapes_mask_and_block_mass():
    cfg = pm.ParityConfig(K=3, k=K_DEG, distractor_bits=2, m_max=5)
    assert cfg.D == 8
    params = pm.init(jax.random.key(0), cfg, heads=2)
    assert params["weights"]["logits"].shape == (5, 8)
    assert params["weights"]["readout"].shape == (5,)
    np.testing.assert_array_equal(params["head_mask"], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(params["weights"]["readout"][2:], 0.0)
    alpha = pm.attention(params)
    np.testing.assert_allclose(alpha.sum(1), 1.0, rtol=1e-14)
    mass = pm.block_mass(params, cfg)
    assert mass.shape == (5, 3)
    np.testing.assert_allclose(mass, np.asarray(alpha)[:, :6].reshape(5, 3, 2).sum(-1), rtol=1e-14)
    # Large logits on block 1 put (almost) all mass there.
    logits = jnp.where(jnp.arange(8) // 2 == 1, 20.0, 0.0)[None].repeat(5, 0)
    big = {**params, "weights": {**params["weights"], "logits": logits}}
    assert np.all(pm.block_mass(big, cfg)[:, 1] > 0.99)


def test_padded_masked_equals_unpadded_forward_and_gradients():
    heads, m_max = 2, 5
    cfg_small = pm.ParityConfig(K=3, k=K_DEG, distractor_bits=D0, m_max=heads)
    rng = np.random.default_rng(0)
    # Parameters drawn in numpy (eager JAX draws compile op by op: seconds).
    w = {"logits": rng.standard_normal((heads, 7)), "readout": rng.standard_normal(heads)}
    small = {"weights": jax.tree_util.tree_map(jnp.asarray, w),
             "head_mask": jnp.asarray(np.ones(heads))}
    padded = {
        "weights": {
            "logits": jnp.asarray(np.concatenate([w["logits"],
                                                  rng.standard_normal((m_max - heads, 7))])),
            "readout": jnp.asarray(np.concatenate([w["readout"],
                                                   rng.standard_normal(m_max - heads)])),
        },
        "head_mask": pm.head_mask(heads, m_max),
    }
    p = _prompts(3, label_flip=0.1)
    cfg_pad = pm.ParityConfig(K=3, k=K_DEG, distractor_bits=D0, m_max=m_max)

    @partial(jax.jit, static_argnums=2)
    def forward_and_grads(weights, params, cfg):
        """(ŷ, ∇ empirical loss, population loss (5), ∇ (5)) in one program per shape."""

        def loss(w):
            return jnp.mean((pm.apply({**params, "weights": w}, p, K_DEG) - p.y_query) ** 2)

        def pop(w):
            return pm.population_loss({**params, "weights": w}, cfg, PI, N, 0.6)

        pop_value, pop_grad = jax.value_and_grad(pop)(weights)
        pred = pm.apply({**params, "weights": weights}, p, K_DEG)
        return pred, jax.grad(loss)(weights), pop_value, pop_grad

    as_numpy = partial(jax.tree_util.tree_map, np.asarray)  # slicing on the host: no compiles
    pred_s, g_s, pop_s, gp_s = as_numpy(forward_and_grads(small["weights"], small, cfg_small))
    pred_p, g_p, pop_p, gp_p = as_numpy(forward_and_grads(padded["weights"], padded, cfg_pad))
    np.testing.assert_allclose(pred_p, pred_s, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(pop_p, pop_s, rtol=1e-12)
    for g_small, g_pad in ((g_s, g_p), (gp_s, gp_p)):
        for name in ("logits", "readout"):
            np.testing.assert_allclose(g_pad[name][:heads], g_small[name], rtol=1e-10, atol=1e-14)
            np.testing.assert_array_equal(g_pad[name][heads:], 0.0)


#: One compile per model config (N, π and μ are traced): the examples differ in their shapes.
_population_loss = jax.jit(pm.population_loss, static_argnums=1)


@settings(max_examples=8)
@given(
    st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.integers(1, 4),
    st.integers(1, 50), st.floats(0, 0.5), st.floats(0, 0.5), st.integers(0, 2**31 - 1),
)
def test_jax_population_loss_equals_numpy_oracle(n_feat, k, d0, heads, n, p, q, seed):
    """The JAX loss (5) of the padded, masked model against the numpy oracle of its active
    heads (softmax and mask built here in numpy: the only JAX program is the loss)."""
    rng = np.random.default_rng(seed)
    pi = np.sort(rng.dirichlet(np.ones(n_feat)))[::-1]
    pi = pi / pi.sum()
    cfg = pm.ParityConfig(n_feat, k, d0, m_max=4)
    logits = 1.5 * rng.standard_normal((4, cfg.D))
    readout = rng.standard_normal(4)
    params = {
        "weights": {"logits": jnp.asarray(logits), "readout": jnp.asarray(readout)},
        "head_mask": jnp.asarray((np.arange(4) < heads).astype(float)),
    }
    mu = parity.signal(p, q, k)
    got = float(_population_loss(params, cfg, pi, n, mu))
    alpha = np.exp(logits - logits.max(1, keepdims=True))
    alpha = (alpha / alpha.sum(1, keepdims=True))[:heads]
    c = readout[:heads]
    want = parity.population_loss(alpha, c, pi, n, k, label_flip=p, bit_flip=q, distractor_bits=d0)
    assert got == pytest.approx(want, rel=1e-11, abs=1e-12)


def test_model_config_validation():
    with pytest.raises(ValueError, match="K must be an integer in \\[1, inf\\)"):
        pm.ParityConfig(0, 2)
    with pytest.raises(ValueError, match="k must be an integer"):
        pm.ParityConfig(3, 0)
    with pytest.raises(ValueError, match="distractor_bits"):
        pm.ParityConfig(3, 2, -1)
    with pytest.raises(ValueError, match="m_max"):
        pm.ParityConfig(3, 2, 0, 0)
    cfg = pm.ParityConfig(3, 2, 0, 2)
    with pytest.raises(ValueError, match="heads must be an integer in \\[0, 2\\]"):
        pm.init(jax.random.key(0), cfg, heads=3)
    with pytest.raises(ValueError, match="blocks\\[h\\] must be an integer in \\[0, 2\\]"):
        pm.hard_attention([0, 3], cfg)


# --------------------------------------------------------------------------------------
# Stackable layers
# --------------------------------------------------------------------------------------

EPS = np.finfo(np.float64).eps
_CFG = pm.ParityConfig(K=3, k=K_DEG, distractor_bits=D0, m_max=4)


def _layer_tol(*arrays):
    """A float64 round-off bound: 1000 eps times the largest magnitude involved."""
    return 1e3 * EPS * max(1.0, *(float(np.max(np.abs(np.asarray(a)))) for a in arrays))


def _random_layer(seed, heads=3):
    return pm.init(jax.random.key(seed), _CFG, heads=heads, scale=1.5)


def test_prompt_tokens_layout():
    p = _prompts(0, b=6)
    t = pm.prompt_tokens(p)
    assert t.shape == (6, N + 1, D + 1)
    np.testing.assert_array_equal(t[:, :N, :D], p.z)
    np.testing.assert_array_equal(t[:, :N, D], p.y)
    np.testing.assert_array_equal(t[:, N, :D], p.z_query)
    np.testing.assert_array_equal(pm.read_prediction(t), 0.0)


@pytest.mark.parametrize("seed", range(2))
def test_layer_prediction_equals_apply(seed):
    params = _random_layer(seed)
    p = _prompts(seed + 10, label_flip=0.1, bit_flip=0.1)
    out = pm.parity_layer(params, pm.prompt_tokens(p), K_DEG)
    assert out.shape == (64, N + 1, D + 1) and out.dtype == jnp.float64
    want = pm.apply(params, p, K_DEG)
    np.testing.assert_allclose(pm.read_prediction(out), want, rtol=0, atol=_layer_tol(want))
    stacked = pm.apply_stack([params], p, K_DEG)
    np.testing.assert_allclose(stacked, want, rtol=0, atol=_layer_tol(want))
    # Bits pass through; every label slot moves by the numpy forward with that token as query.
    np.testing.assert_array_equal(out[..., :D], pm.prompt_tokens(p)[..., :D])
    j = 2
    as_query = p._replace(z_query=p.z[:, j])
    w = params["weights"]
    delta = _numpy_forward(w["logits"], w["readout"], params["head_mask"], as_query, K_DEG)
    np.testing.assert_allclose(out[:, j, D] - p.y[:, j], delta, rtol=0, atol=_layer_tol(delta))


def _stack_loss(weights, masks, p):
    """Squared loss on prompts ``p`` of the stack of layers (weights, head mask)."""
    layers = [{"weights": w, "head_mask": m} for w, m in zip(weights, masks)]
    return jnp.mean((pm.apply_stack(layers, p, K_DEG) - p.y_query) ** 2)


#: Value and gradient of the stack's loss, compiled once per number of layers (op-by-op
#: dispatch of these gradients costs more than compiling them).
_stack_value_and_grad = jax.jit(jax.value_and_grad(_stack_loss))


def test_two_stacked_layers_run_and_differentiate():
    layers = [_random_layer(20), _random_layer(21, heads=2)]
    p = _prompts(22, label_flip=0.1)
    weights = [q["weights"] for q in layers]
    masks = [q["head_mask"] for q in layers]
    tokens = pm.prompt_tokens(p)
    for q in layers:
        tokens = pm.parity_layer(q, tokens, K_DEG)
    assert tokens.shape == (64, N + 1, D + 1) and np.all(np.isfinite(tokens))
    value, grads = _stack_value_and_grad(weights, masks, p)
    assert np.isfinite(value)
    for w, g in zip(weights, grads):
        for name in w:
            assert g[name].shape == w[name].shape and np.all(np.isfinite(g[name]))
    assert np.any(np.asarray(grads[1]["readout"]) != 0)
    # Masked heads of either layer get no gradient.
    np.testing.assert_array_equal(grads[0]["readout"][3:], 0.0)
    np.testing.assert_array_equal(grads[1]["logits"][2:], 0.0)
    # Reverse mode against central differences along random directions (what check_grads
    # does, here with the compiled loss): truncation ~ε² and rounding ~eps/ε, far below 1e-6.
    flat, unravel = ravel_pytree(weights)
    flat_grad, _ = ravel_pytree(grads)
    rng, step = np.random.default_rng(0), 1e-5
    for _ in range(3):
        v = rng.standard_normal(flat.shape)
        up = _stack_value_and_grad(unravel(flat + step * v), masks, p)[0]
        down = _stack_value_and_grad(unravel(flat - step * v), masks, p)[0]
        assert float(up - down) / (2 * step) == pytest.approx(float(flat_grad @ v), rel=1e-6,
                                                               abs=1e-6)


def test_stack_with_zero_second_layer_equals_one_layer():
    """Zero readouts make a layer the identity with Jacobian I in the tokens: the stack's
    prediction and its gradient in the first layer's weights are one layer's."""
    first = _random_layer(30)
    second = _random_layer(31)
    second = {**second, "weights": {**second["weights"], "readout": jnp.zeros(_CFG.m_max)}}
    p = _prompts(32, label_flip=0.2)
    tokens = pm.prompt_tokens(p)
    np.testing.assert_array_equal(pm.parity_layer(second, tokens, K_DEG), tokens)
    want = pm.apply(first, p, K_DEG)
    np.testing.assert_allclose(
        pm.apply_stack([first, second], p, K_DEG), want, rtol=0, atol=_layer_tol(want)
    )
    masks = [first["head_mask"], second["head_mask"]]
    _, (g_two, _) = _stack_value_and_grad([first["weights"], second["weights"]], masks, p)
    _, (g_one,) = _stack_value_and_grad([first["weights"]], masks[:1], p)
    for name in g_one:
        tol = _layer_tol(g_one[name])
        np.testing.assert_allclose(g_two[name], g_one[name], rtol=1e-12, atol=tol)
