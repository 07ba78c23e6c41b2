"""Monte Carlo risk estimation shared by every setting.

A trained model's risk E[(ŷ − y_q)²] is estimated on fresh held-out prompts,
``n_batches`` batches drawn inside one ``lax.scan`` (constant memory), for a
grid of runs × noise levels in one vmapped program.  The standard error uses
the per-batch second moment: SE = sqrt((E[e²] − E[e]²) / (n − 1)) with
n = n_batches·batch squared errors e.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["batch_moments", "risk_grid", "mean_and_se"]


def batch_moments(squared_errors, keys, dtype):
    """(E[e], E[e²]) over batches: ``squared_errors(key) -> (batch,)`` for each key (scanned)."""

    def body(acc, key):
        err = squared_errors(key)
        return (acc[0] + jnp.mean(err), acc[1] + jnp.mean(err**2)), None

    zero = jnp.zeros((), dtype)
    (m1, m2), _ = jax.lax.scan(body, (zero, zero), keys)
    return m1 / keys.shape[0], m2 / keys.shape[0]


def risk_grid(squared_errors, keys, params, level_a, level_b, dtype):
    """Moments for every run (leading axis of ``params``) × noise level pair (a_l, b_l).

    ``squared_errors(run_params, a, b, key) -> (batch,)``.  Returns (m1, m2), each
    (runs, levels).  All runs and levels see the same prompt keys (common random
    numbers), so differences between runs are estimated more precisely than each risk.
    """

    def one(run_params, a, b):
        return batch_moments(lambda key: squared_errors(run_params, a, b, key), keys, dtype)

    per_level = jax.vmap(one, in_axes=(None, 0, 0))
    return jax.vmap(per_level, in_axes=(0, None, None))(params, level_a, level_b)


def mean_and_se(m1, m2, n_total):
    """Risk and its standard error from the moments of ``n_total`` squared errors."""
    m1, m2 = np.asarray(m1, float), np.asarray(m2, float)
    var = np.maximum(m2 - m1**2, 0.0) * n_total / (n_total - 1)
    return m1, np.sqrt(var / n_total)
