"""The verification kit iclsim.testing: strategies, assertions, the worked example of docs/testing.md.

Every assertion is checked against values written in this file from the theory pages
(γ_i = N/((N+1)λ_i + t + σ₀²), (R_noisy), (B), γ_j = Nπ_j/((N−1)π_j + 1)), not against the
kit itself: it must pass on the optimum and fail, naming the direction or head and the size
of the error, on wrong inputs.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iclsim.testing as kit
from iclsim.linear import model as lsa
from iclsim.linear import oracle as lin
from iclsim.parity import oracle as par

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "test_my_lsa.py"
FEW = settings(max_examples=15, deadline=None)


# --------------------------------------------------------------------------------------
# Independent references (written from docs/theory/linear.md and docs/theory/parity.md)
# --------------------------------------------------------------------------------------


def gamma_r(lam, u, n, r, s02=0.0):
    """Γ_r = U diag(γ_1..γ_r, 0..) Uᵀ, γ_i = N/((N+1)λ_i + t + σ₀²) (Theorem A, B(d))."""
    gam = n / ((n + 1.0) * lam + lam.sum() + s02)
    gam[r:] = 0.0
    return (u * gam) @ u.T


def risk_noisy(gamma, cov, n, s2=0.0, sx2=0.0):
    """(R_noisy): t − 2 tr(ΛΓΛ) + ((N+1)/N) tr(ΛPΛ) + ((t+σ²)/N) tr(P(Λ + σ_x² I))."""
    t = np.trace(cov)
    p = gamma.T @ cov @ gamma
    return (t - 2 * np.trace(cov @ gamma @ cov) + (n + 1) / n * np.trace(cov @ p @ cov)
            + (t + s2) / n * np.trace(p @ (cov + sx2 * np.eye(len(cov)))))


def risk_b(lam, n, r, s2=0.0, sx2=0.0, s02=0.0):
    """(B): R_r = t + Σ_{i≤r} [γ_i² λ_i ((N+1)/N λ_i² + (t+σ²)/N (λ_i + σ_x²)) − 2 γ_i λ_i²]."""
    t = lam.sum()
    gam = n / ((n + 1.0) * lam + t + s02)
    terms = gam**2 * lam * ((n + 1) / n * lam**2 + (t + s2) / n * (lam + sx2)) - 2 * gam * lam**2
    return t + terms[:r].sum()


def error_of(message, label):
    """The signed error printed on the message line that starts with ``label``."""
    (line,) = [ln for ln in message.splitlines() if ln.strip().startswith(f"- {label}")]
    return float(re.search(r"error ([+-][0-9.e+-]+)", line).group(1))


def _rotation(seed, d):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# --------------------------------------------------------------------------------------
# The worked example of docs/testing.md
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("my_lsa_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worked_example_passes_on_the_trained_model(example):
    example.test_trained_lsa_is_the_rank_r_optimum()
    example.test_gamma_is_what_the_layer_computes()


@pytest.mark.parametrize("direction, delta", [(2, 0.12), (4, -0.05)])
def test_worked_example_fails_naming_the_wrong_direction(example, monkeypatch, direction, delta):
    """One eigen-direction of the user's Γ is off by delta: the example's test must fail and
    its message name that direction (and no other) with the size of the error."""
    lam, vec = np.linalg.eigh(example.COV)
    lam, vec = lam[::-1], vec[:, ::-1]
    u_i = vec[:, direction - 1]
    example.train()  # trained (and cached) with the model's own Γ, before it is broken
    good = example.gamma

    def broken(params):
        return good(params) + delta * jnp.outer(u_i, u_i)

    monkeypatch.setattr(example, "gamma", broken)
    with pytest.raises(AssertionError) as info:
        example.test_trained_lsa_is_the_rank_r_optimum()
    message = str(info.value)
    want = gamma_r(lam.copy(), vec, example.N, example.RANK)
    err = u_i @ np.asarray(broken(example.train()), dtype=float) @ u_i - u_i @ want @ u_i
    assert abs(err - delta) < 1e-3  # the trained model itself is right to ~1e-5
    assert error_of(message, f"direction {direction} ") == pytest.approx(err, rel=1e-3)
    others = [i for i in range(1, example.D + 1) if i != direction]
    assert not any(f"direction {i} " in message for i in others), message
    assert f"λ_{direction} = {lam[direction - 1]:.6g}" in message


def _python_blocks():
    text = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_docs_show_the_example_file_verbatim():
    assert _python_blocks()[0] == EXAMPLE.read_text(encoding="utf-8")


def test_docs_property_test_snippet_runs():
    """The strategies snippet of docs/testing.md, with the oracle as the user's solver."""
    namespace = {"my_solver": lambda cov, n, r, s02: lin.optimal_gamma(
        cov, n, r, pretrain_label_noise=s02)}
    exec(compile(_python_blocks()[1], "<docs/testing.md>", "exec"), namespace)
    namespace["test_my_solver_finds_the_optimum"]()
    namespace["my_solver"] = lambda cov, n, r, s02: lin.optimal_gamma(cov, n, r) * 1.01
    with pytest.raises(AssertionError, match="direction"):
        namespace["test_my_solver_finds_the_optimum"]()


