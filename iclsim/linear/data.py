"""Prompt sampler for setting 1 (``docs/theory/linear.md``, section "Data").

A prompt is a task ``w ~ N(0, I_d)``, context inputs ``x_1..x_N ~ N(0, Λ)``,
labels ``y_i = wᵀx_i`` and a query ``x_q ~ N(0, Λ)`` with target ``y_q = wᵀx_q``.
Evaluation noise corrupts the context only (Theorem B): labels
``y_i + ε_i`` with ``ε ~ N(0, σ²)`` and shown inputs ``x_i + ξ_i`` with
``ξ ~ N(0, σ_x² I)`` (labels still computed from the clean ``x_i``).

Two samplers draw the same prompts:

* the token sampler :func:`sample_prompts` draws every context example,
  (N+1)·d + d normals (more with noise) per prompt;
* the sufficient-statistic samplers draw only what a one-layer LSA reads off the
  context, exactly in distribution and at a cost independent of N:
  :func:`sample_statistic` gives h = (1/N) Σ ỹ_i x̃_i (all the reduced and block
  parametrisations see), :func:`sample_gram` the Gram Σ z_i z_iᵀ of the context
  tokens z_i = (x̃_i, ỹ_i) (all the full LSA sees).  :func:`context_statistic` and
  :func:`context_gram` compute the same quantities from token prompts.

Why it is exact.  Given w the context examples are i.i.d. and (x̃_i, ỹ_i) is
jointly Gaussian.  With Λ_x := Λ + σ_x² I = M Mᵀ (Cholesky) write x̃_i = M u_i,
u_i ~ N(0, I_d); then ỹ_i = cᵀu_i + s ε_i with ε_i ~ N(0, 1) independent of u_i,

    c = M⁻¹ Λ w,   s² = σ² + σ_x² wᵀ Λ Λ_x⁻¹ w,   v := Var(ỹ | w) = |c|² + s² = wᵀΛw + σ²

(regression of the clean label part wᵀx_i on x̃_i; with σ_x² = 0, M = L and
c = Lᵀw).  Regressing u_i on ỹ_i: u_i = (c/v) ỹ_i + r_i, r_i ~ N(0, I − ccᵀ/v)
independent of ỹ_i.  Hence, with S = Σ ỹ_i² = v χ²_N,

    Σ ỹ_i u_i = (c/v) S + √S (I − ccᵀ/v)^{1/2} g,   g ~ N(0, I_d),

and (I − ccᵀ/v)^{1/2} = I − ccᵀ/(√v(√v + s)) in closed form — no factorisation of
the (singular when σ² = σ_x² = 0) residual covariance.  Then Σ ỹ_i x̃_i = M Σ ỹ_i u_i.
For the Gram: z_i = B q_i with q_i ~ N(0, I_{d+1}) and the lower-triangular
B = [[M, 0], [cᵀ, s]], so Σ z_i z_iᵀ = B W Bᵀ with W ~ Wishart_{d+1}(N, I), drawn
by Bartlett's decomposition W = T Tᵀ (T lower triangular, T_kk² ~ χ²_{N−k},
T_kj ~ N(0, 1) below the diagonal; for N < d+1 only the first N columns).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from iclsim._validation import check_covariance, check_int, check_nonnegative, is_traced

__all__ = [
    "Prompts",
    "sample_prompts",
    "covariance_factor",
    "ContextStatistic",
    "ContextGram",
    "SAMPLERS",
    "sample_statistic",
    "sample_gram",
    "context_statistic",
    "context_gram",
    "statistic_prompts",
]

#: Prompt samplers of setting 1: ``"statistic"`` (exact sufficient statistic,
#: cost independent of N; :func:`sample_statistic` / :func:`sample_gram`) and
#: ``"tokens"`` (every context example; :func:`sample_prompts`, the reference).
SAMPLERS = ("statistic", "tokens")


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


# --------------------------------------------------------------------------------------
# Sufficient-statistic samplers (exact in distribution, cost independent of N)
# --------------------------------------------------------------------------------------


class ContextStatistic(NamedTuple):
    """What the reduced and block LSA read from a batch of prompts (a pytree, batch first)."""

    h: jax.Array
    """(B, d) h = (1/N) Σ_i ỹ_i x̃_i over the N context examples as shown (noisy if σ², σ_x² > 0).
    """
    x_query: jax.Array
    """(B, d) query inputs (always clean)."""
    y_query: jax.Array
    """(B,) query targets wᵀx_q (always clean)."""
    w: jax.Array
    """(B, d) the task vector of each prompt."""


class ContextGram(NamedTuple):
    """What the full LSA reads from a batch of prompts (a pytree, batch first)."""

    gram: jax.Array
    """(B, d+1, d+1) Σ_{i≤N} z_i z_iᵀ of the context tokens z_i = (x̃_i, ỹ_i) (not divided
    by N; the query token (x_q, 0) is not included)."""
    x_query: jax.Array
    """(B, d) query inputs (always clean)."""
    y_query: jax.Array
    """(B,) query targets wᵀx_q (always clean)."""
    w: jax.Array
    """(B, d) the task vector of each prompt."""


def _tasks_and_queries(key_w, key_q, chol, batch, task):
    d = chol.shape[0]
    dtype = chol.dtype
    if task is None:
        w = jax.random.normal(key_w, (batch, d), dtype)
    else:
        task = jnp.asarray(task, dtype)
        if task.shape != (d,):
            raise ValueError(f"task must have shape ({d},), got {task.shape}")
        w = jnp.broadcast_to(task, (batch, d))
    x_query = jax.random.normal(key_q, (batch, d), dtype) @ chol.T
    y_query = jnp.einsum("bd,bd->b", x_query, w)
    return w, x_query, y_query


def _conditional_model(chol, w, label_noise, input_noise):
    """``(M, c, s)`` with x̃ = M u, ỹ = cᵀu + s ε (u ~ N(0, I_d), ε ~ N(0, 1)) given each w.

    M (d, d) = chol(Λ + σ_x² I) is shared by the batch; c (B, d) = M⁻¹Λw and
    s (B,) = sqrt(σ² + σ_x² wᵀΛ(Λ + σ_x² I)⁻¹w).  A concrete σ_x² = 0 skips the
    factorisation (M = L, c = Lᵀw); a traced one always factorises.
    """
    dtype = chol.dtype
    label_noise = 0.0 if _is_static_zero(label_noise) else jnp.asarray(label_noise, dtype)
    if _is_static_zero(input_noise):
        m = chol
        c = w @ chol  # row b: (Lᵀ w_b)ᵀ
        s2 = jnp.broadcast_to(jnp.asarray(label_noise, dtype), w.shape[:1])
    else:
        sx2 = jnp.asarray(input_noise, dtype)
        d = chol.shape[0]
        cov = chol @ chol.T
        m = jnp.linalg.cholesky(cov + sx2 * jnp.eye(d, dtype=dtype))
        t = jax.scipy.linalg.solve_triangular(m, cov, lower=True)  # M⁻¹Λ
        c = w @ t.T
        # Λ and (Λ + σ_x² I)⁻¹ commute, so σ_x² Λ_x⁻¹Λ is symmetric PSD.
        dmat = sx2 * jax.scipy.linalg.cho_solve((m, True), cov)
        dmat = 0.5 * (dmat + dmat.T)
        s2 = label_noise + jnp.einsum("bi,ij,bj->b", w, dmat, w)
    s = jnp.sqrt(jnp.maximum(s2, 0.0))
    return m, c, s


#: Degrees of freedom up to which a χ² is drawn as a sum of squared normals (cheaper
#: than a gamma draw there, and much cheaper at 1 degree of freedom).
_CHI_SQUARE_BY_NORMALS = 8

#: Marsaglia–Tsang candidates drawn at once per gamma value (:func:`_gamma`).  At shape
#: α = N/2 >= 4.5 a candidate is rejected with probability <= 0.007 (0.003 at N = 20), so
#: with 2 candidates a value needs the redraw loop with probability <= 5e-5 (9e-6 at N = 20).
_GAMMA_CANDIDATES = 2


def _gamma(key, alpha, shape, dtype, candidates=_GAMMA_CANDIDATES):
    """Gamma(α, 1) draws of ``shape`` (α: static array >= 1 broadcastable to ``shape``), exact.

    Marsaglia–Tsang rejection (d = α − 1/3, c = 1/√(9d); candidate d·(1 + c x)³ for
    x ~ N(0, 1), accepted if log u < x²/2 + d − d v + d log v, u ~ U(0, 1)): every value
    gets ``candidates`` i.i.d. candidates at once, vectorised, and takes the first accepted
    one; values with none accepted (rare) draw one fresh candidate per value per pass of a
    ``lax.while_loop`` until all are accepted.  Each value is the first accepted candidate
    of an i.i.d. sequence, so the result is exactly Gamma(α), and the loop runs zero passes
    in almost every call — unlike ``jax.random.gamma``, whose loop under ``vmap`` runs
    until the slowest of all values is accepted, with a key split per value and pass.
    """
    alpha = np.broadcast_to(np.asarray(alpha, float), shape)
    if np.any(alpha < 1):
        raise ValueError("_gamma needs shape parameters >= 1")
    d = jnp.asarray(alpha - 1.0 / 3.0, dtype)
    c = jnp.asarray(1.0 / np.sqrt(9.0 * (alpha - 1.0 / 3.0)), dtype)

    def propose(k, count):
        k_x, k_u = jax.random.split(k)
        x = jax.random.normal(k_x, (count,) + tuple(shape), dtype)
        u = jax.random.uniform(k_u, (count,) + tuple(shape), dtype)
        v = (1.0 + c * x) ** 3
        pos = v > 0
        safe_v = jnp.where(pos, v, 1.0)
        ok = pos & (jnp.log(u) < 0.5 * x * x + d - d * safe_v + d * jnp.log(safe_v))
        return ok, d * safe_v

    ok, value = propose(key, candidates)
    done, out = ok[-1], value[-1]
    for i in range(candidates - 2, -1, -1):  # the first accepted candidate wins
        out = jnp.where(ok[i], value[i], out)
        done = done | ok[i]

    def pending(state):
        return jnp.any(~state[1])

    def redraw(state):
        i, done, out = state
        ok, value = propose(jax.random.fold_in(key, i), 1)
        fresh = ~done & ok[0]
        return i + 1, done | fresh, jnp.where(fresh, value[0], out)

    _, _, out = jax.lax.while_loop(pending, redraw, (jnp.ones((), jnp.int32), done, out))
    return out


def _chi_square(key, dfs, batch, dtype):
    """(batch, len(dfs)) independent χ² draws, column k with ``dfs[k]`` (static ints >= 1).

    Small degrees of freedom: sums of squared normals; the others: 2·Gamma(df/2) by
    :func:`_gamma` (exact, no loop in almost every call).
    """
    dfs = np.asarray(dfs, int).reshape(-1)
    out = jnp.zeros((batch, dfs.size), dtype)
    small = np.flatnonzero(dfs <= _CHI_SQUARE_BY_NORMALS)
    large = np.flatnonzero(dfs > _CHI_SQUARE_BY_NORMALS)
    k_small, k_large = jax.random.split(key)
    if small.size:
        width = int(dfs[small].max())
        z = jax.random.normal(k_small, (batch, small.size, width), dtype)
        keep = np.arange(width)[None, :] < dfs[small][:, None]
        out = out.at[:, small].set(jnp.sum(jnp.where(keep, z * z, 0.0), axis=-1))
    if large.size:
        gamma = _gamma(k_large, 0.5 * dfs[large], (batch, large.size), dtype)
        out = out.at[:, large].set(2.0 * gamma)
    return out


def _check_sampler_args(n_context, batch, label_noise, input_noise, factor):
    n = check_int("n_context", n_context, 1)
    b = check_int("batch", batch, 1)
    check_nonnegative("label_noise", label_noise)
    check_nonnegative("input_noise", input_noise)
    chol = jnp.asarray(factor)
    if chol.ndim != 2 or chol.shape[0] != chol.shape[1]:
        raise ValueError(f"factor must be a square (d, d) Cholesky factor, got shape {chol.shape}")
    return n, b, chol.astype(jnp.result_type(float))


def sample_statistic(
    key, factor, n_context, batch, *, label_noise=0.0, input_noise=0.0, task=None
) -> ContextStatistic:
    """Sample h = (1/N) Σ ỹ_i x̃_i and the query of ``batch`` prompts, exactly, in O(d²) per prompt.

    Same distribution as ``context_statistic(sample_prompts(key', cov, n_context,
    batch, label_noise=..., input_noise=..., task=..., factor=factor))`` for every
    N >= 1 and noise level (the draws differ: this is a different random stream).
    Per prompt it draws the task w (d normals), the query (d normals), one χ²_N
    and d normals (see the module docstring for the derivation).  All the
    reduced and block parametrisations use; the full LSA needs :func:`sample_gram`.

    Parameters
    ----------
    key : PRNG key.
    factor : (d, d) lower Cholesky factor L of Λ (L Lᵀ = Λ), as
        :func:`covariance_factor` returns; may be traced.
    n_context, batch : static ints >= 1.
    label_noise : σ² >= 0, context label-noise variance (may be traced).
    input_noise : σ_x² >= 0, context input-noise variance (may be traced; a
        traced level costs a d×d Cholesky per call, not per prompt).
    task : optional (d,) fixed task w used for every prompt (Theorem B(c)).

    Returns
    -------
    :class:`ContextStatistic` ``(h (B, d), x_query (B, d), y_query (B,), w (B, d))``
    in ``jnp.result_type(float)``.  ``x_queryᵀ Γ h`` is the reduced prediction;
    :func:`statistic_prompts` wraps it for :func:`iclsim.linear.model.apply`.
    """
    n, b, chol = _check_sampler_args(n_context, batch, label_noise, input_noise, factor)
    dtype = chol.dtype
    k_w, k_q, k_chi, k_g = jax.random.split(key, 4)
    w, x_query, y_query = _tasks_and_queries(k_w, k_q, chol, b, task)
    m, c, s = _conditional_model(chol, w, label_noise, input_noise)
    sqrt_v = jnp.sqrt(jnp.sum(c * c, axis=-1) + s * s)
    chi = _chi_square(k_chi, [n], b, dtype)[:, 0]  # S / v
    g = jax.random.normal(k_g, w.shape, dtype)
    # Σ ỹ u = c χ + √χ (√v g − c (cᵀg)/(√v + s)); the denominator is 0 only when c = 0
    # and s = 0 (then every ỹ_i = 0 and the term it divides vanishes as well).
    den = sqrt_v + s
    den = jnp.where(den > 0, den, 1.0)
    proj = jnp.einsum("bd,bd->b", c, g) / den
    sum_yu = c * chi[:, None] + jnp.sqrt(chi)[:, None] * (sqrt_v[:, None] * g - c * proj[:, None])
    h = (sum_yu @ m.T) / n
    return ContextStatistic(h=h, x_query=x_query, y_query=y_query, w=w)


def _bartlett_indices(p, n):
    """Static (row, col) index arrays of T's diagonal and strictly-lower free entries."""
    k = min(p, n)
    diag = np.arange(k)
    rows, cols = np.tril_indices(p, -1)
    keep = cols < n
    return diag, rows[keep], cols[keep]


