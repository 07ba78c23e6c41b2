"""Tests of the exact numpy oracle of setting 1 (theory: ``docs/theory/linear.md``).

Every check compares the oracle with an independent computation:

* a numerical minimisation of the risk ``R(Γ)`` of docs/theory/linear.md over
  factorised ``Γ = A Bᵀ``
  (gradient written here from that formula, scipy L-BFGS-B);
* Monte Carlo over prompts from ``sample_prompts`` (tolerance: 4 standard errors);
* closed forms of docs/theory/linear.md re-derived here over the eigenvalues;
* exact identities (rotation equivariance, basis averages, stationarity).

Tolerances are either statistical (k · SE) or floating-point (a small multiple of
machine epsilon times the size of the terms involved).
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from conftest import CANONICAL_LAMBDA, CANONICAL_N, covariances, random_rotation, spectra
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from iclsim import linear

pytestmark = pytest.mark.float64  # identities of the float64 oracle / model code

EPS = np.finfo(float).eps
#: Relative floating-point tolerance for closed forms evaluated two ways (a few
#: hundred ulps: the quantities are sums of O(d²) products of O(1) numbers).
FP_RTOL = 1e-11


# --------------------------------------------------------------------------------------
# Independent reference formulas (written from docs/theory/linear.md, not from the code)
# --------------------------------------------------------------------------------------


def _rotated_cov(lam, seed):
    u = random_rotation(seed, len(lam))
    cov = (u * lam) @ u.T
    return 0.5 * (cov + cov.T), u


def _spec_M(cov, n, label_noise=0.0):
    """M = ((N+1)/N) Λ² + ((t + σ²)/N) Λ (σ² = 0 is the clean M)."""
    t = np.trace(cov)
    return (n + 1.0) / n * cov @ cov + (t + label_noise) / n * cov


def _spec_risk(gamma, cov, n, label_noise=0.0):
    """R(Γ) = t − 2 tr(ΛΓΛ) + tr(Γᵀ Λ Γ M) of docs/theory/linear.md (σ² folded into M)."""
    m = _spec_M(cov, n, label_noise)
    return np.trace(cov) - 2.0 * np.trace(cov @ gamma @ cov) + np.trace(gamma.T @ cov @ gamma @ m)


def _spec_risk_scale(gamma, cov, n, label_noise=0.0):
    """Sum of the absolute values of the terms of ``_spec_risk`` (for fp tolerances)."""
    m = _spec_M(cov, n, label_noise)
    return (
        np.trace(cov)
        + 2.0 * abs(np.trace(cov @ gamma @ cov))
        + abs(np.trace(gamma.T @ cov @ gamma @ m))
    )


def _spec_grad(gamma, cov, n, label_noise=0.0):
    """∇_Γ R = −2 Λ² + 2 Λ Γ M  (Λ and M symmetric)."""
    m = _spec_M(cov, n, label_noise)
    return -2.0 * cov @ cov + 2.0 * cov @ gamma @ m


def _closed_L(lam, n, pretrain=0.0):
    """L_r = t − Σ_{i≤r} N λ_i² / ((N+1) λ_i + t + σ₀²), r = 0..d (Theorems A, B(d))."""
    lam = np.asarray(lam, dtype=float)
    t = lam.sum()
    return t - np.concatenate([[0.0], np.cumsum(n * lam**2 / ((n + 1) * lam + t + pretrain))])


def _closed_S(lam, n):
    """S_r = Σ_{i≤r} N λ_i² / ((N+1) λ_i + t)², r = 0..d (Theorem B(a))."""
    lam = np.asarray(lam, dtype=float)
    t = lam.sum()
    return np.concatenate([[0.0], np.cumsum(n * lam**2 / ((n + 1) * lam + t) ** 2)])


def _closed_input_noise_slope(lam, n):
    """Σ_{i≤r} t N λ_i / ((N+1) λ_i + t)², r = 0..d (Theorem B(b): R_r = L_r + σ_x² · this)."""
    lam = np.asarray(lam, dtype=float)
    t = lam.sum()
    return np.concatenate([[0.0], np.cumsum(t * n * lam / ((n + 1) * lam + t) ** 2)])


def _gamma_factors(lam, u, n, r, pretrain=0.0):
    """Γ_r = A Bᵀ with A = U_r diag(γ), B = U_r, from the construction's own eigenbasis."""
    t = lam.sum()
    gam = n / ((n + 1) * lam[:r] + t + pretrain)
    return u[:, :r] * gam, u[:, :r].copy()


def _rel_fro(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), np.finfo(float).tiny)


# --------------------------------------------------------------------------------------
# 1. Oracle vs exact (numerical) minimisation over rank-r Γ = A Bᵀ
# --------------------------------------------------------------------------------------


def test_spec_gradient_matches_finite_differences():
    """The hand-written gradient used by the minimisation test is right (central FD)."""
    rng = np.random.default_rng(0)
    cov, _ = _rotated_cov(np.array([2.0, 1.0, 0.5, 0.2]), 1)
    n = 7
    gamma = rng.standard_normal((4, 4))
    grad = _spec_grad(gamma, cov, n)
    h = 1e-5
    fd = np.zeros_like(gamma)
    for i in range(4):
        for j in range(4):
            e = np.zeros_like(gamma)
            e[i, j] = h
            fd[i, j] = (_spec_risk(gamma + e, cov, n) - _spec_risk(gamma - e, cov, n)) / (2 * h)
    # R is quadratic, so central differences are exact up to rounding ~ eps·|R|/h.
    assert np.max(np.abs(fd - grad)) <= 1e-8 * max(1.0, np.max(np.abs(grad)))


