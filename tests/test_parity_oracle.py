"""Tests of the exact numpy oracle of setting 2 (theory: ``docs/theory/parity.md``).

Every check compares the oracle with an independent computation:

* the canonical example table of docs/theory/parity.md (numbers copied from it, 5 decimals);
* brute-force enumeration of the risk from its definition (all bit vectors, all
  flip patterns, all N-tuples of context examples) for small D and N: exact, so
  the tolerance is floating point;
* Monte Carlo over prompts from ``sample_prompts`` through the model's forward
  pass (tolerance: 4 standard errors, the SE computed from the sample);
* closed forms of docs/theory/parity.md re-derived here (clean risk (2), the threshold
  equation, the count rule for m*).
"""

from __future__ import annotations

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from iclsim import parity
from iclsim.parity import model as pm
from iclsim.parity import oracle

pytestmark = pytest.mark.float64  # identities of the float64 oracle / model code

#: Relative floating-point tolerance for closed forms evaluated two ways (the
#: quantities are sums of a few hundred products of O(1) numbers).
FP_TOL = 1e-12
#: Monte Carlo tests: fixed examples (derandomize) and no shrinking (a statistical
#: failure would otherwise re-sample and re-compile for minutes).
NO_SHRINK = (Phase.explicit, Phase.generate)

CANONICAL_PI = np.array([0.40, 0.25, 0.15, 0.10, 0.06, 0.04])
CANONICAL_N = 16
CANONICAL_K = 2
CANONICAL_GAMMA = [0.91429, 0.84211, 0.73846, 0.64000, 0.50526, 0.40000]
CANONICAL_MU_STAR = [0.07376, 0.11004, 0.16305, 0.21370, 0.28199, 0.33333]
#: (μ, p, q, [R_0..R_6], m*) rows of the canonical table (docs/theory/parity.md).
CANONICAL_ROWS = [
    (1.00, 0.0, 0.0, [1, 0.63429, 0.42376, 0.31299, 0.24899, 0.21867, 0.20267], 6),
    (0.80, 0.1, 0.0, [1, 0.66772, 0.48157, 0.38750, 0.33528, 0.31192, 0.30016], 6),
    (0.64, 0.0, 0.1, [1, 0.71253, 0.55545, 0.47916, 0.43857, 0.42160, 0.41358], 6),
    (0.40, 0.3, 0.0, [1, 0.80983, 0.71232, 0.67006, 0.65060, 0.64460, 0.64276], 6),
    (0.25, 0.0, 0.25, [1, 0.88898, 0.83843, 0.82192, 0.81792, 0.81961, 0.82199], 4),
    (0.20, 0.4, 0.0, [1, 0.91850, 0.88526, 0.87810, 0.87964, 0.88404, 0.88788], 3),
]


# --------------------------------------------------------------------------------------
# Strategies and independent references
# --------------------------------------------------------------------------------------


@st.composite
def importances(draw, min_k=1, max_k=6, min_gap=0.0):
    """Sorted-decreasing probability vectors π with entries >= 0.02."""
    n_feat = draw(st.integers(min_k, max_k))
    raw = np.array(draw(st.lists(st.floats(0.05, 1.0), min_size=n_feat, max_size=n_feat)))
    pi = np.sort(raw / raw.sum())[::-1]
    if min_gap > 0 and n_feat > 1:
        pi = pi + min_gap * np.arange(n_feat)[::-1]
        pi = pi / pi.sum()
    return pi


flips = st.floats(0.0, 0.5)


def _spec_clean_risks(pi, n):
    """(2) of docs/theory/parity.md: R_m = 1 − Σ_{j≤m} N π_j² / ((N − 1) π_j + 1)."""
    terms = n * pi**2 / ((n - 1.0) * pi + 1.0)
    return 1.0 - np.concatenate([[0.0], np.cumsum(terms)])


def _all_bits(d):
    return np.array(list(itertools.product([1.0, -1.0], repeat=d))).reshape(2**d, d)


def _phi(alpha, z, k):
    """φ_h(z) = cos(π k Σ_b α_hb (1 − z_b)/2), written from docs/theory/parity.md."""
    return np.cos(np.pi * k * (0.5 * (1.0 - z)) @ alpha.T)