def sample_gram(
    key, factor, n_context, batch, *, label_noise=0.0, input_noise=0.0, task=None
) -> ContextGram:
    """Sample the context Gram Σ_{i≤N} z_i z_iᵀ and the query of ``batch`` prompts, exactly.

    z_i = (x̃_i, ỹ_i) ∈ R^{d+1} are the context tokens as shown to the model.  Same
    distribution as ``context_gram(sample_prompts(...))`` for every N >= 1 and noise
    level: given w, Σ z_i z_iᵀ = B W Bᵀ with B = [[M, 0], [cᵀ, s]] (module
    docstring) and W ~ Wishart_{d+1}(N, I) drawn by Bartlett's decomposition —
    min(N, d+1) χ² draws and the free strictly-lower entries, at most
    (d+1)(d+2)/2 draws per prompt for any N.  All the full LSA reads off the
    context: its prediction is ``ŷ = v · (G + e_q e_qᵀ) W^{KQ} e_q / N`` with
    e_q = (x_q, 0), v = W^{PV}[d, :] and G = ``gram``.

    Parameters and noise handling as :func:`sample_statistic`.

    Returns
    -------
    :class:`ContextGram` ``(gram (B, d+1, d+1), x_query (B, d), y_query (B,), w (B, d))``.
    """
    n, b, chol = _check_sampler_args(n_context, batch, label_noise, input_noise, factor)
    dtype = chol.dtype
    d = chol.shape[0]
    p = d + 1
    k_w, k_q, k_chi, k_off = jax.random.split(key, 4)
    w, x_query, y_query = _tasks_and_queries(k_w, k_q, chol, b, task)
    m, c, s = _conditional_model(chol, w, label_noise, input_noise)
    diag, rows, cols = _bartlett_indices(p, n)
    chi = _chi_square(k_chi, n - diag, b, dtype)
    tri = jnp.zeros((b, p, p), dtype).at[:, diag, diag].set(jnp.sqrt(chi))
    if rows.size:
        off = jax.random.normal(k_off, (b, rows.size), dtype)
        tri = tri.at[:, rows, cols].set(off)
    top = jnp.broadcast_to(jnp.concatenate([m, jnp.zeros((d, 1), dtype)], axis=1), (b, d, p))
    bottom = jnp.concatenate([c, s[:, None]], axis=1)[:, None, :]
    mix = jnp.concatenate([top, bottom], axis=1)  # B = [[M, 0], [cᵀ, s]], (b, p, p)
    f = mix @ tri
    gram = f @ jnp.swapaxes(f, -1, -2)
    return ContextGram(gram=gram, x_query=x_query, y_query=y_query, w=w)