def _minimise_factorised(cov, n, r, rng, starts=3):
    d = cov.shape[0]

    def fun(z):
        a = z[: d * r].reshape(d, r)
        b = z[d * r :].reshape(d, r)
        gamma = a @ b.T
        g = _spec_grad(gamma, cov, n)
        return _spec_risk(gamma, cov, n), np.concatenate([(g @ b).ravel(), (g.T @ a).ravel()])

    best = None
    for _ in range(starts):
        z0 = 0.5 * rng.standard_normal(2 * d * r)
        res = minimize(
            fun,
            z0,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 3000, "ftol": 1e-13, "gtol": 1e-8, "maxcor": 20},
        )
        if best is None or res.fun < best.fun:
            best = res
    a = best.x[: d * r].reshape(d, r)
    b = best.x[d * r :].reshape(d, r)
    return best.fun, a @ b.T


@settings(max_examples=10)
@given(
    lam=spectra(min_d=2, max_d=5),
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 50),
    data=st.data(),
)
def test_optimal_gamma_matches_numerical_minimisation(lam, seed, n, data):
    d = len(lam)
    r = data.draw(st.integers(1, d), label="rank")
    cov, _ = _rotated_cov(lam, seed)
    best_value, best_gamma = _minimise_factorised(cov, n, r, np.random.default_rng(seed))

    oracle_risk = linear.optimal_risk(cov, n, r)
    oracle_gamma = linear.optimal_gamma(cov, n, r)

    # The oracle is a lower bound: no rank-r Γ may beat it (beyond rounding of R).
    scale = _spec_risk_scale(oracle_gamma, cov, n)
    assert best_value >= oracle_risk - 1e3 * EPS * scale, (best_value, oracle_risk)
    # ... and a numerical minimiser reaches it.
    assert abs(best_value - oracle_risk) <= 1e-6 * oracle_risk, (best_value, oracle_risk)
    assert _rel_fro(best_gamma, oracle_gamma) <= 1e-3, (best_gamma, oracle_gamma)
    # The oracle's Γ attains its own risk under the R(Γ) formula.
    assert abs(_spec_risk(oracle_gamma, cov, n) - oracle_risk) <= 1e3 * EPS * scale
    assert np.linalg.matrix_rank(oracle_gamma, tol=1e-9 * np.linalg.norm(oracle_gamma)) == r


# --------------------------------------------------------------------------------------
# 2. Oracle vs Monte Carlo over sampled prompts
# --------------------------------------------------------------------------------------

MC_D, MC_N, MC_RANK, MC_BATCH = 4, 5, 2, 200_000
MC_LAMBDA = np.array([2.0, 1.2, 0.6, 0.3])
MC_TASK = np.array([1.5, -0.5, 0.8, -1.1])

MC_CASES = {
    "clean": {},
    "label_noise": {"label_noise": 4.0},
    "input_noise": {"input_noise": 0.8},
    "both_noises": {"label_noise": 1.5, "input_noise": 0.6},
    "fixed_task": {"task": MC_TASK},
    "fixed_task_both_noises": {"task": MC_TASK, "label_noise": 1.5, "input_noise": 0.6},
}


def _mc_setup():
    cov, _ = _rotated_cov(MC_LAMBDA, 12345)
    assert np.max(np.abs(cov - np.diag(np.diag(cov)))) > 0.1  # genuinely non-diagonal
    rng = np.random.default_rng(777)
    gammas = {
        "optimal": linear.optimal_gamma(cov, MC_N, MC_RANK),
        "random": 0.25 * rng.standard_normal((MC_D, MC_D)),  # arbitrary, non-symmetric
    }
    assert np.max(np.abs(gammas["random"] - gammas["random"].T)) > 0.1
    return cov, gammas


def _mc_squared_errors(gamma, cov, seed, **kw):
    p = linear.sample_prompts(jax.random.key(seed), cov, MC_N, MC_BATCH, **kw)
    x = np.asarray(p.x)
    y = np.asarray(p.y)
    xq = np.asarray(p.x_query)
    yq = np.asarray(p.y_query)
    assert x.shape == (MC_BATCH, MC_N, MC_D) and y.shape == (MC_BATCH, MC_N)
    assert xq.shape == (MC_BATCH, MC_D) and yq.shape == (MC_BATCH,)
    if kw.get("task") is not None:
        assert np.all(np.asarray(p.w) == kw["task"])
    h = np.einsum("bn,bnd->bd", y, x) / MC_N
    pred = np.einsum("bd,de,be->b", xq, gamma, h)
    return (pred - yq) ** 2


