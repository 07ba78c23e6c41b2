"""Exact float64 oracle for setting 1 (theory: ``docs/theory/linear.md``).

In-context linear regression: task ``w ~ N(0, I_d)``, inputs ``x ~ N(0, Λ)``,
labels ``y = wᵀx``; N in-context examples and one query.  The reduced predictor
of a linear self-attention layer is ``ŷ = x_qᵀ Γ h`` with
``h = (1/N) Σ_i y_i x_i``.  Risk is ``E[(ŷ − y_q)²]`` (no factor 1/2).

This module is pure numpy (float64) and never imports the models: it is the
independent reference that trained models are checked against.

Notation: ``λ₁ ≥ … ≥ λ_d > 0`` and ``U`` are the eigen-decomposition of Λ,
``t = tr Λ``, ``N = n_context``.

Argument order, the same in every function: the problem ``(cov, n_context)`` comes in
this order; a function that *evaluates* a given predictor takes it first
(``population_risk(gamma, cov, n_context)``), a function that *builds* the optimum of a
rank budget takes the rank after the problem (``optimal_gamma(cov, n_context, rank)``,
``optimal_risk(cov, n_context, rank)``); noise levels and options are keyword-only.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from iclsim._validation import (
    check_covariance,
    check_int,
    check_nonnegative,
)

__all__ = [
    "RankTieWarning",
    "RankTieError",
    "BestRank",
    "eigh_descending",
    "optimal_gamma",
    "optimal_gamma_diagonal",
    "population_risk",
    "optimal_risk",
    "optimal_risks",
    "noise_sensitivity",
    "best_rank",
]

#: Relative gap below which λ_r and λ_{r+1} count as tied (see ``optimal_gamma``).
TIE_RTOL = 1e-9


class RankTieWarning(UserWarning):
    """λ_r == λ_{r+1}: the rank-r optimum is not unique (Theorem A, docs/theory/linear.md)."""


class RankTieError(ValueError):
    """Raised by ``optimal_gamma(..., on_tie="raise")`` at a tie λ_r == λ_{r+1}."""


class BestRank(NamedTuple):
    """Result of :func:`best_rank`: ``r_star, tau = best_rank(...)``."""

    rank: int
    """r*, the smallest rank minimising the evaluation risk."""
    thresholds: np.ndarray
    """τ_i (i = 1..d): direction i lowers the risk iff label-noise σ² < τ_i."""


def eigh_descending(cov) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues in decreasing order and the matching orthonormal eigenvectors.

    Returns
    -------
    (lam, U) : ((d,) float64 array, (d, d) float64 array)
        ``cov = U diag(lam) Uᵀ`` with ``lam[0] >= lam[1] >= …``; column i of ``U`` is the
        eigenvector of ``lam[i]``.
    """
    cov = check_covariance(cov)
    lam, vec = np.linalg.eigh(cov)
    return lam[::-1].copy(), vec[:, ::-1].copy()


def _check_n_context(n_context) -> int:
    return check_int("n_context", n_context, 1)


def optimal_gamma_diagonal(lam, n_context: int, rank: int, *, pretrain_label_noise=0.0):
    """γ_i = N / ((N+1) λ_i + t + σ₀²) for i <= r, 0 beyond (Theorem A, B(d)).

    ``lam`` must be sorted in decreasing order; σ₀² is ``pretrain_label_noise``.

    Returns
    -------
    (d,) float64 array
        The eigenvalues γ_1..γ_d of Γ_r in the eigenbasis of Λ (zero beyond the rank).
    """
    lam = np.asarray(lam, dtype=float)
    n = float(n_context)
    t = lam.sum()
    gam = n / ((n + 1.0) * lam + t + float(pretrain_label_noise))
    gam[rank:] = 0.0
    return gam


