"""The padded, masked transformer equals the unpadded one of each size, forward and gradients
(float64, tolerances from eps); padded parameters get exactly zero gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iclsim.transformer import model as tfm

pytestmark = pytest.mark.float64  # identities of the float64 oracle / model code

EPS = np.finfo(np.float64).eps
PADDED = tfm.Shape(d=3, heads=4, width=12, layers=2, head_dim=2, mlp_ratio=2)


def _random_weights(seed, shape):
    """Padded weights with every leaf random, LayerNorm gains/biases and biases too (numpy
    draws: jax.random's threefry takes seconds to compile per leaf on a shared CPU)."""
    rng = np.random.default_rng(seed)
    layout = jax.eval_shape(lambda: tfm.init_weights(jax.random.key(0), shape, shape.heads,
                                                     shape.width, shape.layers))
    return jax.tree_util.tree_map(lambda a: rng.standard_normal(a.shape) * 0.5, layout)


def _prompts(seed, b=5, n=6, d=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, n, d))
    w = rng.standard_normal((b, d))
    xq = rng.standard_normal((b, d))
    return x, np.einsum("bnd,bd->bn", x, w), xq, np.sum(xq * w, -1)


def _loss(weights, m, batch, head_dim):
    x, y, xq, yq = batch
    return jnp.mean((tfm.predict(weights, m, x, y, xq, head_dim) - yq) ** 2)


# jitted once per shape: the padded program serves every size (masks are traced arguments)
_predict = jax.jit(tfm.predict, static_argnames="head_dim")
_masks = jax.jit(tfm.masks, static_argnums=0)


def _np(tree):
    """Host copies (numpy slicing and comparisons compile nothing)."""
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
_grad = jax.jit(jax.grad(_loss), static_argnames="head_dim")


@pytest.mark.parametrize("size", [(1, 4, 1), (3, 8, 2), (4, 12, 2)])
def test_padded_model_equals_unpadded_forward_and_gradients(size):
    assert jax.config.jax_enable_x64
    heads, width, layers = size
    weights = _np(_random_weights(0, PADDED))
    batch = _prompts(1)
    m_pad = _masks(PADDED, heads, width, layers)
    small = tfm.Shape(3, heads, width, layers, PADDED.head_dim, PADDED.mlp_ratio)
    cropped = tfm.crop(weights, heads, width, layers, PADDED.mlp_ratio)
    m_small = _masks(small, heads, width, layers)
    assert all(np.all(v == 1) for v in _np(m_small).values())

    x, y, xq, yq = batch
    hd = PADDED.head_dim
    pad_pred = np.asarray(_predict(weights, m_pad, x, y, xq, head_dim=hd))
    ref_pred = np.asarray(_predict(cropped, m_small, x, y, xq, head_dim=hd))
    scale = 1.0 + float(np.max(np.abs(ref_pred)))
    np.testing.assert_allclose(pad_pred, ref_pred, rtol=0, atol=1e3 * EPS * scale)

    pad_grad = _np(_grad(weights, m_pad, batch, head_dim=hd))
    ref_grad = _np(_grad(cropped, m_small, batch, head_dim=hd))
    got = tfm.crop(pad_grad, heads, width, layers, PADDED.mlp_ratio)
    for path, a in jax.tree_util.tree_leaves_with_path(ref_grad):
        b = got
        for p in path:
            b = b[p.key]
        tol = 1e4 * EPS * (1.0 + float(np.max(np.abs(a))))
        np.testing.assert_allclose(b, a, rtol=0, atol=tol, err_msg=jax.tree_util.keystr(path))
    # Everything outside the active size has exactly zero gradient (it cannot move).
    total = sum(float(np.sum(g**2)) for g in jax.tree_util.tree_leaves(pad_grad))
    inside = sum(float(np.sum(g**2)) for g in jax.tree_util.tree_leaves(got))
    assert total == pytest.approx(inside, rel=1e-13, abs=0)
    outside = _outside(pad_grad, heads, width, layers)
    assert outside == 0.0


def _outside(grad, heads, width, layers):
    """Sum of |g| over the padded entries (zeroing the active block of every leaf)."""
    f = PADDED.mlp_ratio * width
    z = jax.tree_util.tree_map(np.array, grad)  # writable copies
    z["embed"]["w"][:, :width] = 0
    z["embed"]["b"][:width] = 0
    lw = z["layers"]
    for k in ("ln1_g", "ln1_b", "ln2_g", "ln2_b", "bo", "b2"):
        lw[k][:layers, :width] = 0
    for k in ("wq", "wk", "wv"):
        lw[k][:layers, :width, :heads] = 0
    for k in ("bq", "bk", "bv"):
        lw[k][:layers, :heads] = 0
    lw["wo"][:layers, :heads, :, :width] = 0
    lw["w1"][:layers, :width, :f] = 0
    lw["b1"][:layers, :f] = 0
    lw["w2"][:layers, :f, :width] = 0
    for k in ("ln_g", "ln_b", "w"):
        z["final"][k][:width] = 0
    z["final"]["b"] = np.zeros(())
    return float(sum(np.abs(v).sum() for v in jax.tree_util.tree_leaves(z)))


def test_masked_layer_norm_is_layer_norm_of_the_active_columns():
    rng = np.random.default_rng(2)
    h, g, b = rng.standard_normal((4, 10)), rng.standard_normal(10), rng.standard_normal(10)
    col = (np.arange(10) < 6).astype(float)
    out = np.asarray(jax.jit(tfm.layer_norm)(h, g, b, col))
    a = np.asarray(h[:, :6])
    want = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + tfm.LN_EPS)
    want = want * np.asarray(g[:6]) + np.asarray(b[:6])
    np.testing.assert_allclose(out[:, :6], want, rtol=0, atol=100 * EPS)
    assert float(np.abs(out[:, 6:]).max()) == 0.0


@pytest.mark.parametrize("size", [(1, 4, 1), (3, 8, 2)])
def test_param_count_is_the_size_of_the_unpadded_pytree(size):
    heads, width, layers = size
    w = tfm.crop(_random_weights(0, PADDED), *size, PADDED.mlp_ratio)
    n = sum(int(np.size(v)) for v in jax.tree_util.tree_leaves(w))
    assert n == tfm.param_count(3, heads, width, layers, PADDED.head_dim, PADDED.mlp_ratio)


def test_tokens_and_causal_readout():
    """Tokens are (x_i, y_i, 0) then (x_q, 0, 1); ŷ reads the last position, which sees every
    context token (changing a context label changes ŷ), and ŷ does not depend on y_q."""
    x, y, xq, _ = _prompts(5)
    t = tfm.prompt_tokens(x, y, xq)
    assert t.shape == (5, 7, 5)
    np.testing.assert_array_equal(t[:, :6, :3], x)
    np.testing.assert_array_equal(t[:, :6, 3], y)
    np.testing.assert_array_equal(t[:, :6, 4], 0.0)
    np.testing.assert_array_equal(t[:, 6], np.concatenate([xq, np.zeros((5, 1)),
                                                           np.ones((5, 1))], -1))
    w = _random_weights(6, PADDED)
    m = _masks(PADDED, 2, 8, 2)
    base = _predict(w, m, x, y, xq, head_dim=PADDED.head_dim)
    y_moved = y.copy()
    y_moved[:, 0] += 1.0
    moved = _predict(w, m, x, y_moved, xq, head_dim=PADDED.head_dim)
    assert np.all(np.abs(np.asarray(moved - base)) > 1e-8)
