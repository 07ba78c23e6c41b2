"""Prompt sampler for setting 1 (``docs/theory/linear.md``, section "Data").

A prompt is a task ``w ~ N(0, I_d)``, context inputs ``x_1..x_N ~ N(0, Λ)``,
labels ``y_i = wᵀx_i`` and a query ``x_q ~ N(0, Λ)`` with target ``y_q = wᵀx_q``.
Evaluation noise corrupts the context only (Theorem B): labels
``y_i + ε_i`` with ``ε ~ N(0, σ²)`` and shown inputs ``x_i + ξ_i`` with
``ξ ~ N(0, σ_x² I)`` (labels still computed from the clean ``x_i``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from iclsim._validation import check_covariance, check_int, check_nonnegative, is_traced

__all__ = ["Prompts", "sample_prompts", "covariance_factor"]


class Prompts(NamedTuple):
    """A batch of prompts (a pytree; every leaf has the batch axis first)."""

    x: jax.Array
    """(B, N, d) context inputs as shown to the model (noisy if σ_x² > 0)."""
    y: jax.Array
    """(B, N) context labels as shown to the model (noisy if σ² > 0)."""
    x_query: jax.Array
    """(B, d) query inputs (always clean)."""
    y_query: jax.Array
    """(B,) query targets wᵀx_q (always clean)."""
    w: jax.Array
    """(B, d) the task vector of each prompt."""


def covariance_factor(cov):
    """Lower Cholesky factor L with ``L Lᵀ = cov`` (validated unless traced)."""
    if is_traced(cov):
        return jnp.linalg.cholesky(cov)
    cov = check_covariance(cov)
    return jnp.asarray(np.linalg.cholesky(cov))


def sample_prompts(
    key,
    cov,
    n_context,
    batch,
    *,
    label_noise=0.0,
    input_noise=0.0,
    task=None,
    factor=None,
) -> Prompts:
    """Sample ``batch`` prompts of ``n_context`` examples (JAX, jit/vmap friendly).

    Parameters
    ----------
    key : PRNG key.
    cov : (d, d) symmetric positive-definite Λ (validated when concrete).
    n_context, batch : static ints >= 1.
    label_noise : σ² >= 0, context label-noise variance (may be traced).
    input_noise : σ_x² >= 0, context input-noise variance (may be traced).
    task : optional (d,) fixed task w used for every prompt (Theorem B(c)).
    factor : optional precomputed Cholesky factor of ``cov`` (skips the
        factorisation, e.g. inside a training step).

    Returns
    -------
    :class:`Prompts` with ``x`` (B, N, d), ``y`` (B, N), ``x_query`` (B, d),
    ``y_query`` (B,), ``w`` (B, d).
    """
    n = check_int("n_context", n_context, 1)
    b = check_int("batch", batch, 1)
    check_nonnegative("label_noise", label_noise)
    check_nonnegative("input_noise", input_noise)
    chol = covariance_factor(cov) if factor is None else jnp.asarray(factor)
    d = chol.shape[0]
    dtype = jnp.result_type(float)
    chol = chol.astype(dtype)
    k_w, k_x, k_eps, k_xi = jax.random.split(key, 4)
    if task is None:
        w = jax.random.normal(k_w, (b, d), dtype)
    else:
        task = jnp.asarray(task, dtype)
        if task.shape != (d,):
            raise ValueError(f"task must have shape ({d},), got {task.shape}")
        w = jnp.broadcast_to(task, (b, d))
    x_all = jax.random.normal(k_x, (b, n + 1, d), dtype) @ chol.T
    y_all = jnp.einsum("bnd,bd->bn", x_all, w)
    x, x_query = x_all[:, :n], x_all[:, n]
    y, y_query = y_all[:, :n], y_all[:, n]
    # A concrete zero noise level draws nothing (saves RNG work in training);
    # a traced level always draws, so noise levels can be swept in one program.
    if not _is_static_zero(label_noise):
        eps = jax.random.normal(k_eps, (b, n), dtype)
        y = y + jnp.sqrt(jnp.asarray(label_noise, dtype)) * eps
    if not _is_static_zero(input_noise):
        xi = jax.random.normal(k_xi, (b, n, d), dtype)
        x = x + jnp.sqrt(jnp.asarray(input_noise, dtype)) * xi
    return Prompts(x=x, y=y, x_query=x_query, y_query=y_query, w=w)


def _is_static_zero(value) -> bool:
    return not is_traced(value) and np.ndim(value) == 0 and float(value) == 0.0