def optimal_gamma(cov, n_context, rank, *, pretrain_label_noise=0.0, on_tie="raise"):
    """The rank-r minimiser Γ_r of the population risk (Theorem A, docs/theory/linear.md).

    .. math::  Γ_r = U \\,\\mathrm{diag}(γ_1, …, γ_r, 0, …, 0)\\, Uᵀ,
               \\qquad γ_i = N / ((N+1) λ_i + t + σ_0^2)

    with σ₀² the pretraining context label-noise variance (Theorem B(d); 0 for
    the clean case).  ``rank = d`` gives ``((N+1)/N Λ + (t+σ₀²)/N I)⁻¹``.

    Parameters
    ----------
    cov : (d, d) symmetric positive-definite array
        The input covariance Λ.
    n_context : int >= 1
        N, the number of in-context examples.
    rank : int in [0, d]
        r, the rank budget of the key-query matrix.
    pretrain_label_noise : float >= 0
        σ₀², variance of the context label noise during pretraining.
    on_tie : {"raise", "warn", "ignore"}
        What to do when ``λ_r`` and ``λ_{r+1}`` are equal to relative tolerance
        ``TIE_RTOL`` (``λ_r − λ_{r+1} <= TIE_RTOL·λ_r``, 0 < r < d).  The minimiser is then not unique (any
        r-dimensional subspace of the tied eigenspace is optimal): ``"raise"``
        raises :class:`RankTieError`; ``"warn"`` issues a
        :class:`RankTieWarning` and returns the optimum built from the
        eigenvectors numpy returns; ``"ignore"`` does the same silently.

    Returns
    -------
    (d, d) float64 array
        Γ_r, symmetric.
    """
    cov = check_covariance(cov)
    d = cov.shape[0]
    n = _check_n_context(n_context)
    r = check_int("rank", rank, 0, d)
    check_nonnegative("pretrain_label_noise", pretrain_label_noise)
    if on_tie not in ("raise", "warn", "ignore"):
        raise ValueError(f"on_tie must be one of 'raise', 'warn', 'ignore', got {on_tie!r}")
    lam, vec = eigh_descending(cov)
    if 0 < r < d and lam[r - 1] - lam[r] <= TIE_RTOL * lam[r - 1]:
        msg = (
            f"rank={r}: eigenvalues λ_{r} = {lam[r - 1]:.12g} and λ_{r + 1} = {lam[r]:.12g} "
            "are tied, so the rank-r optimum Γ_r is not unique (spec, Theorem A)"
        )
        if on_tie == "raise":
            raise RankTieError(msg + "; pass on_tie='warn' to get one of the optima")
        if on_tie == "warn":
            warnings.warn(msg, RankTieWarning, stacklevel=2)
    gam = optimal_gamma_diagonal(lam, n, r, pretrain_label_noise=pretrain_label_noise)
    gamma = (vec * gam) @ vec.T
    return 0.5 * (gamma + gamma.T)


