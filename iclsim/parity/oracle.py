"""Exact float64 oracle for setting 2 (theory: ``docs/theory/parity.md``).

In-context sparse parity: hidden bits ``z ∈ {±1}^D`` (uniform), ``D = K·k + D₀``;
K blocks ``B_j`` of k bits each carry the features ``χ_j(z) = Π_{b∈B_j} z_b``, the
last D₀ bits are distractors.  A task is ``(j*, s)`` with ``j* ~ π`` and ``s = ±1``;
labels ``y = s·χ_{j*}(z)``.  The two-layer model with m heads predicts

    ŷ = Σ_h c_h φ_h(z_q) · (1/N) Σ_i y_i φ_h(z_i),   φ_h(z) = cos(π k Σ_b α_{hb} u_b),

``u_b = (1 − z_b)/2``.  Risk is ``E[(ŷ − y_q)²]``.  Evaluation noise corrupts the
context only: labels flipped with probability p, bits flipped with probability q,
so that a context example carries the signal ``μ = (1 − 2p)(1 − 2q)^k``.

This module is pure numpy (float64) and never imports the models or JAX: it is
the independent reference that trained models are checked against.

Conventions: ``π`` is sorted in decreasing order (``π₁ ≥ … ≥ π_K``); the
features ``j = 1..K`` of docs/theory/parity.md are array indices ``0..K−1``
here, so "the top-m features" are indices ``0..m−1`` and a task index ``task`` is 0-based (as in
:class:`iclsim.parity.Prompts`).  ``N = n_context``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from iclsim._validation import check_in_range, check_int

__all__ = [
    "PI_ATOL",
    "BestHeads",
    "check_pi",
    "optimal_readout",
    "signal",
    "optimal_risks",
    "optimal_risk",
    "fixed_task_risk",
    "thresholds",
    "best_heads",
    "feature_moments",
    "population_loss",
]

#: Absolute tolerance on ``Σ π = 1``.
PI_ATOL = 1e-9


class BestHeads(NamedTuple):
    """Result of :func:`best_heads`: ``m_star, mu_star = best_heads(...)``."""

    heads: int
    """m*, the smallest head count minimising the evaluation risk R_m(μ)."""
    thresholds: np.ndarray
    """μ*_j (j = 1..K): feature j lowers the risk iff the context signal μ > μ*_j."""


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def check_pi(pi, name: str = "pi", *, sorted_decreasing: bool = True) -> np.ndarray:
    """Return ``pi`` as a float64 probability vector (1-D, length K >= 1).

    Raises ``ValueError`` naming ``name`` if it is not 1-D and non-empty, has a
    non-finite or negative entry, does not sum to 1 within ``PI_ATOL``, or (with
    ``sorted_decreasing``) is not sorted in decreasing order.

    Returns
    -------
    (K,) float64 array
        ``pi``, validated.
    """
    arr = np.asarray(pi, dtype=float)
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise ValueError(
            f"{name} must be a 1-D probability vector with K >= 1 entries, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must have finite entries in [0, 1] (found NaN or inf)")
    if np.any(arr < 0.0):
        raise ValueError(f"{name} must have entries in [0, 1], got min {arr.min():.6g}")
    total = float(arr.sum())
    # A vector given in a lower precision (float32) sums to 1 only to its own rounding.
    given = np.dtype(getattr(pi, "dtype", np.float64))
    atol = PI_ATOL if given.kind != "f" or given.itemsize >= 8 else max(
        PI_ATOL, 4 * arr.shape[0] * float(np.finfo(given).eps))
    if abs(total - 1.0) > atol:
        raise ValueError(
            f"{name} must sum to 1 (within {atol:g}), got sum {total:.12g}"
        )
    if sorted_decreasing and np.any(np.diff(arr) > 0.0):
        raise ValueError(
            f"{name} must be sorted in decreasing order π₁ >= π₂ >= … (the features are "
            "ranked by importance); sort it, e.g. np.sort(pi)[::-1], and relabel the blocks"
        )
    return arr


def _check_n_context(n_context) -> int:
    return check_int("n_context", n_context, 1)


def _check_flips(label_flip, bit_flip, k):
    """Validate (p, q, k); k may be None only when q == 0 everywhere."""
    check_in_range("label_flip", label_flip, 0.0, 0.5)
    check_in_range("bit_flip", bit_flip, 0.0, 0.5)
    if k is None:
        if np.any(np.asarray(bit_flip, dtype=float) != 0.0):
            raise ValueError(
                "k (the parity degree, an integer in [1, inf)) is required when bit_flip > 0"
            )
        return None
    return check_int("k", k, 1)


def _check_heads(heads, n_features: int) -> int:
    return check_int("heads", heads, 0, n_features)


# --------------------------------------------------------------------------------------
# Theorems C and D
# --------------------------------------------------------------------------------------


def optimal_readout(pi, n_context):
    """γ_j = N π_j / ((N − 1) π_j + 1), the optimal readout of head j
    ((1) of docs/theory/parity.md).

    Returns
    -------
    (K,) float64 array
        γ_1..γ_K for all features; the m-head optimum uses the first m.
    """
    pi = check_pi(pi)
    n = float(_check_n_context(n_context))
    return n * pi / ((n - 1.0) * pi + 1.0)


def signal(label_flip=0.0, bit_flip=0.0, k=None):
    """μ = (1 − 2p)(1 − 2q)^k, the signal a noisy context example carries
    (docs/theory/parity.md, Data).

    ``label_flip`` p and ``bit_flip`` q in [0, 0.5] may be arrays (broadcast);
    ``k`` (the parity degree) is required when q > 0.

    Returns
    -------
    float or float64 array
        μ in [0, 1] (an array of the broadcast shape when p or q is an array).
    """
    k = _check_flips(label_flip, bit_flip, k)
    p = np.asarray(label_flip, dtype=float)
    q = np.asarray(bit_flip, dtype=float)
    mu = (1.0 - 2.0 * p) * ((1.0 - 2.0 * q) ** k if k is not None else 1.0)
    return float(mu) if mu.ndim == 0 else mu


def _deltas(pi, n, mu):
    """Δ_j(μ) = γ_j² ((1 − 1/N) π_j μ² + 1/N) − 2 π_j γ_j μ, shape mu.shape + (K,)."""
    gam = n * pi / ((n - 1.0) * pi + 1.0)
    mu = np.asarray(mu, dtype=float)[..., None]
    return gam**2 * ((1.0 - 1.0 / n) * pi * mu**2 + 1.0 / n) - 2.0 * pi * gam * mu


def optimal_risks(pi, n_context, *, label_flip=0.0, bit_flip=0.0, k=None):
    """``[R_0, R_1, …, R_K]``, the risk of the clean m-head optimum at signal μ
    ((3) of docs/theory/parity.md).

    .. math::  R_m(μ) = 1 + Σ_{j≤m} Δ_j(μ),
               \\quad Δ_j(μ) = γ_j^2((1 − 1/N) π_j μ^2 + 1/N) − 2 π_j γ_j μ,

    with γ from (1) and μ = (1 − 2p)(1 − 2q)^k.  At μ = 1 this is (2),
    ``R_m = 1 − Σ_{j≤m} N π_j² / ((N − 1) π_j + 1)``.  ``label_flip`` and
    ``bit_flip`` may be arrays (broadcast together); the result then has shape
    ``broadcast_shape + (K + 1,)``.

    Returns
    -------
    (K + 1,) float64 array (or ``broadcast_shape + (K + 1,)``)
        Entry m is R_m(μ); entry 0 is 1 (the risk of ŷ = 0).
    """
    pi = check_pi(pi)
    n = float(_check_n_context(n_context))
    mu = np.asarray(signal(label_flip, bit_flip, k), dtype=float)
    delta = _deltas(pi, n, mu)
    zero = np.zeros(delta.shape[:-1] + (1,))
    return 1.0 + np.concatenate([zero, np.cumsum(delta, axis=-1)], axis=-1)


def optimal_risk(pi, n_context, heads, *, label_flip=0.0, bit_flip=0.0, k=None):
    """R_m(μ) of the clean m-head optimum ((3)); see :func:`optimal_risks`.

    Heads uniform on the blocks of the top-m features, readout γ ((1)),
    evaluated with context label flips p and bit flips q.  Ties in π at the
    boundary make the optimum non-unique but not its risk.

    Returns
    -------
    float or float64 array
        R_m(μ) (an array of the broadcast shape when p or q is an array).
    """
    pi = check_pi(pi)
    m = _check_heads(heads, pi.shape[0])
    risks = optimal_risks(pi, n_context, label_flip=label_flip, bit_flip=bit_flip, k=k)
    out = risks[..., m]
    return float(out) if np.ndim(out) == 0 else out


def fixed_task_risk(pi, n_context, heads, task, *, label_flip=0.0, bit_flip=0.0, k=None):
    """Risk of the clean m-head optimum on the fixed task j* ((4) of docs/theory/parity.md).

    .. math::  R_m(j^*, μ) = 1 + Σ_{j≤m} γ_j^2/N
               + [j^* ≤ m](γ_{j^*}^2 (1 − 1/N) μ^2 − 2 γ_{j^*} μ).

    ``task`` is the 0-based index of j* (so ``[j* ≤ m]`` reads ``task < heads``);
    the sign s does not matter.  Averaging over ``task ~ π`` gives (3).

    Returns
    -------
    float or float64 array
        R_m(j*, μ) (an array of the broadcast shape when p or q is an array).
    """
    pi = check_pi(pi)
    n = float(_check_n_context(n_context))
    m = _check_heads(heads, pi.shape[0])
    t = check_int("task", task, 0, pi.shape[0] - 1)
    mu = np.asarray(signal(label_flip, bit_flip, k), dtype=float)
    gam = optimal_readout(pi, n)
    risk = 1.0 + np.sum(gam[:m] ** 2) / n
    if t < m:
        risk = risk + gam[t] ** 2 * (1.0 - 1.0 / n) * mu**2 - 2.0 * gam[t] * mu
    return float(risk) if np.ndim(risk) == 0 else risk


def thresholds(pi, n_context):
    """μ*_j, the signal level above which feature j lowers the risk
    (Theorem D, docs/theory/parity.md).

    Δ_j(μ) < 0 iff ``(N − 1) π_j μ (2 − μ) > 1 − 2μ``.  With ``a = (N − 1) π_j``
    the boundary is the smaller root of ``a μ² − 2(a + 1) μ + 1 = 0``,

    .. math::  μ^*_j = \\frac{1}{(a + 1) + \\sqrt{a^2 + a + 1}} \\in (0, 1/2],

    written in the cancellation-free form (it is ``1/2`` at ``a = 0``).  The other
    root exceeds 1, so on [0, 1] feature j helps exactly when μ > μ*_j.
    μ*_j is non-decreasing in j because π is sorted.

    Returns
    -------
    (K,) float64 array
        μ*_1..μ*_K, each in (0, 1/2].
    """
    pi = check_pi(pi)
    n = float(_check_n_context(n_context))
    a = (n - 1.0) * pi
    return 1.0 / ((a + 1.0) + np.sqrt(a * a + a + 1.0))


def best_heads(pi, n_context, *, label_flip=0.0, bit_flip=0.0, k=None) -> BestHeads:
    """Best head count m* under evaluation noise, and the thresholds μ*_j (Theorem D).

    m* is the smallest minimiser over m = 0..K of :func:`optimal_risk` at
    μ = (1 − 2p)(1 − 2q)^k.  Since Δ_j(μ) < 0 iff μ > μ*_j and μ*_j increases
    with j, this is ``m*(μ) = #{j : (N − 1) π_j μ (2 − μ) > 1 − 2μ}`` (up to
    floating-point ties at μ = μ*_j exactly, where Δ_j = 0).

    Returns
    -------
    BestHeads
        ``(heads, thresholds)``: ``heads`` is m* (int in 0..K), ``thresholds`` the (K,)
        float64 array μ*_1..μ*_K of :func:`thresholds`.
    """
    pi = check_pi(pi)
    n = _check_n_context(n_context)
    mu = signal(label_flip, bit_flip, k)
    if np.ndim(mu) != 0:
        raise ValueError("best_heads takes scalar label_flip and bit_flip")
    risks = optimal_risks(pi, n, label_flip=label_flip, bit_flip=bit_flip, k=k)
    m_star = int(np.argmin(risks))  # argmin returns the first (smallest) minimiser
    return BestHeads(m_star, thresholds(pi, n))


# --------------------------------------------------------------------------------------
# Exact population loss (5) for any attention and readout
# --------------------------------------------------------------------------------------


def _check_attention(attention, readout, n_features, k, distractor_bits):
    d = n_features * k + distractor_bits
    att = np.asarray(attention, dtype=float)
    if att.ndim != 2 or att.shape[1] != d:
        raise ValueError(
            f"attention must have shape (m, D) with D = K·k + distractor_bits = {d}, "
            f"got shape {att.shape}"
        )
    if not np.all(np.isfinite(att)):
        raise ValueError("attention must have finite entries (found NaN or inf)")
    c = np.asarray(readout, dtype=float)
    if c.shape != (att.shape[0],):
        raise ValueError(
            f"readout must have shape (m,) = ({att.shape[0]},) to match attention, got {c.shape}"
        )
    if not np.all(np.isfinite(c)):
        raise ValueError("readout must have finite entries (found NaN or inf)")
    return att, c


def feature_moments(attention, n_features, k):
    """``(A, G)``: A_hj = E[φ_h χ_j] (m, K) and G_hh' = E[φ_h φ_h'] (m, m), exact.

    With ``w_hb = (π k/2) α_hb`` and ``θ_h = Σ_b w_hb`` (= π k/2 when the row is on
    the simplex), ``φ_h(z) = cos(θ_h − Σ_b w_hb z_b)`` and, b over all D bits,

    .. math::
        A_{hj} = \\cos(θ_h − πk/2) \\prod_{b∈B_j} \\sin w_{hb} \\prod_{b∉B_j} \\cos w_{hb},

        G_{hh'} = ½\\big(\\cos(θ_h + θ_{h'}) \\prod_b \\cos(w_{hb} + w_{h'b})
                 + \\cos(θ_h − θ_{h'}) \\prod_b \\cos(w_{hb} − w_{h'b})\\big).

    On the simplex the θ factors are 1 and cos 2θ of (5), cos 0 = 1; the
    general form keeps the identity exact for rows that do not sum to 1 exactly
    (e.g. a float32 softmax).  Derivation: ``E[e^{−iwz}] = cos w`` and
    ``E[z e^{−iwz}] = −i sin w`` for a uniform sign z, and ``i^k (−i)^k = 1``.

    Returns
    -------
    (A, G) : ((m, K) float64 array, (m, m) float64 array)
        The head-feature correlations and the head Gram matrix.
    """
    att = np.asarray(attention, dtype=float)
    m, d = att.shape
    w = 0.5 * np.pi * k * att
    theta = w.sum(axis=1)
    blocks = np.zeros((n_features, d), dtype=bool)
    for j in range(n_features):
        blocks[j, j * k : (j + 1) * k] = True
    sin_w, cos_w = np.sin(w), np.cos(w)
    # (m, K, D): sin on the block, cos elsewhere; product over bits.
    factors = np.where(blocks[None], sin_w[:, None, :], cos_w[:, None, :])
    a = np.cos(theta - 0.5 * np.pi * k)[:, None] * np.prod(factors, axis=-1)
    plus = np.prod(np.cos(w[:, None, :] + w[None, :, :]), axis=-1)
    minus = np.prod(np.cos(w[:, None, :] - w[None, :, :]), axis=-1)
    g = 0.5 * (
        np.cos(theta[:, None] + theta[None, :]) * plus
        + np.cos(theta[:, None] - theta[None, :]) * minus
    )
    return a, g


def population_loss(
    attention,
    readout,
    pi,
    n_context,
    k,
    *,
    label_flip=0.0,
    bit_flip=0.0,
    distractor_bits=0,
):
    """Exact risk E[(ŷ − y_q)²] of ANY m-head model ((5) of docs/theory/parity.md).

    .. math::
        L(α, c; μ) = 1 − 2μ Σ_h c_h Σ_j π_j A_{hj}^2 + cᵀ (G ∘ M) c,
        \\qquad M = (1 − 1/N) μ^2 A\\,\\mathrm{diag}(π)\\,Aᵀ + G/N,

    with A, G from :func:`feature_moments` and μ = (1 − 2p)(1 − 2q)^k (context
    noise only; the query is clean).  Derivation: given the task (j*, s), the
    context terms ``ỹ_i φ_h(z̃_i)`` are i.i.d. with mean ``s μ A_{hj*}`` and second
    moments ``G_{hh'}`` (z̃ stays uniform under bit flips), and are independent of
    the query.  At hard top-m attention (row h uniform on B_h) and c = γ this
    equals (3).

    Parameters
    ----------
    attention : (m, D) array α, rows normally on the simplex (softmax outputs);
        m = 0 is allowed (loss 1).  D = K·k + distractor_bits.
    readout : (m,) array c.
    pi : (K,) importance, sorted decreasing.
    n_context : int >= 1, N.
    k : int >= 1, the parity degree (block size).
    label_flip, bit_flip : context noise p, q in [0, 0.5].
    distractor_bits : int >= 0, D₀.

    Returns
    -------
    float
        The exact risk L(α, c; μ); no sampling error.
    """
    pi = check_pi(pi)
    n = float(_check_n_context(n_context))
    k = check_int("k", k, 1)
    d0 = check_int("distractor_bits", distractor_bits, 0)
    mu = signal(label_flip, bit_flip, k)
    if np.ndim(mu) != 0:
        raise ValueError("population_loss takes scalar label_flip and bit_flip")
    att, c = _check_attention(attention, readout, pi.shape[0], k, d0)
    if att.shape[0] == 0:
        return 1.0
    a, g = feature_moments(att, pi.shape[0], k)
    m_mat = (1.0 - 1.0 / n) * mu**2 * (a * pi) @ a.T + g / n
    linear_term = 2.0 * mu * float(c @ (a**2 @ pi))
    return float(1.0 - linear_term + c @ (g * m_mat) @ c)