@pytest.mark.parametrize("which_gamma", ["optimal", "random"])
@pytest.mark.parametrize("case", list(MC_CASES))
def test_population_risk_matches_monte_carlo(case, which_gamma):
    cov, gammas = _mc_setup()
    gamma = gammas[which_gamma]
    kw = MC_CASES[case]
    seed = 1000 + 10 * list(MC_CASES).index(case) + (which_gamma == "random")
    sq = _mc_squared_errors(gamma, cov, seed, **kw)
    mean = sq.mean()
    se = sq.std(ddof=1) / np.sqrt(sq.size)
    exact = linear.population_risk(gamma, cov, MC_N, **kw)
    assert abs(mean - exact) <= 4.0 * se, (
        f"{case}/{which_gamma}: MC mean {mean:.5f} vs exact {exact:.5f}, "
        f"SE {se:.5f} ({MC_BATCH} prompts), z = {(mean - exact) / se:.2f}"
    )
    # Power: the effect under test is resolvable, so an oracle that ignored the noise
    # (or, without noise, the fixed task) would fail the check above.
    if kw:
        reduced = {k: v for k, v in kw.items() if k == "task"} if len(kw) > 1 else {}
        baseline = linear.population_risk(gamma, cov, MC_N, **reduced)
        assert abs(exact - baseline) > 8.0 * se, (case, which_gamma, exact, baseline, se)


def test_sample_prompts_structure():
    """Clean prompts: y = wᵀx and y_q = wᵀx_q exactly; input noise leaves y on the clean x."""
    cov, _ = _mc_setup()
    p = linear.sample_prompts(jax.random.key(3), cov, MC_N, 4000)
    x, y, xq, yq, w = (np.asarray(a) for a in p)
    np.testing.assert_allclose(y, np.einsum("bnd,bd->bn", x, w), rtol=0, atol=1e-12)
    np.testing.assert_allclose(yq, np.einsum("bd,bd->b", xq, w), rtol=0, atol=1e-12)
    # Same key, input noise: labels and query are unchanged (they come from clean x);
    # the shown x differs by the noise, whose per-entry variance is σ_x².
    sx2 = 0.5
    q = linear.sample_prompts(jax.random.key(3), cov, MC_N, 4000, input_noise=sx2)
    np.testing.assert_array_equal(np.asarray(q.y), y)
    np.testing.assert_array_equal(np.asarray(q.y_query), yq)
    xi = np.asarray(q.x) - x
    m = xi.size
    # Var of the sample variance of Gaussian noise: 2σ⁴/m.
    assert abs(np.mean(xi**2) - sx2) <= 4.0 * np.sqrt(2.0 * sx2**2 / m)


# --------------------------------------------------------------------------------------
# 3. Invariances and closed forms
# --------------------------------------------------------------------------------------


@given(
    covs=covariances(min_d=1, max_d=6),
    qseed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 60),
    data=st.data(),
)
def test_rotation_equivariance(covs, qseed, n, data):
    cov, lam, _ = covs
    d = len(lam)
    r = data.draw(st.integers(0, d), label="rank")
    q = random_rotation(qseed, d)
    cov_q = q @ cov @ q.T
    cov_q = 0.5 * (cov_q + cov_q.T)
    g = linear.optimal_gamma(cov, n, r)
    g_q = linear.optimal_gamma(cov_q, n, r)
    # Eigenvector perturbation ~ eps·‖Λ‖/gap with relative gaps >= 1e-3 (strategy).
    assert np.linalg.norm(g_q - q @ g @ q.T) <= 1e-9 * max(np.linalg.norm(g), 1.0)
    # The risk of any Γ (and task) is invariant under the joint rotation.
    rng = np.random.default_rng(qseed)
    gamma = rng.standard_normal((d, d))
    w = rng.standard_normal(d)
    kw = {"label_noise": 0.3, "input_noise": 0.2}
    for task, task_q in ((None, None), (w, q @ w)):
        a = linear.population_risk(gamma, cov, n, task=task, **kw)
        b = linear.population_risk(q @ gamma @ q.T, cov_q, n, task=task_q, **kw)
        assert abs(a - b) <= 1e-10 * max(abs(a), _spec_risk_scale(gamma, cov, n))


@given(covs=covariances(min_d=1, max_d=6), n=st.integers(1, 60))
def test_risk_and_sensitivity_closed_forms_and_monotonicity(covs, n):
    cov, lam, _ = covs
    d = len(lam)
    L = linear.optimal_risks(cov, n)
    S = linear.noise_sensitivity(cov, n)
    assert L.shape == (d + 1,) and S.shape == (d + 1,)
    np.testing.assert_allclose(L, _closed_L(lam, n), rtol=FP_RTOL, atol=0)
    np.testing.assert_allclose(S, _closed_S(lam, n), rtol=FP_RTOL, atol=FP_RTOL * S[-1])
    assert L[0] == pytest.approx(lam.sum(), rel=FP_RTOL) and S[0] == 0.0
    assert np.all(np.diff(L) < 0), L  # L_r strictly decreasing
    assert np.all(np.diff(S) > 0), S  # S_r strictly increasing
    for r in range(d + 1):
        g = linear.optimal_gamma(cov, n, r)
        assert linear.optimal_risk(cov, n, r) == pytest.approx(L[r], rel=FP_RTOL)
        # L_r is attained by Γ_r under R(Γ) (computed here) ...
        assert _spec_risk(g, cov, n) == pytest.approx(L[r], rel=1e-10)
        # ... and S_r = (1/N) tr(Γ_r Λ Γ_r Λ).
        s_from_gamma = np.trace(g @ cov @ g @ cov) / n
        assert s_from_gamma == pytest.approx(S[r], rel=1e-10, abs=1e-14)