# --------------------------------------------------------------------------------------
# Strategies draw only valid configurations
# --------------------------------------------------------------------------------------


@FEW
@given(st.data(), st.sampled_from([1e-3, 0.05, 0.3]))
def test_spectra_are_decreasing_with_the_gap(data, gap):
    lam = data.draw(kit.spectra(gap=gap, max_d=5, low=0.2, high=50.0))
    assert lam.ndim == 1 and 1 <= lam.shape[0] <= 5
    assert np.all(lam[:-1] - lam[1:] >= gap * lam[:-1])
    assert 0.2 * (1 - 1e-12) <= lam.min() and lam.max() <= 50.0 * (1 + 1e-12)
    assert data.draw(kit.spectra(d=3)).shape == (3,)


@FEW
@given(kit.spectra(ties=True, max_d=4))
def test_spectra_with_ties_have_an_exact_tie(lam):
    assert lam.shape[0] >= 2 and np.any(lam[:-1] == lam[1:]) and np.all(np.diff(lam) <= 0)


@FEW
@given(kit.covariances(max_d=4))
def test_covariances_are_rotated_spectra(case):
    cov, lam, u = case
    d = lam.shape[0]
    assert np.array_equal(cov, cov.T)
    np.testing.assert_allclose(u.T @ u, np.eye(d), atol=1e-12)
    np.testing.assert_allclose(cov @ u, u * lam, atol=1e-10 * lam.max())
    np.testing.assert_allclose(np.linalg.eigvalsh(cov)[::-1], lam, rtol=1e-9)


@FEW
@given(st.data(), st.sampled_from([1e-3, 0.02]))
def test_importances_are_what_the_parity_oracle_accepts(data, gap):
    pi = data.draw(kit.importances(gap=gap, max_K=5, min_pi=0.03))
    par.check_pi(pi)  # 1-D, sums to 1, sorted decreasing
    assert abs(pi.sum() - 1.0) < 1e-12 and pi.min() >= 0.03 * (1 - 1e-12)
    assert np.all(pi[:-1] - pi[1:] >= gap * pi[:-1])
    tied = data.draw(kit.importances(ties=True, max_K=4))
    par.check_pi(tied)
    assert np.any(tied[:-1] == tied[1:])


@FEW
@given(kit.noise_levels(), kit.noise_levels("flip"), kit.noise_levels(max_value=0.3))
def test_noise_levels_are_in_range(variance, flip, small):
    assert 0.0 <= variance <= 4.0 and 0.0 <= flip <= 0.5 and 0.0 <= small <= 0.3


@FEW
@given(kit.linear_configs(noise=True, max_d=4))
def test_linear_configs_are_accepted_by_the_oracle(case):
    d = case.lam.shape[0]
    assert 0 <= case.rank <= d and case.n_context >= 1
    assert min(case.label_noise, case.input_noise, case.pretrain_label_noise) >= 0.0
    lin.optimal_gamma(case.cov, case.n_context, case.rank, on_tie="raise",
                      pretrain_label_noise=case.pretrain_label_noise)
    assert np.isfinite(lin.optimal_risk(case.cov, case.n_context, case.rank,
                                        label_noise=case.label_noise,
                                        input_noise=case.input_noise))


@FEW
@given(kit.linear_configs(ties=True, max_d=4))
def test_linear_configs_with_ties_sit_on_the_tie(case):
    assert case.lam[case.rank - 1] == case.lam[case.rank]
    with pytest.raises(lin.RankTieError):
        lin.optimal_gamma(case.cov, case.n_context, case.rank, on_tie="raise")


