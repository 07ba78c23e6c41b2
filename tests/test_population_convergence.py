"""Population-mode training reaches the oracle's optimum, in float64 and float32.

Property tests over random instances (hypothesis): ``linear.train(...,
mode="population")`` with its defaults against Γ_r of the numpy oracle
(Theorem A), and ``parity.train(..., mode="population")`` against R_m and γ
(Theorem C).  The suite runs in float64 (tests/conftest.py); the float32 tests
switch x64 off with the ``jax.enable_x64(False)`` context manager and check that
the trained weights really are float32.

Tolerances.  float64: 1e-6 (measured worst: Γ 1.5e-12 over 60 random spectra,
d ≤ 8; parity relative risk gap 1e-13, readout 1e-10).  float32: the objective
is only known to ~eps·(size of its terms), so a value-based search determines a
direction of curvature h only to √(eps·L/h), a gradient-based one to eps·κ;
the tolerances below are eps32 times the conditioning of each problem (see
``_gamma_tolerance_f32``) and were checked against the measured errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import covariances
from iclsim import linear
from iclsim.parity import oracle as parity_oracle
from iclsim.parity import training as pt

EPS32 = float(np.finfo(np.float32).eps)
N_LINEAR = 10


def _gamma_tolerance_f32(lam, n, r):
    """Relative Γ error attainable in float32 for the rank-r problem: 100·eps32·κ_r.

    In the eigenbasis the risk is Σ_ij λ_i m_j (G_ij − G*_ij)² + const with
    m_j = ((N+1)/N) λ_j² + (t/N) λ_j and G* = diag(γ), so Γ_r is the truncated SVD
    of H* = diag(s_i), s_i = λ_i^{3/2}/√m_i, in the weighted coordinates
    H = diag(λ)^{1/2} G diag(m)^{1/2}.  There the rank-r problem's curvature lies in
    [1 − s_{r+1}/s_r, 1 + s_{r+1}/s_r]; the weights add λ_1 m_1/(λ_r m_r) between the
    stiffest and the softest direction that Γ_r occupies.  κ_r is their product.
    """
    lam = np.asarray(lam, float)
    t = lam.sum()
    m = (n + 1) / n * lam**2 + t / n * lam
    s = lam**1.5 / np.sqrt(m)
    ratio = s[r] / s[r - 1] if r < len(lam) else 0.0
    kappa = (lam[0] * m[0]) / (lam[r - 1] * m[r - 1]) * (1 + ratio) / (1 - ratio)
    return 100 * EPS32 * kappa


def _check_linear(res, cov, lam, n, dtype):
    assert res.params["weights"]["a"].dtype == dtype
    assert res.verdict == ["optimum_reached"] * len(res.rank), (res.verdict, res.grad_rel)
    assert res.converged.all(), res.grad_rel
    tol = [1e-6 if dtype == jnp.float64 else _gamma_tolerance_f32(lam, n, int(r))
           for r in res.rank]
    assert np.all(res.gamma_error <= tol), (res.gamma_error, tol, lam)


@settings(max_examples=5)
@given(instance=covariances(min_d=4, max_d=4))
def test_linear_population_reaches_gamma_r_float64(instance):
    cov, lam, _ = instance
    res = linear.train(jax.random.key(0), cov, N_LINEAR, range(1, 5), mode="population",
                       eval_prompts=64)
    _check_linear(res, cov, lam, N_LINEAR, jnp.float64)


@settings(max_examples=5)
@given(instance=covariances(min_d=4, max_d=4))
def test_linear_population_reaches_gamma_r_float32(instance):
    cov, lam, _ = instance
    with jax.enable_x64(False):
        res = linear.train(jax.random.key(0), cov, N_LINEAR, range(1, 5), mode="population",
                           eval_prompts=64)
    _check_linear(res, cov, lam, N_LINEAR, jnp.float32)


@pytest.mark.slow
@settings(max_examples=40)
@given(instance=covariances(min_d=1, max_d=8), n=st.sampled_from([1, 5, 20, 40]),
       x64=st.booleans())
def test_linear_population_reaches_gamma_r_any_d(instance, n, x64):
    cov, lam, _ = instance
    d = len(lam)
    with jax.enable_x64(x64):
        res = linear.train(jax.random.key(0), cov, n, range(1, d + 1), mode="population",
                           eval_prompts=64)
    _check_linear(res, cov, lam, n, jnp.float64 if x64 else jnp.float32)


# --------------------------------------------------------------------------------------
# Setting 2
# --------------------------------------------------------------------------------------

K_DEG, N_PARITY = 2, 8


@st.composite
def importances(draw, n_features=3, min_ratio=1.05):
    """π sorted decreasing with 1.05 ≤ π_j / π_{j+1} ≤ e (no tie; π_K ≥ 0.09 for K = 3)."""
    logs = draw(st.lists(st.floats(np.log(min_ratio), 1.0), min_size=n_features - 1,
                         max_size=n_features - 1))
    pi = np.exp(-np.concatenate([[0.0], np.cumsum(logs)]))
    return pi / pi.sum()


def _check_parity(res, pi, dtype):
    assert res.params["weights"]["logits"].dtype == dtype
    assert res.verdict == ["optimum_reached"] * len(res.heads), (res.verdict, res.block_mass)
    assert res.converged.all(), res.grad_norm
    r_m = parity_oracle.optimal_risks(pi, N_PARITY)[res.heads]
    gamma = parity_oracle.optimal_readout(pi, N_PARITY)
    gap = (res.risk - r_m) / r_m
    blocks = [np.argmax(res.block_mass[i, :m], axis=1) for i, m in enumerate(res.heads)]
    readout_error = np.array([np.max(np.abs(res.readout[i, :m] - gamma[b]) / gamma[b])
                              for i, (m, b) in enumerate(zip(res.heads, blocks))])
    if dtype == jnp.float64:
        gap_tol, readout_tol = 1e-6, 1e-6
    else:
        # The loss (5) is known to ~eps: its gap to R_m to a few eps, the readout (a
        # direction of O(1) curvature) to ~√eps.
        gap_tol, readout_tol = 10 * EPS32, 10 * np.sqrt(EPS32)
    assert np.all(gap >= -1e-12) and np.all(gap <= gap_tol), (gap, pi)
    assert np.all(readout_error <= readout_tol), (readout_error, pi)


@settings(max_examples=3)
@given(pi=importances())
def test_parity_population_reaches_r_m_float64(pi):
    res = pt.train(jax.random.key(0), pi, N_PARITY, K_DEG, [1, 2, 3], mode="population",
                   eval_prompts=64)
    _check_parity(res, pi, jnp.float64)


@settings(max_examples=3)
@given(pi=importances())
def test_parity_population_reaches_r_m_float32(pi):
    with jax.enable_x64(False):
        res = pt.train(jax.random.key(0), pi, N_PARITY, K_DEG, [1, 2, 3], mode="population",
                       eval_prompts=64)
    _check_parity(res, pi, jnp.float32)