def context_statistic(prompts: Prompts) -> ContextStatistic:
    """The :class:`ContextStatistic` of token prompts: h = (1/N) Σ ỹ_i x̃_i and the query."""
    n = prompts.y.shape[-1]
    h = jnp.einsum("...n,...nd->...d", prompts.y, prompts.x) / n
    return ContextStatistic(h=h, x_query=prompts.x_query, y_query=prompts.y_query, w=prompts.w)


def context_gram(prompts: Prompts) -> ContextGram:
    """The :class:`ContextGram` of token prompts: Σ_{i≤N} z_i z_iᵀ, z_i = (x̃_i, ỹ_i); the query."""
    z = jnp.concatenate([prompts.x, prompts.y[..., None]], axis=-1)
    gram = jnp.einsum("...ni,...nj->...ij", z, z)
    return ContextGram(gram=gram, x_query=prompts.x_query, y_query=prompts.y_query, w=prompts.w)


def statistic_prompts(stat: ContextStatistic) -> Prompts:
    """A one-example :class:`Prompts` with the same h: x = h (B, 1, d), y = 1 (B, 1).

    ``iclsim.linear.model.apply(params, statistic_prompts(stat))`` is exactly
    ``x_qᵀ Γ h`` for the reduced and block parametrisations (their h is
    (1/1)·1·h), so a trainer can switch samplers without a new model function.
    NOT valid for the full LSA (it reads the Gram and N, not h): use
    :func:`sample_gram` there.
    """
    ones = jnp.ones(stat.h.shape[:-1] + (1,), stat.h.dtype)
    return Prompts(x=stat.h[..., None, :], y=ones, x_query=stat.x_query, y_query=stat.y_query,
                   w=stat.w)