@FEW
@given(kit.parity_configs(noise=True, max_K=4))
def test_parity_configs_are_accepted_by_the_oracle(case):
    n_feat = case.pi.shape[0]
    assert 0 <= case.heads <= n_feat and case.k >= 1 and case.distractor_bits >= 0
    assert 0.0 <= case.label_flip <= 0.5 and 0.0 <= case.bit_flip <= 0.5
    attention = np.zeros((case.heads, n_feat * case.k + case.distractor_bits))
    loss = par.population_loss(attention + 1.0 / attention.shape[1], np.zeros(case.heads),
                               case.pi, case.n_context, case.k, label_flip=case.label_flip,
                               bit_flip=case.bit_flip, distractor_bits=case.distractor_bits)
    assert loss == pytest.approx(1.0)  # zero readout predicts 0
    par.best_heads(case.pi, case.n_context, label_flip=case.label_flip,
                   bit_flip=case.bit_flip, k=case.k)


@FEW
@given(kit.parity_configs(ties=True, max_K=4))
def test_parity_configs_with_ties_sit_on_the_tie(case):
    assert case.pi[case.heads - 1] == case.pi[case.heads]


@pytest.mark.parametrize("make", [
    lambda: kit.spectra(gap=0.0),
    lambda: kit.spectra(gap=0.5, d=8, low=1.0, high=2.0),
    lambda: kit.spectra(d=1, ties=True),
    lambda: kit.importances(min_pi=0.2, max_K=6),
    lambda: kit.noise_levels("flip", max_value=0.7),
    lambda: kit.noise_levels("bits"),
])
def test_strategies_reject_impossible_arguments(make):
    with pytest.raises(ValueError):
        make()


# --------------------------------------------------------------------------------------
# assert_lsa_optimal and excess_risk
# --------------------------------------------------------------------------------------


@FEW
@given(kit.linear_configs(noise=True, max_d=4), st.data())
def test_lsa_optimum_passes_and_one_wrong_direction_fails(case, data):
    cov, lam, u, n, r, s2, sx2, s02 = case
    kw = dict(label_noise=s2, input_noise=sx2, pretrain_label_noise=s02)
    good = gamma_r(lam.copy(), u, n, r, s02)
    kit.assert_lsa_optimal(good, cov, n, r, rtol=1e-9, **kw)
    i = data.draw(st.integers(0, lam.shape[0] - 1), label="direction (0-based)")
    delta = 0.2 * n / ((n + 1) * lam[i] + lam.sum() + s02)  # well above the tolerance
    bad = good + delta * np.outer(u[:, i], u[:, i])
    with pytest.raises(AssertionError) as info:
        kit.assert_lsa_optimal(bad, cov, n, r, rtol=1e-9, **kw)
    assert error_of(str(info.value), f"direction {i + 1} ") == pytest.approx(delta, rel=1e-3)


@FEW
@given(kit.linear_configs(noise=True, max_d=4), st.integers(0, 2**32 - 1))
def test_excess_risk_is_R_minus_R_r(case, seed):
    cov, lam, u, n, r, s2, sx2, s02 = case
    gamma = np.random.default_rng(seed).standard_normal(cov.shape)
    got = kit.excess_risk(gamma, cov, n, r, label_noise=s2, input_noise=sx2,
                          pretrain_label_noise=s02)
    want = risk_noisy(gamma, cov, n, s2, sx2) - risk_b(lam, n, r, s2, sx2, s02)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9 * risk_b(lam, n, 0))
    # At matching noise the optimum is the minimum over rank <= r: excess >= 0, 0 at Γ_r.
    low_rank = gamma @ np.diag((np.arange(len(lam)) < r).astype(float)) @ gamma.T
    assert kit.excess_risk(low_rank, cov, n, r, label_noise=s02,
                           pretrain_label_noise=s02) >= -1e-9 * lam.sum()
    assert kit.excess_risk(gamma_r(lam.copy(), u, n, r, s02), cov, n, r, label_noise=s02,
                           pretrain_label_noise=s02) == pytest.approx(0.0, abs=1e-9 * lam.sum())


LAM4 = np.array([4.0, 2.5, 1.5, 1.0])
U4 = _rotation(3, 4)
COV4 = (U4 * LAM4) @ U4.T
N4 = 20


