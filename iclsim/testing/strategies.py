"""Hypothesis strategies that draw only what iclsim's oracles accept.

Theory: ``docs/theory/linear.md`` (setting 1) and ``docs/theory/parity.md`` (setting 2);
guide: ``docs/testing.md``.

hypothesis is optional: this module imports without it, and calling a strategy
without it raises ``ImportError`` (install it with ``pip install hypothesis``, or
``pip install 'iclsim[testing]'``).  Every argument has a default, and every strategy
checks its arguments when it is called (``ValueError`` naming the argument), before
anything is drawn.

Conventions (as in the oracles): spectra and importances are sorted in decreasing order;
"relative gap ≥ g" between neighbours a ≥ b means ``a − b ≥ g·a``; a tie is ``a == b``
exactly.  The oracle counts ``λ_r − λ_{r+1} <= TIE_RTOL·λ_r`` (``TIE_RTOL = 1e-9``) as a
tie, so without ``ties=True`` the gap must exceed that.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from iclsim.linear.oracle import TIE_RTOL

__all__ = [
    "Covariance",
    "LinearCase",
    "ParityCase",
    "spectra",
    "covariances",
    "importances",
    "noise_levels",
    "linear_configs",
    "parity_configs",
]

#: Safety margin (in log space, resp. relative) so that drawn gaps survive rounding.
_MARGIN = 1e-12

_INSTALL = (
    "iclsim.testing strategies need hypothesis, which is not installed: "
    "pip install hypothesis  (or pip install 'iclsim[testing]')"
)


def _st():
    """``hypothesis.strategies``, or ImportError with the one-line install hint."""
    try:
        from hypothesis import strategies as st
    except ImportError:
        raise ImportError(_INSTALL) from None
    return st


class Covariance(NamedTuple):
    """Drawn by :func:`covariances`: ``cov = U diag(lam) Uᵀ``."""

    cov: np.ndarray
    """(d, d) float64 symmetric positive-definite Λ (exactly symmetric)."""
    lam: np.ndarray
    """(d,) eigenvalues λ₁ ≥ … ≥ λ_d > 0."""
    U: np.ndarray
    """(d, d) orthogonal; column i−1 is the eigenvector u_i of λ_i."""


class LinearCase(NamedTuple):
    """A setting-1 configuration drawn by :func:`linear_configs` (all oracle arguments)."""

    cov: np.ndarray
    """Λ, (d, d)."""
    lam: np.ndarray
    """Its eigenvalues, decreasing."""
    U: np.ndarray
    """Its eigenvectors (columns), matching ``lam``."""
    n_context: int
    """N >= 1."""
    rank: int
    """r in [0, d]."""
    label_noise: float
    """σ² >= 0 (evaluation context labels)."""
    input_noise: float
    """σ_x² >= 0 (evaluation context inputs)."""
    pretrain_label_noise: float
    """σ₀² >= 0 (pretraining context labels)."""


class ParityCase(NamedTuple):
    """A setting-2 configuration drawn by :func:`parity_configs` (all oracle arguments)."""

    pi: np.ndarray
    """(K,) importances, decreasing, summing to 1."""
    n_context: int
    """N >= 1."""
    k: int
    """Parity degree = block size, >= 1."""
    heads: int
    """m in [0, K]."""
    distractor_bits: int
    """D₀ >= 0."""
    label_flip: float
    """p in [0, 0.5] (evaluation context labels)."""
    bit_flip: float
    """q in [0, 0.5] (evaluation context bits)."""


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------


def _int_arg(name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f"[{lo}, inf)"
        raise ValueError(f"{name} must be an integer in {rng}, got {value}")
    return value


def _size_range(name, fixed, lo, hi, floor):
    """(lo, hi) of a drawn size; ``fixed`` (an int) pins it."""
    if fixed is not None:
        if floor > 1 and isinstance(fixed, (int, np.integer)) and fixed < floor:
            raise ValueError(f"ties=True needs {name} >= {floor}, got {name}={fixed}")
        fixed = _int_arg(name, fixed, 1)
        return fixed, fixed
    lo = _int_arg(f"min_{name}", lo, 1)
    hi = _int_arg(f"max_{name}", hi, lo)
    if hi < floor:
        raise ValueError(f"ties=True needs {name} >= {floor}, got max_{name}={hi}")
    return max(lo, floor), hi


def _gap_arg(gap, ties):
    gap = float(gap)
    if not (0.0 <= gap < 1.0) or (not ties and gap <= TIE_RTOL):
        raise ValueError(
            f"gap must be a relative gap in ({TIE_RTOL:g}, 1) (in [0, 1) with ties=True), "
            f"got {gap!r}"
        )
    return gap


# --------------------------------------------------------------------------------------
# Spectra and covariances (setting 1)
# --------------------------------------------------------------------------------------


def _spectrum_strategy(st, d_lo, d_hi, gap, low, high, ties):
    """Decreasing spectra in [low, high] built bottom-up in log space.

    log λ_i − log λ_{i+1} = δ_i >= −log(1 − gap) (0 on a forced tie), and the
    extra room log(high/low) − Σ (minimum gaps) is shared out by drawn weights.
    """
    g = -math.log1p(-gap) + _MARGIN if gap > 0 else 0.0
    room = math.log(high / low)

    @st.composite
    def draw_spectrum(draw):
        d = draw(st.integers(d_lo, d_hi))
        tied = np.zeros(max(d - 1, 0), dtype=bool)
        if ties:
            tied[draw(st.integers(0, d - 2))] = True
            for i in range(d - 1):
                tied[i] |= draw(st.booleans()) if d > 2 else False
        minimum = np.where(tied, 0.0, g)
        free = room - minimum.sum()
        weights = np.array(
            [draw(st.floats(0.0, 1.0)) for _ in range(d)], dtype=float
        )  # weights[0]: offset of λ_d above low; weights[1:]: extra gaps
        weights[1:][tied] = 0.0
        spread = draw(st.floats(0.0, 1.0))
        total = weights.sum()
        share = spread * free * (weights / total if total > 0 else np.zeros(d))
        log_steps = np.concatenate([[share[0]], minimum + share[1:]])  # bottom-up
        log_lam = math.log(low) + np.cumsum(log_steps)
        # A tied step adds exactly 0.0 to the running sum, so ties are exact.
        return np.exp(log_lam)[::-1].copy()

    return draw_spectrum()


def _check_bounds(low, high):
    low, high = float(low), float(high)
    if not (0.0 < low < high < math.inf):
        raise ValueError(f"need 0 < low < high < inf, got low={low!r}, high={high!r}")
    return low, high


def spectra(d=None, gap=1e-3, *, min_d=1, max_d=6, low=0.1, high=10.0, ties=False):
    """Strategy: decreasing positive spectra ``λ₁ ≥ … ≥ λ_d`` in ``[low, high]``.

    Neighbours have relative gaps ``(λ_i − λ_{i+1}) / λ_i >= gap``, so that every rank
    r has a unique optimum Γ_r (Theorem A of ``docs/theory/linear.md``, which needs
    λ_r > λ_{r+1}).  With ``ties=True`` at least one neighbour pair is exactly equal
    (λ_i == λ_{i+1}, needs d >= 2) and the other pairs keep the gap.

    Parameters
    ----------
    d : int or None
        The dimension; None draws it from ``[min_d, max_d]``.
    gap : float in (1e-9, 1)
        Smallest relative gap between neighbours.  ``(d − 1)·(−log(1 − gap))`` must fit
        in ``log(high / low)``.
    low, high : 0 < low < high
        Range of the eigenvalues.
    ties : bool
        Force at least one exact tie.

    Returns
    -------
    hypothesis strategy
        Of (d,) float64 arrays.
    """
    st = _st()
    ties = bool(ties)
    gap = _gap_arg(gap, ties)
    low, high = _check_bounds(low, high)
    d_lo, d_hi = _size_range("d", d, min_d, max_d, 2 if ties else 1)
    g = -math.log1p(-gap) if gap > 0 else 0.0
    if (d_hi - 1 - int(ties)) * (g + _MARGIN) > math.log(high / low):
        raise ValueError(
            f"gap={gap:g} is too large for d={d_hi} eigenvalues in [{low:g}, {high:g}]: "
            f"need (d − 1)·(−log(1 − gap)) <= log(high/low)"
        )
    return _spectrum_strategy(st, d_lo, d_hi, gap, low, high, ties)


def _rotation(seed: int, d: int) -> np.ndarray:
    """Haar-distributed orthogonal matrix: QR of a Gaussian matrix, signs fixed."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def _covariance_from(st, draw, lam, rotate):
    d = lam.shape[0]
    u = _rotation(draw(st.integers(0, 2**32 - 1)), d) if rotate else np.eye(d)
    cov = (u * lam) @ u.T
    return Covariance(0.5 * (cov + cov.T), lam, u)