def _enumerated_risk(alpha, c, pi, n, k, p=0.0, q=0.0, d0=0, task=None):
    """E[(ŷ − y_q)²] by brute force over everything random in a prompt.

    One context example's shown state is (z̃, ỹ): z uniform, z̃ = z with each bit
    flipped w.p. q, ỹ = s·χ_j(z) flipped w.p. p.  Its distribution over the
    2^(D+1) states is built exactly, then all N-tuples of i.i.d. states are
    enumerated, and the query z_q (clean) is averaged over all 2^D values.
    ``task`` fixes j* (0-based); otherwise j* ~ π.  s = ±1 are both enumerated.
    """
    alpha = np.asarray(alpha, dtype=float).reshape(-1, len(pi) * k + d0)
    c = np.asarray(c, dtype=float)
    n_feat = len(pi)
    d = n_feat * k + d0
    zs = _all_bits(d)
    phi = _phi(alpha, zs, k)  # (2^D, m)
    # Bit-flip kernel T[z, z̃] = Π_b q^[z_b ≠ z̃_b] (1−q)^[z_b = z̃_b].
    n_diff = np.sum(zs[:, None, :] != zs[None, :, :], axis=-1)
    kernel = q**n_diff * (1.0 - q) ** (d - n_diff)
    tasks = range(n_feat) if task is None else [task]
    total = 0.0
    for j in tasks:
        chi = np.prod(zs[:, j * k : (j + 1) * k], axis=1)
        weight_j = pi[j] if task is None else 1.0
        for s in (1.0, -1.0):
            # prob[z̃, 0] for ỹ = +1, prob[z̃, 1] for ỹ = −1.
            clean = s * chi  # label of z before the label flip
            p_plus = np.where(clean > 0, 1.0 - p, p)  # P(ỹ = +1 | z)
            prob = np.stack([kernel.T @ p_plus, kernel.T @ (1.0 - p_plus)], axis=1) / 2**d
            states_v = np.concatenate([phi, -phi], axis=0)  # ỹ φ(z̃), (2·2^D, m)
            states_p = np.concatenate([prob[:, 0], prob[:, 1]])
            keep = states_p > 0
            states_v, states_p = states_v[keep], states_p[keep]
            idx = np.array(list(itertools.product(range(len(states_p)), repeat=n)))
            h = states_v[idx].mean(axis=1)  # (S^N, m)
            ph = np.prod(states_p[idx], axis=1)  # (S^N,)
            pred = (phi * c) @ h.T  # (2^D query, S^N)
            target = (s * chi)[:, None]
            risk = np.sum(((pred - target) ** 2) * ph[None, :]) / 2**d
            total += weight_j * 0.5 * risk
    return total


def _top_m(pi, k, m, d0=0):
    cfg = pm.ParityConfig(len(pi), k, d0, max(m, 1))
    return pm.hard_attention(range(m), cfg)


@partial(jax.jit, static_argnames=("n", "k", "batch", "d0"))
def _mc_chunk(key, models, pi, p, q, *, n, k, batch, d0):
    """Squared errors of each model (attention rows, readout) on the same ``batch`` prompts
    through the model's forward pass, and the prompts' task indices."""
    prompts = parity.sample_prompts(
        key, pi, n, k, batch, distractor_bits=d0, label_flip=p, bit_flip=q
    )
    errs = []
    for alpha, readout in models:
        pred = pm.apply_attention(alpha, readout, jnp.ones(alpha.shape[0]), prompts, k)
        errs.append((pred - prompts.y_query) ** 2)
    return errs, prompts.task