@pytest.mark.parametrize("true_rank, asked", [(3, 2), (1, 2)])
def test_lsa_wrong_rank_fails_and_says_which_rank_fits(true_rank, asked):
    with pytest.raises(AssertionError) as info:
        kit.assert_lsa_optimal(gamma_r(LAM4.copy(), U4, N4, true_rank), COV4, N4, asked)
    message = str(info.value)
    off = max(true_rank, asked)  # the direction kept by one rank and dropped by the other
    want = N4 / ((N4 + 1) * LAM4[off - 1] + LAM4.sum())
    assert error_of(message, f"direction {off} ") == pytest.approx(
        want if true_rank > asked else -want, rel=1e-3)
    assert f"matches the rank-{true_rank} optimum" in message
    if true_rank > asked:
        assert "3 singular values above the tolerance" in message


def test_lsa_wrong_rank_mask_fails():
    params = _reduced_params(gamma_r(LAM4.copy(), U4, N4, 2), r_max=4, rank=3)
    with pytest.raises(AssertionError, match="rank mask with 3 active columns, but rank=2"):
        kit.assert_lsa_optimal(params, COV4, N4, 2)


def test_lsa_wrong_pretraining_noise_fails_and_names_the_noise_that_fits():
    trained = gamma_r(LAM4.copy(), U4, N4, 2, s02=2.0)
    kit.assert_lsa_optimal(trained, COV4, N4, 2, pretrain_label_noise=2.0, label_noise=2.0,
                           rtol=1e-9)
    with pytest.raises(AssertionError) as info:
        kit.assert_lsa_optimal(trained, COV4, N4, 2)
    message = str(info.value)
    want = N4 / ((N4 + 1) * LAM4[0] + LAM4.sum() + 2.0) - N4 / ((N4 + 1) * LAM4[0] + LAM4.sum())
    assert error_of(message, "direction 1 ") == pytest.approx(want, rel=1e-3)
    assert "σ₀² ≈ 2," in message
    # The other way round: a clean-trained model claimed to be trained at σ₀² = 2.
    with pytest.raises(AssertionError) as info:
        kit.assert_lsa_optimal(gamma_r(LAM4.copy(), U4, N4, 2), COV4, N4, 2,
                               pretrain_label_noise=2.0)
    assert error_of(str(info.value), "direction 1 ") == pytest.approx(-want, rel=1e-3)
    assert "σ₀² ≈ 0," in str(info.value)


def test_lsa_wrong_evaluation_noise_fails_on_the_risk():
    good = gamma_r(LAM4.copy(), U4, N4, 2)
    with pytest.raises(AssertionError) as info:
        kit.assert_risk_close(lin.population_risk(good, COV4, N4, label_noise=1.0),
                              risk_b(LAM4, N4, 2), rtol=1e-6)
    assert "difference" in str(info.value)
    # The right noise passes (R_r(σ²) = L_r + σ² S_r, (B) at σ² = 1).
    kit.assert_lsa_optimal(good, COV4, N4, 2, label_noise=1.0, rtol=1e-9)


def test_lsa_ties_accept_every_optimum_and_say_so():
    lam = np.array([3.0, 2.0, 2.0, 1.0])
    u = _rotation(5, 4)
    cov = (u * lam) @ u.T
    gam = N4 / ((N4 + 1) * lam + lam.sum())
    for angle in (0.0, 0.7, 2.0):  # a different 1-dimensional subspace of the tied plane
        v = np.cos(angle) * u[:, 1] + np.sin(angle) * u[:, 2]
        gamma = gam[0] * np.outer(u[:, 0], u[:, 0]) + gam[1] * np.outer(v, v)
        kit.assert_lsa_optimal(gamma, cov, N4, 2, rtol=1e-9)
    # γ on the whole tied plane: rank 3, not one of the rank-2 optima.
    both = gamma_r(lam.copy(), u, N4, 3)
    with pytest.raises(AssertionError) as info:
        kit.assert_lsa_optimal(both, cov, N4, 2, rtol=1e-9)
    message = str(info.value)
    assert "not unique" in message and "tied directions 2..3" in message


def test_lsa_float32_covariance_is_read_but_an_asymmetric_one_is_refused():
    cov32 = COV4.astype(np.float32)
    cov32[0, 1] += 2e-7  # float32 rounding: symmetric to 1e-7 relative
    good = gamma_r(LAM4.copy(), U4, N4, 2)
    kit.assert_lsa_optimal(good.astype(np.float32), cov32, N4, 2, rtol=1e-5)
    with pytest.raises(ValueError, match="symmetric"):
        kit.assert_lsa_optimal(good, COV4 + np.triu(np.full((4, 4), 0.1), 1), N4, 2)
    with pytest.raises(ValueError, match="shape"):
        kit.assert_lsa_optimal(good[:3, :3], COV4, N4, 2)