def covariances(d=None, gap=1e-3, *, min_d=1, max_d=6, low=0.1, high=10.0, ties=False,
                rotate=True):
    """Strategy: covariances ``Λ = U diag(λ) Uᵀ`` with a random rotation U.

    λ is drawn by :func:`spectra` (same arguments); U is Haar-distributed (QR of a
    Gaussian matrix with a drawn seed), or the identity with ``rotate=False``.
    Returns a strategy of :class:`Covariance` ``(cov, lam, U)``: ``cov`` is exactly
    symmetric, ``lam`` decreasing, column i−1 of ``U`` the eigenvector of ``lam[i−1]``
    (``docs/theory/linear.md``, Conventions).
    """
    st = _st()
    lam_strategy = spectra(d, gap, min_d=min_d, max_d=max_d, low=low, high=high, ties=ties)

    @st.composite
    def draw_covariance(draw):
        return _covariance_from(st, draw, draw(lam_strategy), bool(rotate))

    return draw_covariance()


# --------------------------------------------------------------------------------------
# Importances (setting 2)
# --------------------------------------------------------------------------------------


def importances(K=None, gap=1e-3, *, min_K=1, max_K=6, min_pi=0.02, ties=False):
    """Strategy: importance vectors π for the parity oracle (``docs/theory/parity.md``).

    π is what :func:`iclsim.parity.oracle.check_pi` accepts: 1-D, sorted decreasing,
    ``Σ π = 1`` (to rounding), every ``π_j >= min_pi``.  Neighbours have relative gaps
    ``(π_j − π_{j+1}) / π_j >= gap``, so the top-m blocks of Theorem C are unique for
    every m; with ``ties=True`` at least one neighbour pair is exactly equal (needs K >= 2).

    Construction: ``π = min_pi + (1 − K·min_pi)·q`` with q a decreasing probability
    vector whose differences ``q_j − q_{j+1} = δ_j >= gap / (1 − K·min_pi)``.
    ``min_pi > 0`` keeps the count rule for m* valid (the note under Theorem D).

    Parameters
    ----------
    K : int or None
        Number of features; None draws it from ``[min_K, max_K]``.
    gap : float in (1e-9, 1)
        Smallest relative gap between neighbours.
    min_pi : float in [0, 1/K)
        Smallest importance.
    ties : bool
        Force at least one exact tie.

    Returns
    -------
    hypothesis strategy
        Of (K,) float64 arrays.
    """
    st = _st()
    ties = bool(ties)
    gap = _gap_arg(gap, ties)
    k_lo, k_hi = _size_range("K", K, min_K, max_K, 2 if ties else 1)
    min_pi = float(min_pi)
    scale = 1.0 - k_hi * min_pi
    if not (min_pi >= 0.0 and scale > 0.0):
        raise ValueError(f"min_pi must be in [0, 1/K) = [0, {1.0 / k_hi:.6g}), got {min_pi!r}")
    step = gap / scale * (1.0 + _MARGIN)
    if step * k_hi * (k_hi - 1) / 2 > 1.0:
        raise ValueError(
            f"gap={gap:g} is too large for K={k_hi} importances >= {min_pi:g}: "
            f"need gap·K(K−1)/2 <= 1 − K·min_pi"
        )

    @st.composite
    def draw_importances(draw):
        k_feat = draw(st.integers(k_lo, k_hi))
        c = 1.0 - k_feat * min_pi
        delta_min = gap / c * (1.0 + _MARGIN)
        tied = np.zeros(k_feat, dtype=bool)  # tied[j]: π_j == π_{j+1} (j < K−1)
        if ties:
            tied[draw(st.integers(0, k_feat - 2))] = True
            for j in range(k_feat - 1):
                tied[j] |= draw(st.booleans()) if k_feat > 2 else False
        base = np.where(tied, 0.0, delta_min)
        base[-1] = 0.0  # δ_K = q_K, the bottom, needs no gap
        weights = np.array([draw(st.floats(0.0, 1.0)) for _ in range(k_feat)], dtype=float)
        weights[tied] = 0.0
        pos = np.arange(1, k_feat + 1, dtype=float)  # Σ_j q_j = Σ_j j·δ_j
        if not np.any(weights > 0):
            weights = (~tied).astype(float)
        extra = 1.0 - float(pos @ base)
        delta = base + extra * weights / float(pos @ weights)
        q = np.cumsum(delta[::-1])[::-1]
        return min_pi + c * q

    return draw_importances()