@given(
    covs=covariances(min_d=1, max_d=6),
    n=st.integers(1, 60),
    pretrain=st.one_of(st.just(0.0), st.floats(0.0, 50.0)),
)
def test_full_rank_formula(covs, n, pretrain):
    cov, lam, _ = covs
    d = len(lam)
    t = lam.sum()
    expected = np.linalg.inv((n + 1) / n * cov + (t + pretrain) / n * np.eye(d))
    got = linear.optimal_gamma(cov, n, d, pretrain_label_noise=pretrain)
    # cond((N+1)/N Λ + t/N I) <= e^4-ish, so inversion is accurate to ~1e-13.
    assert _rel_fro(got, expected) <= 1e-10
    assert not linear.optimal_gamma(cov, n, 0).any()  # Γ_0 = 0


@given(
    covs=covariances(min_d=1, max_d=5),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
)
def test_zero_noise_recovers_clean_spec_risk(covs, n, seed):
    cov, lam, _ = covs
    d = len(lam)
    gamma = np.random.default_rng(seed).standard_normal((d, d))  # arbitrary Γ
    spec = _spec_risk(gamma, cov, n)
    tol = 1e3 * EPS * _spec_risk_scale(gamma, cov, n)
    base = linear.population_risk(gamma, cov, n)
    assert abs(base - spec) <= tol
    assert linear.population_risk(gamma, cov, n, label_noise=0.0, input_noise=0.0) == base
    # Label noise σ² with clean pretraining: M with t → t + σ² (Theorem B(a)
    # extended to any Γ: + (σ²/N) tr(Γᵀ Λ Γ Λ)).
    s2 = 0.7
    noisy = linear.population_risk(gamma, cov, n, label_noise=s2)
    assert abs(noisy - _spec_risk(gamma, cov, n, label_noise=s2)) <= tol * (1 + s2)


@given(
    covs=covariances(min_d=1, max_d=6),
    n=st.integers(1, 60),
    s2=st.floats(0.0, 200.0),
    sx2=st.floats(0.0, 5.0),
)
def test_noisy_optimal_risk_closed_forms(covs, n, s2, sx2):
    cov, lam, _ = covs
    L = _closed_L(lam, n)
    S = _closed_S(lam, n)
    X = _closed_input_noise_slope(lam, n)
    scale = lam.sum() + s2 * S[-1] + sx2 * X[-1]
    # Theorem B(a): R_r(σ²) = L_r + σ² S_r.
    got = linear.optimal_risks(cov, n, label_noise=s2)
    np.testing.assert_allclose(got, L + s2 * S, rtol=0, atol=FP_RTOL * scale)
    # Theorem B(b): R_r = L_r + σ_x² t Σ N λ_i/((N+1)λ_i + t)².
    got = linear.optimal_risks(cov, n, input_noise=sx2)
    np.testing.assert_allclose(got, L + sx2 * X, rtol=0, atol=FP_RTOL * scale)
    # Both, rank by rank, through the general population_risk of Γ_r.
    for r in range(len(lam) + 1):
        g = linear.optimal_gamma(cov, n, r)
        a = linear.optimal_risk(cov, n, r, label_noise=s2, input_noise=sx2)
        b = linear.population_risk(g, cov, n, label_noise=s2, input_noise=sx2)
        assert abs(a - b) <= 1e-10 * scale


@settings(max_examples=10)
@given(
    covs=covariances(min_d=1, max_d=5),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
    s2=st.floats(0.0, 5.0),
    sx2=st.floats(0.0, 2.0),
)
def test_task_average_matches_fixed_task_average(covs, n, seed, s2, sx2):
    """E_w[R(Γ; w)] over w ~ N(0, I) equals (1/d) Σ_k R(Γ; √d q_k) for ANY orthonormal basis q.

    R(Γ; w) = wᵀ K w + c is a quadratic form plus a constant, so the basis average gives
    (1/d) Σ_k d q_kᵀ K q_k + c = tr K + c = E_w R exactly.
    """
    cov, lam, _ = covs
    d = len(lam)
    rng = np.random.default_rng(seed)
    gamma = rng.standard_normal((d, d))
    basis = random_rotation(seed + 1, d)
    kw = {"label_noise": s2, "input_noise": sx2}
    fixed = [
        linear.population_risk(gamma, cov, n, task=np.sqrt(d) * basis[:, k], **kw)
        for k in range(d)
    ]
    avg = linear.population_risk(gamma, cov, n, **kw)
    scale = (1 + s2 + sx2) * _spec_risk_scale(gamma, cov, n)
    assert abs(np.mean(fixed) - avg) <= 1e-10 * scale
    # The fixed-task risk is a quadratic form in w plus the constant c = R(Γ; 0).
    w = rng.standard_normal(d)
    c = linear.population_risk(gamma, cov, n, task=np.zeros(d), **kw)
    r1 = linear.population_risk(gamma, cov, n, task=w, **kw)
    r3 = linear.population_risk(gamma, cov, n, task=3.0 * w, **kw)
    assert abs((r3 - c) - 9.0 * (r1 - c)) <= 1e-10 * 9 * scale * (1 + w @ w)