def _mc_losses(seed, models, pi, n, k, p, q, d0=0, total=200_000, chunk=25_000):
    """Squared errors (one array per model, all on the same prompts) and task indices."""
    keys = jax.random.split(jax.random.key(seed), total // chunk)
    models = [(jnp.asarray(a), jnp.asarray(c)) for a, c in models]
    errs, tasks = [], []
    for key in keys:
        e, t = _mc_chunk(key, models, jnp.asarray(pi), p, q, n=n, k=k, batch=chunk, d0=d0)
        errs.append([np.asarray(x) for x in e])
        tasks.append(np.asarray(t))
    return [np.concatenate(x) for x in zip(*errs)], np.concatenate(tasks)


def _assert_within_se(sample, want, what, n_se=4.0):
    mean = float(np.mean(sample))
    se = float(np.std(sample, ddof=1) / np.sqrt(len(sample)))
    assert abs(mean - want) <= n_se * se + 1e-12, (
        f"{what}: Monte Carlo {mean:.6f} vs oracle {want:.6f}, |diff| = {abs(mean - want):.2e} "
        f"> {n_se} SE (SE = {se:.2e}, {len(sample)} prompts)"
    )


# --------------------------------------------------------------------------------------
# Canonical example
# --------------------------------------------------------------------------------------


def test_canonical_readout_and_thresholds():
    gam = parity.optimal_readout(CANONICAL_PI, CANONICAL_N)
    np.testing.assert_allclose(gam, CANONICAL_GAMMA, atol=5e-6)
    mu_star = parity.best_heads(CANONICAL_PI, CANONICAL_N).thresholds
    np.testing.assert_allclose(mu_star, CANONICAL_MU_STAR, atol=5e-6)


@pytest.mark.parametrize("mu, p, q, risks, m_star", CANONICAL_ROWS)
def test_canonical_table(mu, p, q, risks, m_star):
    kw = dict(label_flip=p, bit_flip=q, k=CANONICAL_K)
    assert parity.signal(p, q, CANONICAL_K) == pytest.approx(mu, abs=1e-14)
    got = parity.optimal_risks(CANONICAL_PI, CANONICAL_N, **kw)
    np.testing.assert_allclose(got, risks, atol=5e-6)
    for m in range(7):  # the single-m function against the published table, not against got
        assert parity.optimal_risk(CANONICAL_PI, CANONICAL_N, m, **kw) == pytest.approx(
            risks[m], abs=5e-6)
    assert parity.best_heads(CANONICAL_PI, CANONICAL_N, **kw).heads == m_star


# --------------------------------------------------------------------------------------
# Closed forms of Theorems C and D
# --------------------------------------------------------------------------------------


@given(importances(), st.integers(1, 200))
def test_clean_risk_is_spec_2_and_decreasing(pi, n):
    got = parity.optimal_risks(pi, n)
    np.testing.assert_allclose(got, _spec_clean_risks(pi, n), rtol=FP_TOL, atol=FP_TOL)
    assert np.all(np.diff(got) < 0)


@given(importances(), st.integers(1, 100), flips, flips, st.integers(1, 4))
def test_fixed_task_risks_average_to_risk(pi, n, p, q, k):
    kw = dict(label_flip=p, bit_flip=q, k=k)
    for m in range(len(pi) + 1):
        avg = sum(pi[j] * parity.fixed_task_risk(pi, n, m, j, **kw) for j in range(len(pi)))
        assert avg == pytest.approx(parity.optimal_risk(pi, n, m, **kw), rel=FP_TOL, abs=FP_TOL)


@given(importances(), st.integers(1, 100))
def test_fixed_task_risk_written_from_spec_4(pi, n):
    """(4) re-derived here from docs/theory/parity.md, at μ = 0.7 (label flip 0.15)."""
    gam = n * pi / ((n - 1.0) * pi + 1.0)
    mu = 0.7
    for m in range(len(pi) + 1):
        for j in range(len(pi)):
            want = 1.0 + np.sum(gam[:m] ** 2) / n
            if j < m:
                want += gam[j] ** 2 * (1 - 1 / n) * mu**2 - 2 * gam[j] * mu
            got = parity.fixed_task_risk(pi, n, m, j, label_flip=0.15)
            assert got == pytest.approx(want, rel=FP_TOL, abs=FP_TOL)


@given(importances(), st.integers(1, 100))
def test_thresholds_solve_the_spec_equation(pi, n):
    mu_star = parity.thresholds(pi, n)
    assert np.all((mu_star > 0) & (mu_star <= 0.5))
    assert np.all(np.diff(mu_star) >= -1e-15)  # π sorted ⇒ μ* non-decreasing
    lhs = (n - 1) * pi * mu_star * (2 - mu_star)
    np.testing.assert_allclose(lhs, 1 - 2 * mu_star, rtol=1e-12, atol=1e-12)
    # Δ_j(μ*_j) = 0: at label flip p = (1 − μ*_j)/2, R_j = R_{j−1}.
    for j, ms in enumerate(mu_star):
        risks = parity.optimal_risks(pi, n, label_flip=(1.0 - ms) / 2.0)
        assert risks[j + 1] - risks[j] == pytest.approx(0.0, abs=1e-13)


@given(importances(), st.integers(1, 100), flips, flips, st.integers(1, 4))
def test_best_heads_is_argmin_and_count_rule(pi, n, p, q, k):
    kw = dict(label_flip=p, bit_flip=q, k=k)
    mu = (1 - 2 * p) * (1 - 2 * q) ** k
    risks = parity.optimal_risks(pi, n, **kw)
    best = parity.best_heads(pi, n, **kw)
    assert best.heads == int(np.argmin(risks))
    assert risks[best.heads] == pytest.approx(risks.min(), abs=0)
    margin = (n - 1) * pi * mu * (2 - mu) - (1 - 2 * mu)
    if np.all(np.abs(margin) > 1e-9):  # away from exact ties Δ_j = 0
        assert best.heads == int(np.sum(margin > 0))
        assert best.heads == int(np.sum(mu > best.thresholds))


@given(importances(min_k=2), st.integers(2, 100), st.floats(0.0, 0.49))
def test_noise_sensitivity_grows_with_m_and_m_star_shrinks(pi, n, p):
    """Theorem D: R_m(μ) − R_m(1) increasing in m; m*(μ) non-increasing as noise grows."""
    gap = parity.optimal_risks(pi, n, label_flip=p) - parity.optimal_risks(pi, n)
    assert np.all(np.diff(gap) >= -1e-15)
    ps = np.linspace(0.0, 0.5, 26)
    stars = [parity.best_heads(pi, n, label_flip=x).heads for x in ps]
    assert all(a >= b for a, b in zip(stars, stars[1:])), stars


def test_array_noise_broadcasts():
    p = np.array([0.0, 0.1, 0.3])
    q = np.array([[0.0], [0.2]])
    got = parity.optimal_risks(CANONICAL_PI, CANONICAL_N, label_flip=p, bit_flip=q, k=2)
    assert got.shape == (2, 3, 7)
    for a in range(2):
        for b in range(3):
            want = parity.optimal_risks(
                CANONICAL_PI, CANONICAL_N, label_flip=p[b], bit_flip=q[a, 0], k=2
            )
            np.testing.assert_allclose(got[a, b], want, rtol=1e-15)


# --------------------------------------------------------------------------------------
# Exact checks by enumeration (definition of the risk, no derivation)
# --------------------------------------------------------------------------------------


@settings(max_examples=10)
@given(
    importances(max_k=2),
    st.integers(1, 2),
    st.integers(1, 3),
    st.integers(0, 2),
    flips,
    flips,
    st.data(),
)
def test_risk_3_and_4_by_enumeration(pi, k, n, m_raw, p, q, data):
    m = min(m_raw, len(pi))
    if (2 ** (len(pi) * k + 1)) ** n > 5000:
        n = 1
    alpha = _top_m(pi, k, m)
    gam = parity.optimal_readout(pi, n)[:m]
    kw = dict(label_flip=p, bit_flip=q, k=k)
    want = _enumerated_risk(alpha, gam, pi, n, k, p, q)
    assert parity.optimal_risk(pi, n, m, **kw) == pytest.approx(want, rel=1e-12, abs=1e-12)
    j = data.draw(st.integers(0, len(pi) - 1))
    want_j = _enumerated_risk(alpha, gam, pi, n, k, p, q, task=j)
    assert parity.fixed_task_risk(pi, n, m, j, **kw) == pytest.approx(want_j, rel=1e-12, abs=1e-12)


@settings(max_examples=12)
@given(
    importances(max_k=2),
    st.integers(1, 2),
    st.integers(0, 1),
    st.integers(1, 3),
    st.integers(1, 3),
    flips,
    flips,
    st.integers(0, 2**31 - 1),
)
def test_population_loss_5_by_enumeration(pi, k, d0, n, m, p, q, seed):
    d = len(pi) * k + d0
    if (2 ** (d + 1)) ** n > 5000:
        n = 1 if (2 ** (d + 1)) ** 2 > 5000 else 2
    rng = np.random.default_rng(seed)
    logits = 1.5 * rng.standard_normal((m, d))
    alpha = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    c = rng.standard_normal(m)
    want = _enumerated_risk(alpha, c, pi, n, k, p, q, d0=d0)
    got = parity.population_loss(
        alpha, c, pi, n, k, label_flip=p, bit_flip=q, distractor_bits=d0
    )
    assert got == pytest.approx(want, rel=1e-11, abs=1e-12)


def test_population_loss_exact_for_rows_off_the_simplex():
    """The θ_h factors make (5) exact for any real α (e.g. a float32 softmax)."""
    rng = np.random.default_rng(3)
    pi = np.array([0.7, 0.3])
    alpha = rng.uniform(-0.3, 0.8, (2, 5))  # K = 2, k = 2, D₀ = 1; rows do not sum to 1
    c = rng.standard_normal(2)
    want = _enumerated_risk(alpha, c, pi, 2, 2, 0.1, 0.05, d0=1)
    got = parity.population_loss(
        alpha, c, pi, 2, 2, label_flip=0.1, bit_flip=0.05, distractor_bits=1
    )
    assert got == pytest.approx(want, rel=1e-11, abs=1e-12)


@given(importances(max_k=3), st.integers(1, 3), st.integers(0, 2), st.integers(0, 2**31 - 1))
def test_feature_moments_by_enumeration(pi, k, d0, seed):
    """A_hj = E[φ_h χ_j], G_hh' = E[φ_h φ_h'] over all 2^D bit vectors."""
    n_feat = len(pi)
    d = n_feat * k + d0
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.standard_normal((3, d))
    alpha = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    zs = _all_bits(d)
    phi = _phi(alpha, zs, k)
    chi = np.stack([np.prod(zs[:, j * k : (j + 1) * k], axis=1) for j in range(n_feat)], axis=1)
    a, g = oracle.feature_moments(alpha, n_feat, k)
    np.testing.assert_allclose(a, phi.T @ chi / 2**d, atol=1e-13)
    np.testing.assert_allclose(g, phi.T @ phi / 2**d, atol=1e-13)


# --------------------------------------------------------------------------------------
# (5) at the hard optimum; readout optimality
# --------------------------------------------------------------------------------------


@given(
    importances(),
    st.integers(1, 4),
    st.integers(0, 3),
    st.integers(1, 200),
    flips,
    flips,
    st.data(),
)
def test_population_loss_at_hard_top_m_equals_3(pi, k, d0, n, p, q, data):
    m = data.draw(st.integers(0, len(pi)))
    alpha = _top_m(pi, k, m, d0)
    gam = parity.optimal_readout(pi, n)[:m]
    kw = dict(label_flip=p, bit_flip=q)
    got = parity.population_loss(alpha, gam, pi, n, k, distractor_bits=d0, **kw)
    want = parity.optimal_risk(pi, n, m, k=k, **kw)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


@given(importances(), st.integers(1, 200), st.data())
def test_gamma_minimises_5_over_the_readout(pi, n, data):
    """At hard top-m attention (5) is quadratic in c; its minimiser (solved here) is γ (1)."""
    m = data.draw(st.integers(1, len(pi)))
    alpha = _top_m(pi, 2, m)
    a, g = oracle.feature_moments(alpha, len(pi), 2)
    m_mat = (1 - 1 / n) * (a * pi) @ a.T + g / n
    c_star = np.linalg.solve(g * m_mat, (a**2) @ pi)
    np.testing.assert_allclose(c_star, parity.optimal_readout(pi, n)[:m], rtol=1e-12)


# --------------------------------------------------------------------------------------
# Monte Carlo through the sampler and the model's forward pass
# --------------------------------------------------------------------------------------


@settings(max_examples=3, derandomize=True, phases=NO_SHRINK)
@given(
    importances(min_k=2, max_k=4),
    st.integers(1, 3),
    st.integers(0, 3),
    st.integers(2, 8),
    st.integers(1, 3),
    flips,
    flips,
    st.integers(0, 2**31 - 1),
    st.data(),
)
def test_risk_3_4_and_loss_5_by_monte_carlo(pi, k, d0, n, m_soft, p, q, seed, data):
    """200k prompts from the sampler (one compiled program per example) through two models:
    the hard top-m model with readout γ against (3) and, per task, (4); random soft attention
    rows (m_soft heads, on any bits, distractors included) with a random readout against the
    exact loss (5)."""
    m = data.draw(st.integers(1, len(pi)))
    alpha = _top_m(pi, k, m, d0)
    gam = parity.optimal_readout(pi, n)[:m]
    d = len(pi) * k + d0
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.standard_normal((m_soft, d))
    soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    c = rng.standard_normal(m_soft)
    (errs, soft_errs), tasks = _mc_losses(seed, [(alpha, gam), (soft, c)], pi, n, k, p, q, d0=d0)
    kw = dict(label_flip=p, bit_flip=q, k=k)
    _assert_within_se(errs, parity.optimal_risk(pi, n, m, **kw), f"(3) m={m}, D0={d0}")
    for j in range(len(pi)):
        sel = errs[tasks == j]
        if len(sel) >= 1000:
            want = parity.fixed_task_risk(pi, n, m, j, **kw)
            _assert_within_se(sel, want, f"(4) m={m}, task={j}")
    want = parity.population_loss(soft, c, pi, n, k, label_flip=p, bit_flip=q, distractor_bits=d0)
    _assert_within_se(soft_errs, want, f"(5) m={m_soft}, D0={d0}")


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pi, match",
    [
        ([0.6, 0.5, -0.1], "pi must have entries in \\[0, 1\\]"),
        ([0.5, 0.4], "pi must sum to 1"),
        ([0.3, 0.7], "sort it"),
        ([[0.5, 0.5]], "pi must be a 1-D"),
        ([], "pi must be a 1-D"),
        ([np.nan, 1.0], "pi must have finite"),
    ],
)
def test_pi_validation(pi, match):
    for call in (
        lambda: parity.optimal_readout(pi, 4),
        lambda: parity.optimal_risk(pi, 4, 0),
        lambda: parity.best_heads(pi, 4),
        lambda: parity.population_loss(np.zeros((0, 2)), np.zeros(0), pi, 4, 1),
    ):
        with pytest.raises(ValueError, match=match):
            call()