# --------------------------------------------------------------------------------------
# Noise and whole configurations
# --------------------------------------------------------------------------------------


def noise_levels(kind="variance", *, max_value=None):
    """Strategy: one noise level, often exactly 0 (the clean case).

    ``kind="variance"``: a variance σ², σ_x² or σ₀² of setting 1 in ``[0, max_value]``
    (default 4.0; ``docs/theory/linear.md``, Theorem B).  ``kind="flip"``: a flip
    probability p or q of setting 2 in ``[0, max_value]`` (default and largest 0.5;
    ``docs/theory/parity.md``, Data).  Returns a strategy of Python floats.
    """
    st = _st()
    if kind not in ("variance", "flip"):
        raise ValueError(f"kind must be 'variance' or 'flip', got {kind!r}")
    top = 0.5 if kind == "flip" else math.inf
    if max_value is None:
        max_value = 0.5 if kind == "flip" else 4.0
    max_value = float(max_value)
    if not (0.0 <= max_value <= top) or not math.isfinite(max_value):
        raise ValueError(f"max_value must be in [0, {top:g}] for kind={kind!r}, got {max_value!r}")
    return st.one_of(
        st.just(0.0), st.floats(0.0, max_value, allow_nan=False, allow_infinity=False)
    )


def _tie_positions(values):
    """0-based i with values[i] == values[i+1] (exact ties)."""
    return [i for i in range(len(values) - 1) if values[i] == values[i + 1]]