@given(
    covs=covariances(min_d=1, max_d=6),
    n=st.integers(1, 60),
    seed=st.integers(0, 2**31 - 1),
    s2=st.floats(0.0, 20.0),
    data=st.data(),
)
def test_fixed_task_theorem_Bc(covs, n, seed, s2, data):
    """R_r(w, σ²) = Σ_i w̃_i² [λ_i (1 − λ_i γ_i)² + λ_i³ γ_i²/N] + S_r (wᵀΛw + σ²)."""
    cov, lam, u = covs
    d = len(lam)
    r = data.draw(st.integers(0, d), label="rank")
    w = np.random.default_rng(seed).standard_normal(d)
    wt = u.T @ w
    t = lam.sum()
    gam = np.where(np.arange(d) < r, n / ((n + 1) * lam + t), 0.0)
    s_r = np.sum(gam**2 * lam**2) / n
    expected = np.sum(wt**2 * (lam * (1 - lam * gam) ** 2 + lam**3 * gam**2 / n)) + s_r * (
        w @ cov @ w + s2
    )
    got = linear.population_risk(linear.optimal_gamma(cov, n, r), cov, n, label_noise=s2, task=w)
    scale = (w @ w) * lam[0] * (1 + lam[0] * gam.max(initial=0)) ** 2 + s_r * s2
    assert abs(got - expected) <= 1e-10 * max(scale, 1.0)


@settings(max_examples=15)
@given(
    lam=spectra(min_d=1, max_d=5),
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 40),
    s02=st.floats(0.01, 30.0),
    data=st.data(),
)
def test_pretrain_label_noise_theorem_Bd(lam, seed, n, s02, data):
    """Γ_r(σ₀²) minimises R(·; label_noise=σ₀²) over rank-r Γ, with value t − Σ Nλ²/(D + σ₀²)."""
    d = len(lam)
    r = data.draw(st.integers(1, d), label="rank")
    cov, u = _rotated_cov(lam, seed)
    g = linear.optimal_gamma(cov, n, r, pretrain_label_noise=s02)
    a, b = _gamma_factors(lam, u, n, r, pretrain=s02)
    assert _rel_fro(g, a @ b.T) <= 1e-9  # same top-r subspace, γ_i shifted by σ₀²

    def risk(gamma):
        return linear.population_risk(gamma, cov, n, label_noise=s02)

    r_opt = risk(g)
    scale = (1 + s02) * _spec_risk_scale(g, cov, n)
    assert abs(r_opt - _closed_L(lam, n, pretrain=s02)[r]) <= 1e3 * EPS * scale
    assert linear.optimal_risk(
        cov, n, r, label_noise=s02, pretrain_label_noise=s02
    ) == pytest.approx(r_opt, rel=1e-10)
    # Stationary on the rank-r manifold: ∂R/∂A = G B = 0, ∂R/∂B = Gᵀ A = 0.
    grad = _spec_grad(a @ b.T, cov, n, label_noise=s02)
    gscale = np.linalg.norm(cov @ cov) * max(1.0, np.linalg.norm(a))
    assert np.linalg.norm(grad @ b) <= 1e-11 * gscale
    assert np.linalg.norm(grad.T @ a) <= 1e-11 * gscale
    # Random small perturbations of the factors never decrease the risk (± each direction,
    # so a non-stationary point would fail with probability ~1).
    rng = np.random.default_rng(seed + 7)
    eps = 1e-3 * max(1.0, np.linalg.norm(a))
    for _ in range(10):
        da = eps * rng.standard_normal(a.shape)
        db = eps * rng.standard_normal(b.shape)
        for sgn in (1.0, -1.0):
            assert risk((a + sgn * da) @ (b + sgn * db).T) >= r_opt - 1e3 * EPS * scale
    # The clean optimum Γ_r(0) is worse under σ₀² context noise (it is a different point).
    assert risk(linear.optimal_gamma(cov, n, r)) > r_opt


def test_optimal_risks_broadcasts_over_noise_arrays():
    cov, _ = _rotated_cov(CANONICAL_LAMBDA, 5)
    s2 = np.array([0.0, 1.0, 16.0])[:, None]
    sx2 = np.array([0.0, 0.3])[None, :]
    got = linear.optimal_risks(cov, CANONICAL_N, label_noise=s2, input_noise=sx2)
    assert got.shape == (3, 2, 9)
    for i in range(3):
        for j in range(2):
            ref = [
                linear.population_risk(
                    linear.optimal_gamma(cov, CANONICAL_N, r),
                    cov,
                    CANONICAL_N,
                    label_noise=s2[i, 0],
                    input_noise=sx2[0, j],
                )
                for r in range(9)
            ]
            np.testing.assert_allclose(got[i, j], ref, rtol=1e-10)


# --------------------------------------------------------------------------------------
# 4. Canonical example (docs/theory/linear.md)
# --------------------------------------------------------------------------------------