def population_risk(gamma, cov, n_context, *, label_noise=0.0, input_noise=0.0, task=None):
    """Exact risk E[(x_qᵀ Γ h − y_q)²] of ANY reduced predictor Γ.

    The context is corrupted, the query is clean: context inputs are shown as
    ``x̃_i = x_i + ξ_i`` (ξ ~ N(0, σ_x² I)), labels ``ỹ_i = wᵀx_i + ε_i``
    (ε ~ N(0, σ²)), ``h = (1/N) Σ ỹ_i x̃_i``, target ``y_q = wᵀx_q``.
    With ``P = Γᵀ Λ Γ`` and a fixed task w (Theorem B(c), extended to general Γ):

    .. math::
        R(Γ; w) = \\tfrac{N+1}{N} wᵀΛPΛw − 2 wᵀΛΓΛw + wᵀΛw
                 + \\tfrac{wᵀΛw + σ^2}{N} \\mathrm{tr}(P(Λ + σ_x^2 I)).

    Averaging over ``w ~ N(0, I)`` (``task=None``) replaces ``wᵀAw`` by ``tr A``;
    at σ = σ_x = 0 this is ``R(Γ) = t − 2 tr(ΛΓΛ) + tr(ΓᵀΛΓM)``,
    ``M = ((N+1)/N) Λ² + (t/N) Λ``.
    Derivation: ``E[h|w] = Λw``, ``E[hhᵀ|w] = ((N+1)/N) Λwwᵀ Λ
    + ((wᵀΛw + σ²)/N)(Λ + σ_x² I)`` (Gaussian fourth moments).

    Parameters
    ----------
    gamma : (d, d) array, any real matrix (not necessarily symmetric or optimal).
    cov : (d, d) symmetric positive-definite Λ.
    n_context : int >= 1.
    label_noise : float >= 0, σ².
    input_noise : float >= 0, σ_x².
    task : optional (d,) array w; if given, the risk for that fixed task.

    Returns
    -------
    float
        The exact risk R(Γ) (or R(Γ; w) for a fixed ``task``); no sampling error.
    """
    cov = check_covariance(cov)
    d = cov.shape[0]
    gamma = np.asarray(gamma, dtype=float)
    if gamma.shape != (d, d):
        raise ValueError(f"gamma must have shape ({d}, {d}) to match cov, got {gamma.shape}")
    if not np.all(np.isfinite(gamma)):
        raise ValueError("gamma must have finite entries (found NaN or inf)")
    n = float(_check_n_context(n_context))
    s2 = float(check_nonnegative("label_noise", label_noise))
    sx2 = float(check_nonnegative("input_noise", input_noise))
    lam_gam_lam = cov @ gamma @ cov
    p = gamma.T @ cov @ gamma
    lam_p_lam = cov @ p @ cov
    tr_p_noisy = np.trace(p @ cov) + sx2 * np.trace(p)
    if task is None:
        quad = np.trace  # E_w[wᵀ A w] = tr A
    else:
        w = np.asarray(task, dtype=float)
        if w.shape != (d,) or not np.all(np.isfinite(w)):
            raise ValueError(f"task must be a finite vector of shape ({d},), got shape {w.shape}")

        def quad(a):
            return float(w @ a @ w)

    signal = quad(cov)
    risk = (
        (n + 1.0) / n * quad(lam_p_lam)
        - 2.0 * quad(lam_gam_lam)
        + signal
        + (signal + s2) / n * tr_p_noisy
    )
    return float(risk)


def optimal_risk(
    cov, n_context, rank, *, label_noise=0.0, input_noise=0.0, pretrain_label_noise=0.0
):
    """Risk of the rank-r optimum (Theorems A and B, docs/theory/linear.md).

    ``population_risk(optimal_gamma(cov, N, r, pretrain_label_noise=σ₀²), cov, N,
    label_noise=σ², input_noise=σ_x²)``, in closed form over the eigenvalues:

    .. math::
        R_r = t + \\sum_{i \\le r} \\big[γ_i^2 λ_i (\\tfrac{N+1}{N} λ_i^2
              + \\tfrac{t+σ^2}{N}(λ_i + σ_x^2)) − 2 γ_i λ_i^2\\big],
        \\quad γ_i = N/((N+1)λ_i + t + σ_0^2).

    Special cases: clean, ``L_r = t − Σ_{i≤r} N λ_i² / ((N+1) λ_i + t)``;
    label noise, ``L_r + σ² S_r``; input noise,
    ``L_r + σ_x² t Σ_{i≤r} N λ_i / ((N+1) λ_i + t)²``; σ₀² = σ², Theorem B(d)
    (the query target is clean: add σ₀² for a noisy target).
    Ties at the rank boundary do not matter here (the risk is unique).

    Returns
    -------
    float
        R_r, the risk of Γ_r on prompts with context label noise σ² = ``label_noise`` and
        input noise σ_x² = ``input_noise`` (L_r when both are 0).
    """
    cov = check_covariance(cov)
    d = cov.shape[0]
    n = _check_n_context(n_context)
    r = check_int("rank", rank, 0, d)
    return float(
        optimal_risks(
            cov,
            n,
            label_noise=label_noise,
            input_noise=input_noise,
            pretrain_label_noise=pretrain_label_noise,
        )[r]
    )


