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

Random draws.  One call of a statistic sampler draws all its standard normals and
uniforms (w, the query, g, the χ² draw's normals and uniforms, the Bartlett
off-diagonal normals) from one key with ONE Threefry-2x32 call,
``jax.extend.random.threefry_2x32(key_data(k), iota(m))``: it hashes the m counts
in pairs and keeps both 32-bit outputs of each hash, m/2 hashes for m words.
``jax.random`` under its default ``jax_threefry_partitionable=True`` spends a whole
hash per 32-bit word (it XORs the two outputs), so in float32 this is half the
hashing.  The words are exactly JAX's own stream: ``jax.random.bits(k, (m,),
uint32)`` under ``jax_threefry_partitionable=False`` (the pre-0.5 default); a
float64 value takes 64 bits, word i of the first half (high) and of the second
half (low) of 2m words — the two outputs of one hash — as JAX does.  The words
become floats exactly as ``jax.random.uniform`` / ``jax.random.normal`` do (top
``nmant`` bits as the mantissa of a float in [1, 2), minus 1; a normal is
√2·erf⁻¹(u) with u uniform on [nextafter(−1, 0), 1)), so the floats are
bit-identical to ``jax.random.normal(k, (m,))`` / ``uniform`` under that flag
(:func:`_random_words`, :func:`_standard_draws`; see the RNG configuration notes
of https://docs.jax.dev/en/latest/jax.random.html and
https://docs.jax.dev/en/latest/jax.extend.random.html).  Distinct draws use
disjoint slices of the words, so they are independent exactly as separate
``jax.random`` calls are (the Threefry pseudo-random-function assumption).  Other
PRNG implementations (e.g. ``rbg``) draw the words with ``jax.random.bits``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.extend.random as jax_random_ext
import jax.numpy as jnp
import numpy as np
from jax import lax

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


#: Unsigned word type of each float width (the bits one float value consumes).
_UINT_OF_BITS = {32: jnp.uint32, 64: jnp.uint64}


def _float_bits(dtype) -> int:
    bits = jnp.finfo(dtype).bits
    if bits not in _UINT_OF_BITS:
        raise TypeError(f"the statistic samplers draw float32 or float64, got {jnp.dtype(dtype)}")
    return bits


def _typed_key(key):
    """``key`` as a typed key (a raw uint32 key is wrapped with the default PRNG implementation,
    as ``jax.random`` does)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def _random_words(key, count, dtype):
    """(count,) i.i.d. uniform random words of ``dtype``'s width (uint32 for float32, uint64
    for float64) from one key.

    Threefry keys: one ``jax.extend.random.threefry_2x32(key_data(key), iota(m))`` call, m =
    count (32-bit) or 2·count (64-bit: value i = word i << 32 | word count + i, the two
    outputs of one hash), i.e. m/2 hashes, both outputs of each kept.  Bit for bit this is
    ``jax.random.bits(key, (count,), uint32/uint64)`` under
    ``jax_threefry_partitionable=False`` (JAX's own counter-mode stream), which costs m
    hashes under the default ``True`` in float32.  Other implementations (``rbg``, ...):
    ``jax.random.bits``.
    """
    nbits = _float_bits(dtype)
    uint = _UINT_OF_BITS[nbits]
    key = _typed_key(key)
    if str(jax.random.key_impl(key)) != "threefry2x32":
        return jax.random.bits(key, (count,), uint)
    m = count * (nbits // 32)
    if m >= 2**32 - 1:
        raise ValueError(f"{count} draws exceed the 2^32 − 1 Threefry counters of one key")
    raw = jax_random_ext.threefry_2x32(jax.random.key_data(key), lax.iota(jnp.uint32, m))
    if nbits == 32:
        return raw
    high = raw[:count].astype(jnp.uint64)
    low = raw[count:].astype(jnp.uint64)
    return lax.shift_left(high, jnp.uint64(32)) | low


def _uniform_from_words(words, dtype, minval=0.0, maxval=1.0):
    """Uniform floats on [minval, maxval) from uniform words, as ``jax.random.uniform``: the top
    ``nmant`` bits (23 / 52) become the mantissa of a float in [1, 2); minus 1 gives the
    2^nmant equally likely values k·2^-nmant of [0, 1); scaled to [minval, maxval), clipped
    below at minval."""
    finfo = jnp.finfo(dtype)
    uint = words.dtype
    minval = lax.convert_element_type(minval, dtype)
    maxval = lax.convert_element_type(maxval, dtype)
    mantissa = lax.shift_right_logical(words, jnp.array(finfo.bits - finfo.nmant, uint))
    one = jnp.asarray(np.array(1.0, dtype).view(np.dtype(uint)), uint)
    floats = lax.bitcast_convert_type(lax.bitwise_or(mantissa, one), dtype) - jnp.array(1.0, dtype)
    return lax.max(minval, floats * (maxval - minval) + minval)


def _normal_from_words(words, dtype):
    """Standard normals from uniform words, as ``jax.random.normal``: √2·erf⁻¹(u), u uniform
    on [nextafter(−1, 0), 1) by :func:`_uniform_from_words` (the inverse CDF of a uniform)."""
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype)
    u = _uniform_from_words(words, dtype, lo, np.array(1.0, dtype))
    return lax.mul(np.array(np.sqrt(2), dtype), lax.erf_inv(u))


def _standard_draws(key, parts, dtype):
    """Independent standard draws for ``parts`` = {name: ("normal" | "uniform", shape)} from
    one key: ``{name: array of shape}`` in ``dtype``.

    All words come from one :func:`_random_words` call; each part takes a disjoint slice
    (normals first, then uniforms, in the order given) converted by
    :func:`_normal_from_words` (N(0, 1)) or :func:`_uniform_from_words` (U[0, 1)).  Disjoint
    slices of one i.i.d. word stream are independent, so the parts are independent and each
    has exactly the distribution of ``jax.random.normal`` / ``uniform`` of its shape.
    """
    sizes = {name: math.prod(shape) for name, (_, shape) in parts.items()}
    for name, (kind, _) in parts.items():
        if kind not in ("normal", "uniform"):
            raise ValueError(f"part {name!r}: unknown kind {kind!r}")
    normal = [name for name, (kind, _) in parts.items() if kind == "normal"]
    uniform = [name for name, (kind, _) in parts.items() if kind == "uniform"]
    n_normal = sum(sizes[name] for name in normal)
    total = n_normal + sum(sizes[name] for name in uniform)
    out = {}
    if total == 0:
        return {name: jnp.zeros(shape, dtype) for name, (_, shape) in parts.items()}
    words = _random_words(key, total, dtype)
    blocks = (_normal_from_words(words[:n_normal], dtype),
              _uniform_from_words(words[n_normal:], dtype))
    for names, block in zip((normal, uniform), blocks):
        offset = 0
        for name in names:
            size = sizes[name]
            out[name] = block[offset:offset + size].reshape(parts[name][1])
            offset += size
    return {name: out[name] for name in parts}


def _tasks_and_queries(w_normals, q_normals, chol, batch, task):
    """(w, x_q, y_q) from standard normals: w = the normals (or the fixed ``task``), x_q = L z."""
    d = chol.shape[0]
    dtype = chol.dtype
    if task is None:
        w = w_normals
    else:
        task = jnp.asarray(task, dtype)
        if task.shape != (d,):
            raise ValueError(f"task must have shape ({d},), got {task.shape}")
        w = jnp.broadcast_to(task, (batch, d))
    x_query = q_normals @ chol.T
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


def _gamma_parts(count, shape):
    """The standard draws of ``count`` Marsaglia–Tsang candidates per value (:func:`_gamma`)."""
    shape = (count,) + tuple(shape)
    return {"gamma_x": ("normal", shape), "gamma_u": ("uniform", shape)}


def _gamma(key, alpha, shape, dtype, candidates=_GAMMA_CANDIDATES, first=None):
    """Gamma(α, 1) draws of ``shape`` (α: static array >= 1 broadcastable to ``shape``), exact.

    Marsaglia–Tsang rejection (d = α − 1/3, c = 1/√(9d); candidate d·(1 + c x)³ for
    x ~ N(0, 1), accepted if log u < x²/2 + d − d v + d log v, u ~ U(0, 1)): every value
    gets ``candidates`` i.i.d. candidates at once, vectorised, and takes the first accepted
    one; values with none accepted (rare) draw one fresh candidate per value per pass of a
    ``lax.while_loop`` until all are accepted.  Each value is the first accepted candidate
    of an i.i.d. sequence, so the result is exactly Gamma(α), and the loop runs zero passes
    in almost every call — unlike ``jax.random.gamma``, whose loop under ``vmap`` runs
    until the slowest of all values is accepted, with a key split per value and pass.

    ``first``: the (x, u) of the first ``candidates`` candidates, (candidates, *shape) each
    (the sampler draws them with its other draws, :func:`_gamma_parts`); ``key`` then only
    seeds the redraw passes (pass i: :func:`_standard_draws` of ``fold_in(key, i)``), so it
    must be independent of whatever ``first`` came from.  Without ``first`` they are drawn
    from a key split off ``key``.
    """
    alpha = np.broadcast_to(np.asarray(alpha, float), shape)
    if np.any(alpha < 1):
        raise ValueError("_gamma needs shape parameters >= 1")
    d = jnp.asarray(alpha - 1.0 / 3.0, dtype)
    c = jnp.asarray(1.0 / np.sqrt(9.0 * (alpha - 1.0 / 3.0)), dtype)

    def accept(x, u):
        v = (1.0 + c * x) ** 3
        pos = v > 0
        safe_v = jnp.where(pos, v, 1.0)
        ok = pos & (jnp.log(u) < 0.5 * x * x + d - d * safe_v + d * jnp.log(safe_v))
        return ok, d * safe_v

    def propose(k, count):
        draws = _standard_draws(k, _gamma_parts(count, shape), dtype)
        return accept(draws["gamma_x"], draws["gamma_u"])

    if first is None:
        k_first, key = jax.random.split(key)
        ok, value = propose(k_first, candidates)
    else:
        ok, value = accept(*first)
    count = ok.shape[0]
    done, out = ok[-1], value[-1]
    for i in range(count - 2, -1, -1):  # the first accepted candidate wins
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


def _chi_square_split(dfs):
    dfs = np.asarray(dfs, int).reshape(-1)
    return dfs, np.flatnonzero(dfs <= _CHI_SQUARE_BY_NORMALS), np.flatnonzero(
        dfs > _CHI_SQUARE_BY_NORMALS)


def _chi_square_parts(dfs, batch, candidates=_GAMMA_CANDIDATES):
    """The standard draws :func:`_chi_square` consumes: Σ df normals per row for the small
    degrees of freedom ("chi_z", (batch, Σ df)), the Marsaglia–Tsang candidates for the others
    (:func:`_gamma_parts`, (candidates, batch, #large))."""
    dfs, small, large = _chi_square_split(dfs)
    parts = {}
    if small.size:
        parts["chi_z"] = ("normal", (batch, int(dfs[small].sum())))
    if large.size:
        parts.update(_gamma_parts(candidates, (batch, large.size)))
    return parts


def _chi_square(key, dfs, batch, dtype, draws=None):
    """(batch, len(dfs)) independent χ² draws, column k with ``dfs[k]`` (static ints >= 1).

    Small degrees of freedom: sums of df squared normals (disjoint normals per column); the
    others: 2·Gamma(df/2) by :func:`_gamma` (exact, no loop in almost every call).
    ``draws``: the parts of :func:`_chi_square_parts` already drawn (by the sampler, with its
    other draws); ``key`` then only seeds :func:`_gamma`'s rare redraws and must be
    independent of them.  Without ``draws`` they are drawn from a key split off ``key``.
    """
    dfs, small, large = _chi_square_split(dfs)
    if draws is None:
        k_draws, key = jax.random.split(key)
        draws = _standard_draws(k_draws, _chi_square_parts(dfs, batch), dtype)
    out = jnp.zeros((batch, dfs.size), dtype)
    if small.size:
        z2 = draws["chi_z"] ** 2
        ends = np.cumsum(dfs[small])
        sums = [jnp.sum(z2[:, end - df:end], axis=-1) for df, end in zip(dfs[small], ends)]
        out = out.at[:, small].set(jnp.stack(sums, axis=-1))
    if large.size:
        gamma = _gamma(key, 0.5 * dfs[large], (batch, large.size), dtype,
                       first=(draws["gamma_x"], draws["gamma_u"]))
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


def _sampler_draws(key, parts, dfs, batch, dtype):
    """The draws of one sampler call: ``parts`` and the χ² of ``dfs`` from ONE
    :func:`_standard_draws` call on a key split off ``key``; the other half of the split seeds
    only the χ² draw's rare redraw passes (:func:`_gamma`), independent of the first."""
    k_draws, k_redraw = jax.random.split(key)
    draws = _standard_draws(k_draws, {**parts, **_chi_square_parts(dfs, batch)}, dtype)
    return draws, _chi_square(k_redraw, dfs, batch, dtype, draws=draws)


def _task_query_parts(batch, d, fixed_task):
    parts = {} if fixed_task else {"w": ("normal", (batch, d))}
    parts["query"] = ("normal", (batch, d))
    return parts


def _statistic_draws(key, n, batch, d, dtype, fixed_task=False):
    """All random draws of one :func:`sample_statistic` call: ``(z_w, z_q, chi, g)`` — task
    normals (batch, d) (None for a fixed task), query normals (batch, d), χ²_N (batch,) and
    g (batch, d) — from one key (:func:`_sampler_draws`: one Threefry call draws all but
    the rare χ² redraws).  The benchmark's RNG floor times exactly this function."""
    parts = {**_task_query_parts(batch, d, fixed_task), "g": ("normal", (batch, d))}
    draws, chi = _sampler_draws(key, parts, [n], batch, dtype)
    return draws.get("w"), draws["query"], chi[:, 0], draws["g"]


def _gram_draws(key, n, batch, d, dtype, fixed_task=False):
    """All random draws of one :func:`sample_gram` call: ``(z_w, z_q, chi, off)`` — task and
    query normals as :func:`_statistic_draws`, the Bartlett diagonal χ²_{N−k}, k < min(N, d+1)
    (batch, min(N, d+1)), and its free strictly-lower normals (batch, #free) — from one key
    (:func:`_sampler_draws`)."""
    diag, rows, _ = _bartlett_indices(d + 1, n)
    parts = _task_query_parts(batch, d, fixed_task)
    if rows.size:
        parts["off"] = ("normal", (batch, rows.size))
    draws, chi = _sampler_draws(key, parts, n - diag, batch, dtype)
    return draws.get("w"), draws["query"], chi, draws.get("off")


def sample_statistic(
    key, factor, n_context, batch, *, label_noise=0.0, input_noise=0.0, task=None
) -> ContextStatistic:
    """Sample h = (1/N) Σ ỹ_i x̃_i and the query of ``batch`` prompts, exactly, in O(d²) per prompt.

    Same distribution as ``context_statistic(sample_prompts(key', cov, n_context,
    batch, label_noise=..., input_noise=..., task=..., factor=factor))`` for every
    N >= 1 and noise level (the draws differ: this is a different random stream).
    Per prompt it draws the task w (d normals), the query (d normals), one χ²_N
    and d normals g (see the module docstring for the derivation): N normals for
    the χ²_N if N <= 8, else two Marsaglia–Tsang candidates (2 normals, 2
    uniforms; :func:`_gamma`).  All of these come from ONE Threefry call on a key
    split off ``key`` (module docstring, "Random draws"; :func:`_statistic_draws`).
    All the reduced and block parametrisations use; the full LSA needs
    :func:`sample_gram`.

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
    z_w, z_q, chi, g = _statistic_draws(key, n, b, chol.shape[0], dtype, task is not None)
    w, x_query, y_query = _tasks_and_queries(z_w, z_q, chol, b, task)
    m, c, s = _conditional_model(chol, w, label_noise, input_noise)
    sqrt_v = jnp.sqrt(jnp.sum(c * c, axis=-1) + s * s)
    # chi = S / v ~ χ²_N.  Σ ỹ u = c χ + √χ (√v g − c (cᵀg)/(√v + s)); the denominator is 0
    # only when c = 0 and s = 0 (then every ỹ_i = 0 and the term it divides vanishes as well).
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
    (d+1)(d+2)/2 draws per prompt for any N, all (with w and the query) from ONE
    Threefry call (:func:`_gram_draws`).  All the full LSA reads off the
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
    z_w, z_q, chi, off = _gram_draws(key, n, b, d, dtype, task is not None)
    w, x_query, y_query = _tasks_and_queries(z_w, z_q, chol, b, task)
    m, c, s = _conditional_model(chol, w, label_noise, input_noise)
    diag, rows, cols = _bartlett_indices(p, n)
    tri = jnp.zeros((b, p, p), dtype).at[:, diag, diag].set(jnp.sqrt(chi))
    if rows.size:
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