def _reduced_params(gamma, r_max, rank):
    """iclsim reduced-LSA parameters with Γ = (A∘m) Bᵀ equal to the given rank-≤rank Γ."""
    uu, s, vt = np.linalg.svd(gamma)
    a = np.zeros((gamma.shape[0], r_max))
    b = np.zeros((gamma.shape[0], r_max))
    a[:, :rank], b[:, :rank] = uu[:, :rank] * s[:rank], vt[:rank].T
    return {"weights": {"a": a, "b": b}, "rank_mask": np.asarray(lsa.rank_mask(rank, r_max))}


def test_lsa_parameter_pytrees_of_every_parametrisation():
    rng = np.random.default_rng(7)
    with jax.enable_x64(True):  # float64 weights, compared exactly
        # Γ of random (non-symmetric) weights: the kit's float64 reading equals the model's.
        mask = np.array([1.0, 1.0, 0.0])  # rank 2 of r_max = 3
        for kind, shapes in [("reduced", {"a": (4, 3), "b": (4, 3)}),
                             ("block", {"a": (4, 3), "b": (4, 3), "u": ()}),
                             ("full", {"w_pv": (5, 5), "a": (5, 3), "b": (5, 3)})]:
            params = {"weights": {name: rng.standard_normal(shape)
                                  for name, shape in shapes.items()}, "rank_mask": mask}
            assert lsa.parametrization_of(params) == kind
            np.testing.assert_allclose(kit.lsa_gamma(params), lsa.effective_gamma(params),
                                       rtol=0, atol=1e-12)
        good = gamma_r(LAM4.copy(), U4, N4, 2)
        reduced = _reduced_params(good, r_max=3, rank=2)
        w = reduced["weights"]
        block = {"weights": {"a": w["b"] / 2.0, "b": w["a"], "u": np.array(2.0)},
                 "rank_mask": reduced["rank_mask"]}  # Γ = u (A Bᵀ)ᵀ
        full = jax.tree.map(np.array, lsa.to_full(reduced))
    for params in (reduced, block, full):
        np.testing.assert_allclose(kit.lsa_gamma(params), good, rtol=0, atol=1e-12)
        kit.assert_lsa_optimal(params, COV4, N4, 2, rtol=1e-9)
    # The full layer with v_x ≠ 0 (a value row on the inputs) has terms beyond Γ_eff.
    full["weights"]["w_pv"][4, :4] = 0.3
    with pytest.raises(AssertionError, match="terms outside the reduced form"):
        kit.assert_lsa_optimal(full, COV4, N4, 2)


# --------------------------------------------------------------------------------------
# assert_parity_optimal
# --------------------------------------------------------------------------------------

PI = np.array([0.40, 0.25, 0.15, 0.10, 0.06, 0.04])
NP, KP = 16, 2
GAMMA_P = NP * PI / ((NP - 1) * PI + 1)  # (1) of docs/theory/parity.md


def _hard(blocks, d0=0):
    att = np.zeros((len(blocks), len(PI) * KP + d0))
    for h, j in enumerate(blocks):
        att[h, j * KP:(j + 1) * KP] = 1.0 / KP
    return att


def test_parity_optimum_passes_in_any_head_order_and_as_a_pytree():
    kit.assert_parity_optimal((_hard([0, 1, 2]), GAMMA_P[:3]), PI, NP, 3, k=KP, rtol=1e-9)
    kit.assert_parity_optimal((_hard([2, 0, 1]), GAMMA_P[[2, 0, 1]]), PI, NP, 3, k=KP)
    logits = np.where(_hard([0, 1, 2], d0=1) > 0, 12.0, 0.0)
    params = {"weights": {"logits": np.vstack([logits, np.zeros(13)]),
                          "readout": np.append(GAMMA_P[:3], 5.0)},
              "head_mask": np.array([1.0, 1.0, 1.0, 0.0])}  # the padded head is masked
    kit.assert_parity_optimal(params, PI, NP, 3, k=KP, distractor_bits=1, rtol=1e-3,
                              label_flip=0.1, bit_flip=0.05)