def optimal_risks(cov, n_context, *, label_noise=0.0, input_noise=0.0, pretrain_label_noise=0.0):
    """``[R_0, R_1, …, R_d]``, the optimal risk for every rank (see ``optimal_risk``).

    ``label_noise`` and ``input_noise`` may be arrays (broadcast together); the
    result then has shape ``broadcast_shape + (d + 1,)``.

    Returns
    -------
    (d + 1,) float64 array (or ``broadcast_shape + (d + 1,)``)
        Entry r is ``optimal_risk(cov, n_context, r, ...)``; entry 0 is ``t = tr Λ`` (the
        risk of ŷ = 0).
    """
    cov = check_covariance(cov)
    n = float(_check_n_context(n_context))
    s2 = np.asarray(check_nonnegative("label_noise", label_noise), dtype=float)
    sx2 = np.asarray(check_nonnegative("input_noise", input_noise), dtype=float)
    s02 = float(check_nonnegative("pretrain_label_noise", pretrain_label_noise))
    lam, _ = eigh_descending(cov)
    t = lam.sum()
    gam = n / ((n + 1.0) * lam + t + s02)
    s2 = s2[..., None]
    sx2 = sx2[..., None]
    delta = gam**2 * lam * ((n + 1.0) / n * lam**2 + (t + s2) / n * (lam + sx2)) - 2.0 * gam * lam**2
    delta = np.broadcast_to(delta, np.broadcast_shapes(delta.shape, s2.shape, sx2.shape))
    zero = np.zeros(delta.shape[:-1] + (1,))
    return t + np.concatenate([zero, np.cumsum(delta, axis=-1)], axis=-1)


def noise_sensitivity(cov, n_context):
    """``[S_0, …, S_d]``, S_r = (1/N) tr(Γ_r Λ Γ_r Λ) = Σ_{i≤r} N λ_i² / ((N+1) λ_i + t)².

    The slope of the rank-r optimum's risk in the label-noise variance σ²
    (Theorem B(a)); strictly increasing in r.

    Returns
    -------
    (d + 1,) float64 array
        ``[S_0, …, S_d]`` with S_0 = 0, so that ``L_r + σ² S_r`` is the rank-r risk under
        label noise σ².
    """
    lam, _ = eigh_descending(cov)
    n = float(_check_n_context(n_context))
    t = lam.sum()
    terms = n * lam**2 / ((n + 1.0) * lam + t) ** 2
    return np.concatenate([[0.0], np.cumsum(terms)])


def best_rank(cov, n_context, *, label_noise=0.0, input_noise=0.0) -> BestRank:
    """Best rank r* under evaluation noise, and the label-noise thresholds τ_i.

    r* is the smallest minimiser over r = 0..d of the clean-trained optimum's
    risk ``optimal_risk(cov, N, r, label_noise=σ², input_noise=σ_x²)``.

    τ_i is the label-noise level below which direction i lowers the risk
    (Theorem B(a),(b)); with input noise σ_x²

    .. math::  τ_i = \\frac{(N+1) λ_i^2 + t λ_i − t σ_x^2}{λ_i + σ_x^2},

    which is ``(N+1) λ_i + t`` at σ_x² = 0.  When τ is decreasing in i (always
    at σ_x² = 0, since λ is sorted), ``r* = #{i : τ_i > σ²}``.

    Returns
    -------
    BestRank
        ``(rank, thresholds)``: ``rank`` is r* (int in 0..d), ``thresholds`` the (d,) float64
        array τ_1..τ_d.
    """
    cov = check_covariance(cov)
    n = _check_n_context(n_context)
    s2 = float(check_nonnegative("label_noise", label_noise))
    sx2 = float(check_nonnegative("input_noise", input_noise))
    risks = optimal_risks(cov, n, label_noise=s2, input_noise=sx2)
    # Smallest minimiser, counting risks equal to the minimum up to rounding as ties
    # (at σ² = τ_i exactly, R_{i-1} = R_i in exact arithmetic).
    lowest = risks.min()
    r_star = int(np.flatnonzero(risks <= lowest + 64 * np.finfo(float).eps * abs(lowest))[0])
    lam, _ = eigh_descending(cov)
    t = lam.sum()
    tau = ((n + 1.0) * lam**2 + t * lam - t * sx2) / (lam + sx2)
    return BestRank(r_star, tau)


