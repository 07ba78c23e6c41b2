"""References beside the trained transformers, on the same prompts and the same σ² axis.

* the **Bayes-optimal predictor** of setting 1's prompt distribution.  With the task prior
  w ~ N(0, I_d) (``docs/theory/linear.md``, Data) and context labels ỹ_i = wᵀx_i + ε_i,
  ε_i ~ N(0, σ²), the posterior of w given the context (X, ỹ) is Gaussian with

      mean  ŵ = (XᵀX + σ² I)⁻¹ Xᵀ ỹ,     covariance  σ² (XᵀX + σ² I)⁻¹,

  so the posterior-mean prediction ŷ = x_qᵀ ŵ minimises E[(ŷ − y_q)²] over *all*
  predictors that see the prompt: no model can beat its risk.  At σ² = 0 it is the limit
  σ² → 0, the minimum-norm interpolator X⁺ỹ (= w exactly when N ≥ d and X has full rank);
* **ordinary least squares** ŵ = X⁺ ỹ (minimum-norm least squares);
* **ridge** ŵ = (XᵀX + λ I)⁻¹ Xᵀ ỹ at fixed λ (the Bayes predictor is ridge at λ = σ²).

All three are computed from the eigendecomposition of XᵀX, so one traced formula covers
σ² = 0 and σ² > 0.  Risks are Monte Carlo means with standard errors
(:func:`reference_risks`); the prompts come from :func:`draw_eval`, the same stream the
sweep evaluates the trained models on (common random numbers).

Also here: :func:`fit_effective_rank`, the effective rank of a measured risk-vs-σ² curve
against the LSA ladder L_r(σ²) = L_r + σ² S_r.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from iclsim.linear.data import sample_prompts

__all__ = [
    "shrinkage_estimate", "posterior_mean", "ols", "ridge", "draw_eval", "noisy_labels",
    "reference_risks", "EffectiveRank", "fit_effective_rank", "fit_noise_line",
]


def shrinkage_estimate(x, y, lam):
    """ŵ = (XᵀX + λ I)⁺ Xᵀy for one context (x (N, d), y (N,)); λ ≥ 0 may be traced.

    At λ = 0 the pseudo-inverse keeps only the eigen-directions of XᵀX above a rounding
    threshold: the minimum-norm least-squares solution X⁺y.
    """
    gram = x.T @ x
    e, v = jnp.linalg.eigh(gram)
    tol = jnp.finfo(e.dtype).eps * x.shape[0] * jnp.maximum(jnp.max(e), 1.0) * 10.0
    lam = jnp.asarray(lam, e.dtype)
    keep = (e > tol) | (lam > 0)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, e + lam, 1.0), 0.0)
    return v @ (inv * (v.T @ (x.T @ y)))


def posterior_mean(x, y, label_noise):
    """Posterior mean of w ~ N(0, I) given the context with label noise σ² (Bayes-optimal)."""
    return shrinkage_estimate(x, y, label_noise)


def ols(x, y):
    """Minimum-norm least squares X⁺y."""
    return shrinkage_estimate(x, y, 0.0)


def ridge(x, y, lam):
    """Ridge regression at fixed λ."""
    return shrinkage_estimate(x, y, lam)


def draw_eval(key, factor, n_context: int, batch: int):
    """Clean evaluation prompts and standard-normal label noise ε (B, N) for one batch.

    The context labels at noise level σ² are ``noisy_labels(prompts, eps, σ²)``: every σ²
    level, every trained model and every reference sees the same x, w and ε.
    """
    k_p, k_e = jax.random.split(key)
    prompts = sample_prompts(k_p, None, n_context, batch, factor=factor)
    eps = jax.random.normal(k_e, prompts.y.shape, prompts.y.dtype)
    return prompts, eps


def noisy_labels(prompts, eps, label_noise):
    return prompts.y + jnp.sqrt(jnp.asarray(label_noise, prompts.y.dtype)) * eps


def _moments(values):
    return jnp.stack([jnp.mean(values), jnp.mean(values**2)])


def _mean_se(m, n_total):
    m = np.asarray(m, float)
    var = np.maximum(m[..., 1] - m[..., 0] ** 2, 0.0) * n_total / (n_total - 1)
    return m[..., 0], np.sqrt(var / n_total)


def reference_risks(key, factor, n_context: int, label_noise, *, n_prompts: int, batch: int,
                    ridge_lambda=()):
    """Monte Carlo risks of the Bayes, OLS and ridge predictors at each σ² level.

    ``key`` is split into ``n_prompts // batch`` batch keys exactly as the sweep's model
    evaluation does.  Returns ``{"bayes": (mean, se), "ols": (mean, se), "ridge":
    (mean (λ, levels), se (λ, levels))}``; means and SEs have one entry per σ² level.
    """
    n_batches = max(1, n_prompts // batch)
    keys = jax.random.split(key, n_batches)
    levels = jnp.asarray(label_noise, jnp.result_type(float))
    lams = jnp.asarray(tuple(ridge_lambda) or (1.0,), jnp.result_type(float))

    def per_batch(acc, k):
        prompts, eps = draw_eval(k, factor, n_context, batch)

        def level(s2):
            y = noisy_labels(prompts, eps, s2)

            def err(lam):
                w = jax.vmap(shrinkage_estimate, in_axes=(0, 0, None))(prompts.x, y, lam)
                return _moments((jnp.sum(w * prompts.x_query, -1) - prompts.y_query) ** 2)

            return err(s2), err(0.0), jax.vmap(err)(lams)

        return jax.tree_util.tree_map(jnp.add, acc, jax.lax.map(level, levels)), None

    zero = (jnp.zeros((levels.size, 2)), jnp.zeros((levels.size, 2)),
            jnp.zeros((levels.size, lams.size, 2)))
    total, _ = jax.jit(lambda ks: jax.lax.scan(per_batch, zero, ks))(keys)
    total = jax.tree_util.tree_map(lambda a: np.asarray(a) / n_batches, total)
    n_total = n_batches * batch
    ridge_mean, ridge_se = _mean_se(total[2], n_total)
    return {"bayes": _mean_se(total[0], n_total), "ols": _mean_se(total[1], n_total),
            "ridge": (ridge_mean.T, ridge_se.T)}


class EffectiveRank(NamedTuple):
    rank: int
    """argmin over r of χ²_r = Σ_k ((R_k − L_r(σ²_k)) / SE_k)²."""
    lo: int
    hi: int
    """the interval: smallest and largest r with χ²_r ≤ χ²_min + tolerance."""
    chi2: np.ndarray
    """χ²_r for r = 0..d."""


def fit_effective_rank(risk, se, ladder, tolerance: float = 4.0) -> EffectiveRank:
    """The rank whose LSA curve best fits a measured risk-vs-σ² curve.

    ``risk``, ``se``: (K,) measured risks and standard errors at K σ² levels;
    ``ladder``: (K, d + 1) the curves L_r(σ²_k).  Weighted least squares over the σ²
    grid: χ²_r = Σ_k ((risk_k − ladder_kr) / se_k)²; the interval holds every r within
    ``tolerance`` of the minimum (4: the 2-SE band of one parameter).  Non-finite input
    gives rank −1.
    """
    risk, se, ladder = (np.asarray(a, float) for a in (risk, se, ladder))
    if not (np.all(np.isfinite(risk)) and np.all(np.isfinite(se))):
        return EffectiveRank(-1, -1, -1, np.full(ladder.shape[1], np.nan))
    floor = np.finfo(float).eps * max(1.0, float(np.max(np.abs(risk))))
    w = 1.0 / np.maximum(se, floor) ** 2
    chi2 = np.sum(w[:, None] * (risk[:, None] - ladder) ** 2, axis=0)
    best = int(np.argmin(chi2))
    inside = np.flatnonzero(chi2 <= chi2[best] + tolerance)
    return EffectiveRank(best, int(inside.min()), int(inside.max()), chi2)


def fit_noise_line(label_noise, risk, se):
    """Weighted least-squares line risk ≈ a + S σ²: returns (a, S, SE(a), SE(S)).

    Weights 1/SE²; the SEs of (a, S) are scaled by √(χ²/dof) when the line does not
    fit within the stated SEs (dof = K − 2 > 0), so they reflect the scatter about it.
    """
    s2, risk, se = (np.asarray(a, float) for a in (label_noise, risk, se))
    if s2.size < 2 or not (np.all(np.isfinite(risk)) and np.all(np.isfinite(se))):
        return (np.nan,) * 4
    floor = np.finfo(float).eps * max(1.0, float(np.max(np.abs(risk))))
    w = 1.0 / np.maximum(se, floor) ** 2
    a = np.stack([np.ones_like(s2), s2], axis=1)
    cov = np.linalg.inv(a.T @ (w[:, None] * a))
    coef = cov @ (a.T @ (w * risk))
    if s2.size > 2:
        chi2 = float(np.sum(w * (risk - a @ coef) ** 2))
        cov = cov * max(1.0, chi2 / (s2.size - 2))
    return float(coef[0]), float(coef[1]), float(np.sqrt(cov[0, 0])), float(np.sqrt(cov[1, 1]))