def test_parity_wrong_head_fails_naming_the_head_and_the_uncovered_block():
    readout = GAMMA_P[[0, 1, 4]]
    with pytest.raises(AssertionError) as info:
        kit.assert_parity_optimal((_hard([0, 1, 4]), readout), PI, NP, 3, k=KP)
    message = str(info.value)
    assert "head 2 is on block 4" in message and "outside the top-3 blocks {0, 1, 2}" in message
    assert "block 2 (π_2 = 0.15, a top-3 block) has no head on it" in message


def test_parity_wrong_readout_fails_with_the_error():
    readout = GAMMA_P[:3] * np.array([1.0, 0.7, 1.0])
    with pytest.raises(AssertionError) as info:
        kit.assert_parity_optimal((_hard([0, 1, 2]), readout), PI, NP, 3, k=KP)
    message = str(info.value)
    assert error_of(message, "head 1 ") == pytest.approx(-0.3 * GAMMA_P[1], rel=1e-3)
    assert "head 0 " not in message and "head 2 " not in message


@pytest.mark.parametrize("blocks, heads, text", [
    ([0, 0, 2], 3, "heads 0 and 1 share block 0 (collapsed"),
    ([0, 1, 2], 2, "the model has 3 heads (attention rows), but heads=2"),
    ([0], 2, "block 1 (π_1 = 0.25, a top-2 block) has no head on it"),
])
def test_parity_collapsed_or_miscounted_heads_fail(blocks, heads, text):
    with pytest.raises(AssertionError, match=re.escape(text)):
        kit.assert_parity_optimal((_hard(blocks), GAMMA_P[blocks]), PI, NP, heads, k=KP)


def test_parity_soft_attention_below_the_mass_fails():
    att = 0.9 * _hard([0, 1]) + 0.1 / (len(PI) * KP)
    with pytest.raises(AssertionError, match="head 0 is not on one block"):
        kit.assert_parity_optimal((att, GAMMA_P[:2]), PI, NP, 2, k=KP)


def test_parity_ties_accept_every_choice_and_say_so():
    pi = np.array([0.4, 0.2, 0.2, 0.2])
    gam = NP * pi / ((NP - 1) * pi + 1)
    for last in (1, 2, 3):
        att = np.zeros((2, 8))
        att[0, 0:2] = att[1, 2 * last:2 * last + 2] = 0.5
        kit.assert_parity_optimal((att, gam[[0, last]]), pi, NP, 2, k=KP, rtol=1e-9)
    att = np.zeros((2, 8))
    att[0, 2:4] = att[1, 4:6] = 0.5  # two tied blocks, the top block uncovered
    with pytest.raises(AssertionError) as info:
        kit.assert_parity_optimal((att, gam[[1, 2]]), pi, NP, 2, k=KP)
    message = str(info.value)
    assert "block 0 (π_0 = 0.4, a top-2 block) has no head on it" in message
    assert "not unique" in message


# --------------------------------------------------------------------------------------
# assert_risk_close and the optional hypothesis
# --------------------------------------------------------------------------------------


def test_assert_risk_close():
    kit.assert_risk_close(risk_b(LAM4, N4, 2), lin.optimal_risk(COV4, N4, 2), rtol=1e-12)
    kit.assert_risk_close([1.0, 2.0], 2.0, atol=1.0)
    with pytest.raises(AssertionError) as info:
        kit.assert_risk_close([1.0, 2.5, 3.0], [1.0, 2.0, 3.0], rtol=0.1, err_msg="rank 2")
    message = str(info.value)
    assert "at index (1,)" in message and "difference +0.5" in message and "+25 %" in message
    assert "(1 of 3 entries)" in message and message.endswith("rank 2")
    with pytest.raises(AssertionError, match="non-finite"):
        kit.assert_risk_close(float("nan"), 1.0, atol=1e9)


def test_import_works_without_hypothesis_and_strategies_say_how_to_install():
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import numpy as np, iclsim.testing as kit\n"
        "kit.assert_lsa_optimal(np.zeros((2, 2)), np.eye(2), 5, 0)\n"
        "try:\n"
        "    kit.spectra()\n"
        "except ImportError as exc:\n"
        "    print('IMPORT-ERROR:' + repr(str(exc)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("IMPORT-ERROR:")]
    text = eval(line.split(":", 1)[1])  # the repr of the message
    assert "pip install hypothesis" in text and "\n" not in text