def test_pi_sum_tolerance():
    pi = np.array([0.5, 0.5 + 5e-10])
    pi = np.sort(pi)[::-1]
    parity.optimal_readout(pi, 3)  # within 1e-9: accepted
    with pytest.raises(ValueError, match="sum to 1"):
        parity.optimal_readout([0.5, 0.5 - 2e-9], 3)


def test_argument_validation():
    pi = [0.5, 0.3, 0.2]
    risk, loss = parity.optimal_risk, parity.population_loss
    a3, a4 = np.ones((1, 3)) / 3, np.ones((1, 4)) / 4
    cases = [
        (lambda: risk(pi, 4, 4), "heads must be an integer in \\[0, 3\\]"),
        (lambda: risk(pi, 4, -1), "heads must be an integer in \\[0, 3\\]"),
        (lambda: risk(pi, 0, 1), "n_context must be an integer in \\[1, inf\\)"),
        (lambda: parity.optimal_readout(pi, 2.5), "n_context must be an integer"),
        (lambda: risk(pi, 4, 1, label_flip=0.6), "label_flip must be in \\[0.0, 0.5\\]"),
        (lambda: risk(pi, 4, 1, label_flip=-0.1), "label_flip must be in"),
        (lambda: risk(pi, 4, 1, bit_flip=0.51, k=2), "bit_flip must be in \\[0.0, 0.5\\]"),
        (lambda: risk(pi, 4, 1, bit_flip=0.1), "k \\(the parity degree"),
        (lambda: risk(pi, 4, 1, bit_flip=0.1, k=0), "k must be an integer in \\[1, inf\\)"),
        (lambda: parity.signal(0.1, 0.1, 0), "k must be an integer in \\[1, inf\\)"),
        (lambda: parity.fixed_task_risk(pi, 4, 1, 3), "task must be an integer in \\[0, 2\\]"),
        (lambda: loss(a3, [1.0], pi, 4, 0), "k must be an integer"),
        (lambda: loss(a4, [1.0], pi, 4, 1), "attention must have shape \\(m, D\\)"),
        (lambda: loss(a3, [1.0, 2.0], pi, 4, 1), "readout must have shape"),
        (lambda: loss(a3, [1.0], pi, 4, 1, distractor_bits=-1), "distractor_bits"),
        (lambda: loss(a3, [1.0], pi, 4, 1, bit_flip=0.7), "bit_flip must be in"),
        (lambda: loss(a3 * np.nan, [1.0], pi, 4, 1), "attention must have finite"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    # q = 0 needs no k; μ at q > 0 uses k.
    assert parity.signal(0.1) == pytest.approx(0.8)
    assert parity.signal(0.1, 0.1, 3) == pytest.approx(0.8 * 0.8**3)
