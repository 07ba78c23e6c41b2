"""Prompt sampler for setting 2 (``docs/theory/parity.md``, section "Data").

Hidden bits ``z ∈ {±1}^D`` are uniform, ``D = K·k + D₀``; block ``B_j`` is bits
``jk, …, jk + k − 1`` (0-based j) and the last D₀ bits are distractors.  A task
``(j*, s)`` has ``j* ~ π`` and s uniform on ±1; labels are ``y = s·χ_{j*}(z)`` with
``χ_j(z) = Π_{b∈B_j} z_b``.  Evaluation noise corrupts the context only: each
context label is flipped with probability p and each context bit with
probability q, both after the clean labels are computed; the query is clean.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from iclsim._validation import check_in_range, check_int, is_traced
from iclsim.parity.oracle import check_pi

__all__ = ["Prompts", "sample_prompts", "block_parities"]


class Prompts(NamedTuple):
    """A batch of parity prompts (a pytree; every leaf has the batch axis first)."""

    z: jax.Array
    """(B, N, D) context bits in {±1} as shown to the model (flipped if q > 0)."""
    y: jax.Array
    """(B, N) context labels in {±1} as shown to the model (flipped if p > 0)."""
    z_query: jax.Array
    """(B, D) query bits (always clean)."""
    y_query: jax.Array
    """(B,) query targets s·χ_{j*}(z_q) (always clean)."""
    task: jax.Array
    """(B,) int, the 0-based feature index j* of each prompt."""
    sign: jax.Array
    """(B,) the task sign s in {±1}."""


def block_parities(z, n_features: int, k: int):
    """χ_j(z) = Π_{b∈B_j} z_b for j = 0..K−1: shape ``z.shape[:-1] + (K,)``."""
    blocks = z[..., : n_features * k].reshape(z.shape[:-1] + (n_features, k))
    return jnp.prod(blocks, axis=-1)


def _signs(key, shape, dtype):
    return 2.0 * jax.random.bernoulli(key, 0.5, shape).astype(dtype) - 1.0


def _flips(key, prob, shape, dtype):
    """±1 multipliers, −1 with probability ``prob`` (which may be traced)."""
    return 1.0 - 2.0 * jax.random.bernoulli(key, prob, shape).astype(dtype)


def sample_prompts(
    key,
    pi,
    n_context,
    k,
    batch,
    *,
    distractor_bits=0,
    label_flip=0.0,
    bit_flip=0.0,
) -> Prompts:
    """Sample ``batch`` parity prompts of ``n_context`` examples (JAX, jit friendly).

    Parameters
    ----------
    key : PRNG key.
    pi : (K,) feature importance, a probability vector (validated when concrete;
        need not be sorted here).  The task index is drawn with
        ``jax.random.categorical(log π)``.
    n_context, k, batch : static ints >= 1 (N, the parity degree, B).
    distractor_bits : static int >= 0, D₀.
    label_flip : p in [0, 0.5], context label-flip probability (may be traced).
    bit_flip : q in [0, 0.5], context bit-flip probability (may be traced).
        A concrete zero draws nothing; a traced level always draws, so noise
        levels can be swept in one compiled program.

    Returns
    -------
    :class:`Prompts`; z, y, z_query, y_query, sign are float (the default float
    dtype), task is int.
    """
    n = check_int("n_context", n_context, 1)
    k = check_int("k", k, 1)
    b = check_int("batch", batch, 1)
    d0 = check_int("distractor_bits", distractor_bits, 0)
    check_in_range("label_flip", label_flip, 0.0, 0.5)
    check_in_range("bit_flip", bit_flip, 0.0, 0.5)
    if is_traced(pi):
        pi = jnp.asarray(pi)
    else:
        pi = jnp.asarray(check_pi(pi, sorted_decreasing=False))
    n_features = pi.shape[0]
    d = n_features * k + d0
    dtype = jnp.result_type(float)
    k_z, k_task, k_sign, k_p, k_q = jax.random.split(key, 5)
    z_all = _signs(k_z, (b, n + 1, d), dtype)
    task = jax.random.categorical(k_task, jnp.log(pi.astype(dtype)), shape=(b,))
    sign = _signs(k_sign, (b,), dtype)
    chi = block_parities(z_all, n_features, k)  # (B, N+1, K)
    chi_task = jnp.take_along_axis(chi, task[:, None, None], axis=-1)[..., 0]
    y_all = sign[:, None] * chi_task
    z, z_query = z_all[:, :n], z_all[:, n]
    y, y_query = y_all[:, :n], y_all[:, n]
    # Noise after the clean labels; a concrete zero level draws nothing.
    if not _is_static_zero(label_flip):
        y = y * _flips(k_p, label_flip, (b, n), dtype)
    if not _is_static_zero(bit_flip):
        z = z * _flips(k_q, bit_flip, (b, n, d), dtype)
    return Prompts(z=z, y=y, z_query=z_query, y_query=y_query, task=task, sign=sign)


def _is_static_zero(value) -> bool:
    return not is_traced(value) and np.ndim(value) == 0 and float(value) == 0.0
