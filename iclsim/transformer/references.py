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
σ² = 0 and σ² > 0.

**Context input noise σ_x²** (shown inputs x̃_i = x_i + ξ_i, ξ_i ~ N(0, σ_x² I), labels from the
clean x_i; ``docs/theory/linear.md``, Data): least squares and ridge are estimators of the shown
context, so they are evaluated on (X̃, ỹ) as they are.  The Bayes predictor is *not* the formula
above: given w, ỹ_i | x̃_i ~ N(wᵀΛΛ_x⁻¹x̃_i, σ² + σ_x² wᵀΛΛ_x⁻¹w) with Λ_x = Λ + σ_x² I, a
likelihood whose variance depends on w, so the posterior of w is not Gaussian and its mean has no
closed form.  :func:`reference_risks` therefore reports NaN for the Bayes risk wherever σ_x² > 0
rather than the risk of a predictor that is not Bayes-optimal there.  Risks are Monte Carlo means with standard errors
(:func:`reference_risks`); the prompts come from :func:`draw_eval`, the same stream the
sweep evaluates the trained models on (common random numbers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from iclsim.engine.evaluate import mean_and_se
from iclsim.linear.data import sample_prompts

__all__ = [
    "shrinkage_estimate", "posterior_mean", "ols", "ridge", "draw_eval", "noisy_labels",
    "draw_input_noise", "noisy_inputs", "noise_pairs", "reference_risks",
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
    """The context labels as shown at label-noise level σ²: ``y + σ ε``.

    ``eps`` is the standard-normal draw of :func:`draw_eval`, shared by every σ², so that
    the levels of a sweep differ only in σ (common random numbers).

    Returns
    -------
    jax.Array
        The noisy labels, of the shape and dtype of ``prompts.y``.
    """
    return prompts.y + jnp.sqrt(jnp.asarray(label_noise, prompts.y.dtype)) * eps


def draw_input_noise(key, prompts):
    """Standard-normal context input noise ξ (B, N, d) for the batch ``draw_eval(key, …)``.

    Drawn from ``fold_in(key, 1)``, so the prompts and ε of :func:`draw_eval` are the same
    whether or not input noise is drawn (a sweep without input noise gives the same numbers).
    """
    return jax.random.normal(jax.random.fold_in(key, 1), prompts.x.shape, prompts.x.dtype)


def noisy_inputs(prompts, xi, input_noise):
    """The context inputs as shown at input-noise level σ_x²: x + σ_x ξ (``xi`` None: x)."""
    if xi is None:
        return prompts.x
    return prompts.x + jnp.sqrt(jnp.asarray(input_noise, prompts.x.dtype)) * xi


def noise_pairs(label_noise, input_noise=None):
    """The evaluation grid as (σ², σ_x²) pairs, σ² major: ((L·I, 2), draw ξ?, shape).

    ``input_noise`` None: the σ² levels alone (shape (L,)), no input noise drawn.  Input noise
    is drawn only when some σ_x² > 0 (a concrete decision: the values are config values).
    """
    s2 = np.asarray(label_noise, float).reshape(-1)
    if input_noise is None:
        return np.stack([s2, np.zeros_like(s2)], axis=1), False, (s2.size,)
    sx2 = np.asarray(input_noise, float).reshape(-1)
    grid = np.stack(np.meshgrid(s2, sx2, indexing="ij"), axis=-1).reshape(-1, 2)
    return grid, bool(np.any(sx2 > 0)), (s2.size, sx2.size)


def _moments(values):
    return jnp.stack([jnp.mean(values), jnp.mean(values**2)])


def _mean_se(m, n_total):
    m = np.asarray(m, float)
    return mean_and_se(m[..., 0], m[..., 1], n_total)


def reference_risks(key, factor, n_context: int, label_noise, *, n_prompts: int, batch: int,
                    ridge_lambda=(), input_noise=None):
    """Monte Carlo risks of the Bayes, OLS and ridge predictors at each noise level.

    ``key`` is split into ``n_prompts // batch`` batch keys exactly as the sweep's model
    evaluation does.  Returns ``{"bayes": (mean, se), "ols": (mean, se), "ridge":
    (mean (λ, …), se (λ, …))}``; means and SEs have one entry per σ² level, or, with
    ``input_noise`` (a sequence of σ_x²), shape (σ² levels, σ_x² levels) on the grid of
    :func:`noise_pairs`.  The Bayes risk is NaN wherever σ_x² > 0 (no closed-form posterior
    mean there; see the module docstring).
    """
    n_batches = max(1, n_prompts // batch)
    keys = jax.random.split(key, n_batches)
    pairs, draw_xi, shape = noise_pairs(label_noise, input_noise)
    levels = jnp.asarray(pairs, jnp.result_type(float))
    lams = jnp.asarray(tuple(ridge_lambda) or (1.0,), jnp.result_type(float))

    def per_batch(acc, k):
        prompts, eps = draw_eval(k, factor, n_context, batch)
        xi = draw_input_noise(k, prompts) if draw_xi else None

        def level(noise):
            s2, sx2 = noise[0], noise[1]
            y = noisy_labels(prompts, eps, s2)
            x = noisy_inputs(prompts, xi, sx2)

            def err(lam):
                w = jax.vmap(shrinkage_estimate, in_axes=(0, 0, None))(x, y, lam)
                return _moments((jnp.sum(w * prompts.x_query, -1) - prompts.y_query) ** 2)

            return err(s2), err(0.0), jax.vmap(err)(lams)

        return jax.tree_util.tree_map(jnp.add, acc, jax.lax.map(level, levels)), None

    p = levels.shape[0]
    zero = (jnp.zeros((p, 2)), jnp.zeros((p, 2)), jnp.zeros((p, lams.size, 2)))
    total, _ = jax.jit(lambda ks: jax.lax.scan(per_batch, zero, ks))(keys)
    total = jax.tree_util.tree_map(lambda a: np.asarray(a) / n_batches, total)
    n_total = n_batches * batch
    bayes_mean, bayes_se = _mean_se(total[0], n_total)
    not_bayes = pairs[:, 1] > 0
    bayes_mean, bayes_se = (np.where(not_bayes, np.nan, v) for v in (bayes_mean, bayes_se))
    ols_mean, ols_se = _mean_se(total[1], n_total)
    ridge_mean, ridge_se = _mean_se(total[2], n_total)  # (pairs, λ)
    grid = lambda v: v.reshape(shape)  # noqa: E731
    lam_first = lambda v: np.moveaxis(v, -1, 0).reshape((lams.size, *shape))  # noqa: E731
    return {"bayes": (grid(bayes_mean), grid(bayes_se)), "ols": (grid(ols_mean), grid(ols_se)),
            "ridge": (lam_first(ridge_mean), lam_first(ridge_se))}
