"""Population-mode training reaches the oracle's optimum, in float64 and float32.

Property tests over random instances (hypothesis): ``linear.train(...,
mode="population")`` with its defaults against Γ_r of the numpy oracle
(Theorem A), and ``parity.train(..., mode="population")`` against R_m and γ
(Theorem C).  The float64 tests carry the ``float64`` marker (tests/conftest.py); the float32 tests
switch x64 off with the ``jax.enable_x64(False)`` context manager and check that
the trained weights really are float32.

Tolerances.  float64: 1e-6 (measured worst: Γ 1.5e-12 over 60 random spectra,
d ≤ 8; parity relative risk gap 1e-13, readout 1e-10).  float32: the objective
is only known to ~eps·(size of its terms), so a value-based search determines a
direction of curvature h only to √(eps·t/h) (t the largest term), a
gradient-based one to eps·κ; the tolerances below follow from the conditioning
of each problem (see ``_gamma_tolerance_f32``) and were checked against the
measured errors.
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
    """Relative Γ error attainable in float32 for the rank-r problem.

    In the eigenbasis the risk is t + Σ_ij λ_i m_j (G_ij − G*_ij)² − const with
    t = tr Λ, m_j = ((N+1)/N) λ_j² + (t/N) λ_j and G* = diag(γ), so Γ_r is the
    truncated SVD of H* = diag(s_i), s_i = λ_i^{3/2}/√m_i, in the weighted
    coordinates H = diag(λ)^{1/2} G diag(m)^{1/2}.  There the rank-r problem's
    curvature lies in [1 − ρ, 1 + ρ], ρ = s_{r+1}/s_r, and the weights add
    λ_1 m_1/(λ_r m_r) between the stiffest direction and the softest one that Γ_r
    occupies, of curvature h_r = λ_r m_r (1 − ρ).  Two floors follow:

    * gradient: eps·κ_r, κ_r = λ_1 m_1/(λ_r m_r)·(1+ρ)/(1−ρ);
    * value: the risk is rounded to ~eps·t, so a search comparing values cannot see
      a change below it: √(eps·t/h_r) / ‖Γ_r‖_F.

    The tolerance is max(value floor, 100·eps·κ_r) (the ~30 eps of the rounding of
    Γ = A Bᵀ itself show when κ_r ≈ 1).  Measured over 302 runs (60 random
    spectra, d ≤ 8, N ≤ 40): error ≤ 0.4 × this; median error 1.4e-6, far below the
    value floor, which only the line search's noisy last steps reach.
    """
    lam = np.asarray(lam, float)
    t = lam.sum()
    m = (n + 1) / n * lam**2 + t / n * lam
    s = lam**1.5 / np.sqrt(m)
    rho = s[r] / s[r - 1] if r < len(lam) else 0.0
    kappa = (lam[0] * m[0]) / (lam[r - 1] * m[r - 1]) * (1 + rho) / (1 - rho)
    gamma_r = (n / ((n + 1) * lam[:r] + t))  # Γ_r's eigenvalues (Theorem A)
    h_r = lam[r - 1] * m[r - 1] * (1 - rho)
    value_floor = np.sqrt(EPS32 * t / h_r) / np.linalg.norm(gamma_r)
    return max(value_floor, 100 * EPS32 * kappa)


def _check_linear(res, cov, lam, n, dtype, require_converged=True):
    assert res.params["weights"]["a"].dtype == dtype
    if require_converged:
        assert res.verdict == ["optimum_reached"] * len(res.rank), (res.verdict, res.grad_rel)
        assert res.converged.all(), res.grad_rel
    else:
        # Rare slow cases (e.g. λ_5/λ_6 = 1.065 at N = 1: grad_rel 8e-10 after the 1000
        # L-BFGS steps, Γ error 4e-7; converged with 4000 steps) are reported as such.
        want = ["optimum_reached" if c else "not_converged" for c in res.converged]
        assert res.verdict == want, (res.verdict, res.grad_rel)
    tol = [1e-6 if dtype == jnp.float64 else _gamma_tolerance_f32(lam, n, int(r))
           for r in res.rank]
    assert np.all(res.gamma_error <= tol), (res.gamma_error, tol, lam)


# Default runs draw a fixed set of instances (derandomize): an optimiser can meet a hard random
# instance that needs more steps than the budget (reported not_converged, as it should be), which
# must not fail CI by chance; the slow any-d twin draws fresh ones and accepts that verdict.
@pytest.mark.slow  # ~13 s; the float32 twin (what users run) stays in the default run
@pytest.mark.float64
@settings(max_examples=5, derandomize=True)
@given(instance=covariances(min_d=4, max_d=4))
def test_linear_population_reaches_gamma_r_float64(instance):
    cov, lam, _ = instance
    res = linear.train(jax.random.key(0), cov, N_LINEAR, range(1, 5), mode="population",
                       learning_rate=0.01, loo=False, sampler="statistic", adam_b1=0.9, average_tail=0.0,
                       eval_prompts=64)
    _check_linear(res, cov, lam, N_LINEAR, jnp.float64)


# 2 fixed instances (one compile, ~3 s of training each; the first draw has λ3/λ4 = 1.001);
# the slow twins draw 5 more (float64, d = 4) and 40 (any d, float32 or float64).
@settings(max_examples=2, derandomize=True)
@given(instance=covariances(min_d=4, max_d=4))
def test_linear_population_reaches_gamma_r_float32(instance):
    cov, lam, _ = instance
    with jax.enable_x64(False):
        res = linear.train(jax.random.key(0), cov, N_LINEAR, range(1, 5), mode="population",
                           learning_rate=0.01, loo=False, sampler="statistic", adam_b1=0.9, average_tail=0.0,
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
                           learning_rate=0.01, loo=False, sampler="statistic", adam_b1=0.9, average_tail=0.0,
                           eval_prompts=64)
    _check_linear(res, cov, lam, n, jnp.float64 if x64 else jnp.float32,
                  require_converged=False)


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
@pytest.mark.slow  # 20 s; the float32 twin (what users run) stays in the default run
@pytest.mark.float64
def test_parity_population_reaches_r_m_float64(pi):
    res = pt.train(jax.random.key(0), pi, N_PARITY, K_DEG, [1, 2, 3], mode="population",
                   eval_prompts=64)
    _check_parity(res, pi, jnp.float64)


# 2 random π (one compile; then ~5 s each: 6000 steps and the assessment); the fixed π =
# (0.5, 0.3, 0.2) reaches Theorem C in float32 in tests/test_parity_training.py, and the slow
# float64 twin above draws 3 more.
@settings(max_examples=2, derandomize=True)
@given(pi=importances())
def test_parity_population_reaches_r_m_float32(pi):
    with jax.enable_x64(False):
        res = pt.train(jax.random.key(0), pi, N_PARITY, K_DEG, [1, 2, 3], mode="population",
                       eval_prompts=64)
    _check_parity(res, pi, jnp.float32)
