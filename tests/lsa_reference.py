"""A reference for the rank-r LSA ladder written from the theory page, independent of
iclsim's oracle (used by the transformer tests)."""

from __future__ import annotations

import numpy as np


def lsa_ladder(lam, n, label_noise, input_noise):
    """(σ² levels, d + 1): R_r(σ², σ_x²) of the rank-r LSA optimum for a diagonal spectrum λ,
    written here from Theorem B's (B) in docs/theory/linear.md (independent of the oracle):
    R_r = t + Σ_{i≤r} Δ_i, Δ_i = γ_i² λ_i (((N+1)/N) λ_i² + ((t + σ²)/N)(λ_i + σ_x²)) − 2 γ_i λ_i²,
    γ_i = N / ((N+1) λ_i + t), t = Σ λ_i."""
    lam = np.sort(np.asarray(lam, float))[::-1]
    t = lam.sum()
    g = n / ((n + 1) * lam + t)
    rows = []
    for s2 in np.atleast_1d(label_noise):
        delta = g**2 * lam * ((n + 1) / n * lam**2 + (t + s2) / n * (lam + input_noise)) \
            - 2 * g * lam**2
        rows.append(t + np.concatenate([[0.0], np.cumsum(delta)]))
    return np.array(rows)