SPEC_L = [10.25, 6.85477, 4.86274, 3.78490, 3.14490, 2.82980, 2.69060, 2.63523, 2.61904]
SPEC_S = [0.0, 0.03602, 0.06777, 0.09359, 0.11407, 0.12786, 0.13576, 0.13960, 0.14091]
SPEC_TAU = [94.25, 62.75, 41.75, 31.25, 22.85, 17.60, 14.45, 12.35]
SPEC_RSTAR = {0.0: 8, 16.0: 6, 25.0: 4, 40.0: 3, 60.0: 2, 100.0: 0}


@pytest.mark.parametrize("rot_seed", [None, 2024])
def test_canonical_example(rot_seed):
    lam = CANONICAL_LAMBDA
    cov = np.diag(lam) if rot_seed is None else _rotated_cov(lam, rot_seed)[0]
    n = CANONICAL_N
    assert np.trace(cov) == pytest.approx(10.25, rel=1e-14)
    # Table values are rounded to 5 decimals: half a unit in the last place.
    np.testing.assert_allclose(linear.optimal_risks(cov, n), SPEC_L, rtol=0, atol=5e-6 + 1e-12)
    np.testing.assert_allclose(linear.noise_sensitivity(cov, n), SPEC_S, rtol=0, atol=5e-6 + 1e-12)
    for r in range(9):
        assert linear.optimal_risk(cov, n, r) == pytest.approx(SPEC_L[r], abs=5e-6 + 1e-12)
    for s2, r_star in SPEC_RSTAR.items():
        res = linear.best_rank(cov, n, label_noise=s2)
        assert res.rank == r_star, (s2, res)
        rank, tau = res  # unpacks as a pair
        assert rank == r_star
        np.testing.assert_allclose(tau, SPEC_TAU, rtol=1e-12)


# --------------------------------------------------------------------------------------
# 5. best_rank
# --------------------------------------------------------------------------------------


def _independent_risks(cov, n, s2, sx2):
    d = cov.shape[0]
    return np.array(
        [
            linear.population_risk(
                linear.optimal_gamma(cov, n, r), cov, n, label_noise=s2, input_noise=sx2
            )
            for r in range(d + 1)
        ]
    )


@given(
    covs=covariances(min_d=1, max_d=6),
    n=st.integers(1, 60),
    frac=st.floats(0.0, 1.3),
)
def test_best_rank_label_noise_counts_thresholds(covs, n, frac):
    cov, lam, _ = covs
    t = lam.sum()
    tau = (n + 1) * lam + t
    s2 = frac * tau[0]
    # Away from exact thresholds (where two ranks tie and rounding decides).
    assume(np.min(np.abs(s2 - tau) / tau) > 1e-8)
    res = linear.best_rank(cov, n, label_noise=s2)
    np.testing.assert_allclose(res.thresholds, tau, rtol=1e-12)
    assert res.rank == int(np.sum(tau > s2))
    risks = _independent_risks(cov, n, s2, 0.0)
    assert res.rank == int(np.argmin(risks))
    assert res.rank == int(np.argmin(linear.optimal_risks(cov, n, label_noise=s2)))
    # Unimodal in r: decreasing up to r*, increasing after.
    assert np.all(np.diff(risks[: res.rank + 1]) < 0)
    assert np.all(np.diff(risks[res.rank :]) > 0)


@given(
    covs=covariances(min_d=1, max_d=6),
    n=st.integers(1, 60),
    s2=st.floats(0.0, 100.0),
    sx2=st.floats(0.0, 10.0),
)
def test_best_rank_with_input_noise(covs, n, s2, sx2):
    cov, lam, _ = covs
    res = linear.best_rank(cov, n, label_noise=s2, input_noise=sx2)
    risks = _independent_risks(cov, n, s2, sx2)
    steps = np.diff(risks)  # effect of adding direction i = 1..d
    scale = np.max(np.abs(risks))
    # Skip draws where two ranks tie to rounding (argmin would be decided by rounding).
    assume(np.min(np.abs(steps)) > 1e-9 * scale)
    lowest = np.sort(risks)
    assume(lowest[1] - lowest[0] > 1e-9 * scale)  # unique minimiser beyond rounding
    assert res.rank == int(np.argmin(risks))
    # τ_i: direction i lowers the risk iff σ² < τ_i.
    helps = steps < 0
    np.testing.assert_array_equal(helps, s2 < res.thresholds)
    if sx2 == 0.0:
        assert res.rank == int(np.sum(res.thresholds > s2))


def test_best_rank_smallest_argmin_on_exact_plateau():
    """At an exact tie of the risks in r, r* is the smallest minimiser.

    λ = (1, 1), N = 1: t = 2, τ₁ = τ₂ = (N+1)·1 + t = 4, γ = 1/4, and at σ² = 4 every step
    γ²λ((N+1)/N λ² + (t+σ²)/N λ) − 2γλ² = (1/16)(2 + 6) − 1/2 = 0 involves only dyadic
    numbers, so R_0 = R_1 = R_2 holds exactly in floating point (checked below).
    """
    cov = np.eye(2)
    risks = linear.optimal_risks(cov, 1, label_noise=4.0)
    assert risks[0] == risks[1] == risks[2] == 2.0
    assert linear.best_rank(cov, 1, label_noise=4.0).rank == 0
    # Just below / above the common threshold: both directions help / neither does.
    assert linear.best_rank(cov, 1, label_noise=3.999).rank == 2
    assert linear.best_rank(cov, 1, label_noise=4.001).rank == 0