def linear_configs(d=None, *, min_d=1, max_d=5, min_n_context=1, max_n_context=64, gap=1e-3,
                   low=0.1, high=10.0, noise=False, max_noise=4.0, ties=False, rotate=True):
    """Strategy: whole setting-1 configurations (:class:`LinearCase`) for the linear oracle.

    Draws Λ by :func:`covariances`, N in ``[min_n_context, max_n_context]`` and r in
    ``[0, d]``: :func:`iclsim.linear.oracle.optimal_gamma` (``on_tie="raise"``),
    ``optimal_risk`` and ``population_risk`` accept every draw.  With ``noise=True`` the
    three variances σ², σ_x², σ₀² are drawn by :func:`noise_levels` (each often 0),
    else they are 0.  With ``ties=True`` the spectrum has a tie and r sits
    on it (λ_r == λ_{r+1}), so the rank-r optimum is not unique (Theorem A of
    ``docs/theory/linear.md``; ``optimal_gamma`` then needs ``on_tie="warn"`` or
    ``"ignore"``).
    """
    st = _st()
    cov_strategy = covariances(d, gap, min_d=min_d, max_d=max_d, low=low, high=high,
                               ties=ties, rotate=rotate)
    n_lo = _int_arg("min_n_context", min_n_context, 1)
    n_hi = _int_arg("max_n_context", max_n_context, n_lo)
    noise_strategy = noise_levels("variance", max_value=max_noise) if noise else st.just(0.0)

    @st.composite
    def draw_config(draw):
        cov, lam, u = draw(cov_strategy)
        n = draw(st.integers(n_lo, n_hi))
        if ties:
            rank = draw(st.sampled_from(_tie_positions(lam))) + 1
        else:
            rank = draw(st.integers(0, lam.shape[0]))
        s2, sx2, s02 = (draw(noise_strategy) for _ in range(3))
        return LinearCase(cov, lam, u, n, rank, s2, sx2, s02)

    return draw_config()


def parity_configs(K=None, *, min_K=1, max_K=5, k=None, max_k=3, max_distractor_bits=2,
                   min_n_context=1, max_n_context=64, min_pi=0.02, gap=1e-3, noise=False,
                   ties=False):
    """Strategy: whole setting-2 configurations (:class:`ParityCase`) for the parity oracle.

    Draws π by :func:`importances`, N in ``[min_n_context, max_n_context]``, the parity
    degree k in ``[1, max_k]`` (or the given ``k``), D₀ in ``[0, max_distractor_bits]``
    and m in ``[0, K]``: :func:`iclsim.parity.oracle.optimal_risk`,
    ``fixed_task_risk``, ``best_heads`` and ``population_loss`` (with attention of shape
    (m, K·k + D₀)) accept every draw.  With ``noise=True`` the flips p, q are drawn by
    :func:`noise_levels` (``kind="flip"``), else they are 0.  With ``ties=True`` π has a
    tie and m sits on it (π_m == π_{m+1}), so the top-m blocks of Theorem C
    (``docs/theory/parity.md``) are not unique.
    """
    st = _st()
    pi_strategy = importances(K, gap, min_K=min_K, max_K=max_K, min_pi=min_pi, ties=ties)
    if k is not None:
        k_lo = k_hi = _int_arg("k", k, 1)
    else:
        k_lo, k_hi = 1, _int_arg("max_k", max_k, 1)
    d0_hi = _int_arg("max_distractor_bits", max_distractor_bits, 0)
    n_lo = _int_arg("min_n_context", min_n_context, 1)
    n_hi = _int_arg("max_n_context", max_n_context, n_lo)
    flip_strategy = noise_levels("flip") if noise else st.just(0.0)

    @st.composite
    def draw_config(draw):
        pi = draw(pi_strategy)
        n = draw(st.integers(n_lo, n_hi))
        degree = draw(st.integers(k_lo, k_hi))
        d0 = draw(st.integers(0, d0_hi))
        if ties:
            heads = draw(st.sampled_from(_tie_positions(pi))) + 1
        else:
            heads = draw(st.integers(0, pi.shape[0]))
        p, q = draw(flip_strategy), draw(flip_strategy)
        return ParityCase(pi, n, degree, heads, d0, p, q)

    return draw_config()
