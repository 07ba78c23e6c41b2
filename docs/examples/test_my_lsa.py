"""Worked example (docs/testing.md): your own rank-r linear self-attention, checked with iclsim.testing.

The model, its risk and its training loop below are plain JAX + optax and use nothing from
iclsim; only the two tests at the bottom do.  Run with ``pytest docs/examples/test_my_lsa.py``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from iclsim.testing import assert_lsa_optimal

D, RANK, N = 4, 2, 20  # input dimension, rank of the key-query matrix, context length
LAM = np.array([4.0, 2.0, 1.0, 0.5])  # eigenvalues of the input covariance Λ
ROT = np.linalg.qr(np.random.default_rng(0).standard_normal((D, D)))[0]
COV = ROT @ np.diag(LAM) @ ROT.T


def lsa(params, e):
    """One linear self-attention layer, f(E) = E + W_pv E (Eᵀ W_kq E) / N; returns f(E)[d, N].

    E (batch, d+1, N+1) stacks the inputs over the labels, one column per example, the query
    last with label 0.  Block weights: W_kq = [[A Bᵀ, 0], [0, 0]] (rank <= RANK),
    W_pv = [[0, 0], [0, u]].
    """
    w_kq = jnp.zeros((D + 1, D + 1)).at[:D, :D].set(params["a"] @ params["b"].T)
    w_pv = jnp.zeros((D + 1, D + 1)).at[D, D].set(params["u"])
    out = e + w_pv @ e @ (jnp.swapaxes(e, -1, -2) @ w_kq @ e) / N
    return out[:, D, N]


def gamma(params):
    """These weights predict ŷ = x_qᵀ Γ h with h = (1/N) Σ y_i x_i and Γ = u (A Bᵀ)ᵀ."""
    return params["u"] * (params["a"] @ params["b"].T).T


def risk(params):
    """E[(ŷ − y_q)²] for w ~ N(0, I), x ~ N(0, Λ): t − 2 tr(ΛΓΛ) + tr(ΓᵀΛΓM)."""
    cov, g = jnp.asarray(COV), gamma(params)
    t = jnp.trace(cov)
    m = (N + 1) / N * cov @ cov + t / N * cov
    return t - 2 * jnp.trace(cov @ g @ cov) + jnp.trace(g.T @ cov @ g @ m)


@functools.cache
def train(seed=0, steps=3000, lr=1e-2):
    keys = jax.random.split(jax.random.PRNGKey(seed), 2)
    params = {"a": 0.3 * jax.random.normal(keys[0], (D, RANK)),
              "b": 0.3 * jax.random.normal(keys[1], (D, RANK)), "u": jnp.ones(())}
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))

    def step(carry, _):
        p, state = carry
        updates, state = opt.update(jax.grad(risk)(p), state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(jax.jit(step), (params, opt.init(params)), None, steps)
    return params


# ---- the tests: about ten lines with iclsim.testing ------------------------------------


def test_trained_lsa_is_the_rank_r_optimum():
    assert_lsa_optimal(np.asarray(gamma(train())), COV, N, RANK, rtol=1e-3)


def test_gamma_is_what_the_layer_computes():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, N + 1, D)) @ np.linalg.cholesky(COV).T
    y = x @ rng.standard_normal(D)
    labels = np.concatenate([y[:, :N], np.zeros((64, 1))], axis=1)  # the query's label is 0
    e = np.concatenate([x, labels[..., None]], axis=-1).swapaxes(1, 2)  # (batch, d+1, N+1)
    h = np.einsum("bn,bnd->bd", y[:, :N], x[:, :N]) / N
    reduced = np.einsum("bd,de,be->b", x[:, N], np.asarray(gamma(train())), h)
    np.testing.assert_allclose(lsa(train(), e), reduced, rtol=1e-4, atol=1e-4)