# --------------------------------------------------------------------------------------
# 6. Ties λ_r == λ_{r+1}
# --------------------------------------------------------------------------------------


@settings(max_examples=15)
@given(
    lam=spectra(min_d=2, max_d=5),
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 40),
    data=st.data(),
)
def test_ties(lam, seed, n, data):
    d = len(lam)
    k = data.draw(st.integers(0, d - 2), label="tie index")  # λ_{k+1} == λ_{k+2} (1-based)
    lam = lam.copy()
    lam[k + 1] = lam[k]
    r = k + 1  # λ_r == λ_{r+1}
    cov, u = _rotated_cov(lam, seed)
    L = _closed_L(lam, n)

    with pytest.raises(linear.RankTieError):
        linear.optimal_gamma(cov, n, r)
    with pytest.raises(ValueError, match="rank"):  # RankTieError is a ValueError
        linear.optimal_gamma(cov, n, r, on_tie="raise")
    with pytest.warns(linear.RankTieWarning):
        g = linear.optimal_gamma(cov, n, r, on_tie="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g_ignore = linear.optimal_gamma(cov, n, r, on_tie="ignore")
        # optimal_risk is unique at ties: no error, no warning, closed-form value.
        assert linear.optimal_risk(cov, n, r) == pytest.approx(L[r], rel=FP_RTOL)
        # Ranks without a tie at their boundary are unaffected.
        for rr in range(d + 1):
            if rr == r or (0 < rr < d and lam[rr - 1] == lam[rr]):
                continue
            linear.optimal_gamma(cov, n, rr)
    np.testing.assert_array_equal(g, g_ignore)
    scale = _spec_risk_scale(g, cov, n)
    assert np.linalg.matrix_rank(g, tol=1e-9 * np.linalg.norm(g)) == r
    assert abs(_spec_risk(g, cov, n) - L[r]) <= 1e3 * EPS * scale
    assert abs(linear.population_risk(g, cov, n) - L[r]) <= 1e3 * EPS * scale
    # Any r-subspace of the tied eigenspace is optimal: rotate the tied pair by θ.
    theta = data.draw(st.floats(0.0, np.pi), label="theta")
    c, s = np.cos(theta), np.sin(theta)
    u2 = u.copy()
    u2[:, k], u2[:, k + 1] = c * u[:, k] + s * u[:, k + 1], -s * u[:, k] + c * u[:, k + 1]
    a, b = _gamma_factors(lam, u2, n, r)
    assert abs(linear.population_risk(a @ b.T, cov, n) - L[r]) <= 1e3 * EPS * scale


def test_tie_at_full_and_zero_rank_is_not_an_error():
    cov = np.diag([2.0, 1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        linear.optimal_gamma(cov, 5, 3)
        linear.optimal_gamma(cov, 5, 0)
        linear.optimal_gamma(cov, 5, 1)
    with pytest.raises(linear.RankTieError):
        linear.optimal_gamma(cov, 5, 2)


# --------------------------------------------------------------------------------------
# 7. Validation
# --------------------------------------------------------------------------------------

GOOD = np.array([[2.0, 0.3], [0.3, 1.0]])
BAD_COVS = {
    "non_symmetric": np.array([[2.0, 0.3], [0.2, 1.0]]),
    "indefinite": np.array([[1.0, 2.0], [2.0, 1.0]]),
    "singular": np.array([[1.0, 1.0], [1.0, 1.0]]),
    "negative_definite": -np.eye(2),
    "nan": np.array([[np.nan, 0.0], [0.0, 1.0]]),
    "inf": np.array([[np.inf, 0.0], [0.0, 1.0]]),
    "not_square": np.ones((2, 3)),
}

COV_CALLS = {
    "optimal_gamma": lambda c: linear.optimal_gamma(c, 3, 1),
    "population_risk": lambda c: linear.population_risk(np.eye(2), c, 3),
    "optimal_risk": lambda c: linear.optimal_risk(c, 3, 1),
    "optimal_risks": lambda c: linear.optimal_risks(c, 3),
    "noise_sensitivity": lambda c: linear.noise_sensitivity(c, 3),
    "best_rank": lambda c: linear.best_rank(c, 3),
    "eigh_descending": lambda c: linear.eigh_descending(c),
    "sample_prompts": lambda c: linear.sample_prompts(jax.random.key(0), c, 3, 2),
}


@pytest.mark.parametrize("func", list(COV_CALLS))
@pytest.mark.parametrize("bad", list(BAD_COVS))
def test_bad_covariance_rejected(func, bad):
    COV_CALLS[func](GOOD)  # the good covariance is accepted
    with pytest.raises(ValueError, match=r"\bcov\b"):
        COV_CALLS[func](BAD_COVS[bad])


N_CALLS = {
    "optimal_gamma": lambda n: linear.optimal_gamma(GOOD, n, 1),
    "population_risk": lambda n: linear.population_risk(np.eye(2), GOOD, n),
    "optimal_risk": lambda n: linear.optimal_risk(GOOD, n, 1),
    "optimal_risks": lambda n: linear.optimal_risks(GOOD, n),
    "noise_sensitivity": lambda n: linear.noise_sensitivity(GOOD, n),
    "best_rank": lambda n: linear.best_rank(GOOD, n),
    "sample_prompts": lambda n: linear.sample_prompts(jax.random.key(0), GOOD, n, 2),
}


@pytest.mark.parametrize("func", list(N_CALLS))
@pytest.mark.parametrize("bad_n", [0, -3, 2.5, np.nan, "3"])
def test_bad_n_context_rejected(func, bad_n):
    N_CALLS[func](1)  # N = 1 is allowed
    with pytest.raises(ValueError, match=r"\bn_context\b"):
        N_CALLS[func](bad_n)


@pytest.mark.parametrize("func", ["optimal_gamma", "optimal_risk"])
@pytest.mark.parametrize("bad_rank", [-1, 3, 10, 1.5, None])
def test_bad_rank_rejected(func, bad_rank):
    f = getattr(linear, func)
    for ok in (0, 1, 2):  # 0..d are allowed (d = 2)
        f(GOOD, 3, ok)
    with pytest.raises(ValueError, match=r"\brank\b"):
        f(GOOD, 3, bad_rank)


NOISE_CALLS = {
    ("population_risk", "label_noise"): lambda v: linear.population_risk(
        np.eye(2), GOOD, 3, label_noise=v
    ),
    ("population_risk", "input_noise"): lambda v: linear.population_risk(
        np.eye(2), GOOD, 3, input_noise=v
    ),
    ("optimal_gamma", "pretrain_label_noise"): lambda v: linear.optimal_gamma(
        GOOD, 3, 1, pretrain_label_noise=v
    ),
    ("optimal_risk", "label_noise"): lambda v: linear.optimal_risk(GOOD, 3, 1, label_noise=v),
    ("optimal_risk", "input_noise"): lambda v: linear.optimal_risk(GOOD, 3, 1, input_noise=v),
    ("optimal_risk", "pretrain_label_noise"): lambda v: linear.optimal_risk(
        GOOD, 3, 1, pretrain_label_noise=v
    ),
    ("optimal_risks", "label_noise"): lambda v: linear.optimal_risks(GOOD, 3, label_noise=v),
    ("optimal_risks", "input_noise"): lambda v: linear.optimal_risks(GOOD, 3, input_noise=v),
    ("optimal_risks", "pretrain_label_noise"): lambda v: linear.optimal_risks(
        GOOD, 3, pretrain_label_noise=v
    ),
    ("best_rank", "label_noise"): lambda v: linear.best_rank(GOOD, 3, label_noise=v),
    ("best_rank", "input_noise"): lambda v: linear.best_rank(GOOD, 3, input_noise=v),
    ("sample_prompts", "label_noise"): lambda v: linear.sample_prompts(
        jax.random.key(0), GOOD, 3, 2, label_noise=v
    ),
    ("sample_prompts", "input_noise"): lambda v: linear.sample_prompts(
        jax.random.key(0), GOOD, 3, 2, input_noise=v
    ),
}


@pytest.mark.parametrize("call", list(NOISE_CALLS), ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("bad", [-0.1, -1e-300, np.nan, np.inf, -np.inf])
def test_bad_noise_rejected(call, bad):
    NOISE_CALLS[call](0.5)  # a positive level is accepted
    # \b keeps "label_noise" from matching inside "pretrain_label_noise".
    with pytest.raises(ValueError, match=rf"\b{call[1]}\b"):
        NOISE_CALLS[call](bad)


def test_bad_noise_array_rejected():
    linear.optimal_risks(GOOD, 3, label_noise=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\blabel_noise\b"):
        linear.optimal_risks(GOOD, 3, label_noise=np.array([0.0, -1.0]))
    with pytest.raises(ValueError, match=r"\binput_noise\b"):
        linear.optimal_risks(GOOD, 3, input_noise=np.array([np.nan, 1.0]))


def test_other_arguments_rejected():
    with pytest.raises(ValueError, match=r"\bgamma\b"):
        linear.population_risk(np.eye(3), GOOD, 3)
    with pytest.raises(ValueError, match=r"\bgamma\b"):
        linear.population_risk(np.array([[np.nan, 0.0], [0.0, 1.0]]), GOOD, 3)
    with pytest.raises(ValueError, match=r"\btask\b"):
        linear.population_risk(np.eye(2), GOOD, 3, task=np.ones(3))
    with pytest.raises(ValueError, match=r"\btask\b"):
        linear.population_risk(np.eye(2), GOOD, 3, task=np.array([np.inf, 0.0]))
    with pytest.raises(ValueError, match=r"\bon_tie\b"):
        linear.optimal_gamma(GOOD, 3, 1, on_tie="maybe")
    with pytest.raises(ValueError, match=r"\btask\b"):
        linear.sample_prompts(jax.random.key(0), GOOD, 3, 2, task=np.ones(3))
    with pytest.raises(ValueError, match=r"\bbatch\b"):
        linear.sample_prompts(jax.random.key(0), GOOD, 3, 0)
