"""The verdict layer (iclsim.engine.verdict) and setting 1's exact evaluation.

Fast: the fold (a table of part decisions → line and exit code), each part builder against
values computed here from the float64 oracle, storage round trip through netCDF, and the
exact noisy-prompt risk of a trained Γ against an independent numpy Monte Carlo (stated SE)
with a power check on the input-noise term.
"""

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from iclsim.engine import verdict as V
from iclsim.linear import oracle
from iclsim.linear.sweep import exact_eval

S, N, I, U = V.SUPPORTED, V.NOT_SUPPORTED, V.INCONCLUSIVE, V.UNRESOLVED


def _part(decision, kind="best_scale", role=None):
    detail = {"kind": kind}
    if role:
        detail["role"] = role
    return V.Verdict("claim", decision, 0.0, method="m", detail=detail)


@pytest.mark.parametrize("decisions, word, code, counts", [
    ([S, S, S], "AGREES", 0, "3/3 parts SUPPORTED"),
    ([S, N, S], "DIFFERS", 1, "1 NOT SUPPORTED"),
    ([N, U, I], "DIFFERS", 1, "1 NOT SUPPORTED, 1 UNRESOLVED, 1 INCONCLUSIVE"),
    ([S, U, S], "UNDECIDED", 0, "2/3 parts SUPPORTED, 1 UNRESOLVED"),
    ([S, I], "UNDECIDED", 0, "1/2 parts SUPPORTED, 1 INCONCLUSIVE"),
    ([U, U], "UNDECIDED", 0, "0/2 parts SUPPORTED, 2 UNRESOLVED"),
    ([], "NONE", 0, "NO VERDICT"),
])
def test_fold_table(decisions, word, code, counts):
    parts = [_part(d) for d in decisions]
    # a failing cross-check never changes the verdict line (it is printed separately)
    parts.append(_part(N, role="cross-check"))
    out = V.fold(parts)
    assert (out.word, out.exit_code) == (word, code)
    assert counts in out.line
    assert V.check_exit_code(parts) == code
    assert out.line.startswith({"AGREES": "AGREES with", "DIFFERS": "DIFFERS from",
                                "UNDECIDED": "UNDECIDED", "NONE": "NO VERDICT"}[word])


def test_fold_counts_each_kind():
    parts = [_part(S, "optimum"), _part(S, "optimum"), _part(U, "best_scale"),
             _part(S, "best_scale")]
    line = V.fold(parts).line
    assert "optimum 2/2;" in line and "best_scale 1/2 (1 UNRESOLVED)" in line


def test_bad_decision_rejected():
    with pytest.raises(ValueError, match="decision"):
        V.Verdict("c", "MAYBE", 0.0)


def test_parts_round_trip_through_netcdf(tmp_path):
    parts = [V.Verdict("a", S, 1.5, None, None, "exact", {"kind": "x", "gap": 0.25}),
             V.Verdict("b", N, 4.2, (-3.5, 3.5), 0.99, "bonferroni", {"role": "cross-check"})]
    ds = xr.Dataset(V.to_vars(parts))
    ds.to_netcdf(tmp_path / "r.nc", engine="h5netcdf")
    back = V.from_dataset(xr.load_dataset(tmp_path / "r.nc", engine="h5netcdf"))
    assert back == parts
    assert V.from_dataset(xr.Dataset()) is None


# -- best scale: the new user's spectrum, theory values from the oracle ------------------

NEW_USER = np.diag([3.0, 1.5, 0.8, 0.4, 0.2])


def _ladder(s2, ranks):
    return oracle.optimal_risks(NEW_USER, 20, label_noise=s2)[np.asarray(ranks)]


def test_best_rank_close_call_is_unresolved_not_agreement():
    """σ² = 10: ranks 5 and 4 differ by 0.00078 in theory; runs 0.001 off make it a coin flip
    (UNRESOLVED whether or not the simulated best matches), runs 1e-6 off resolve it."""
    ranks = np.arange(6)
    theory = _ladder(10.0, ranks)
    assert np.argmin(theory) == 5 and 0.0007 < np.sort(theory)[1] - theory.min() < 0.0009
    for shift in (+0.001, -0.001):  # rank 5 worse or better than theory: either best
        runs = np.stack([theory, theory]).T.copy()
        runs[5] += shift
        part = V.best_scale_part("at σ²=10", ranks, theory, runs, scale_name="rank", method="x")
        assert part.decision == U
        assert part.detail["gap"] == pytest.approx(np.sort(theory)[1] - theory.min())
        assert part.detail["tolerance"] == pytest.approx(0.001)
        assert "0.000784" in part.detail["resolve"]
    runs = np.stack([theory + 1e-6, theory - 1e-6]).T
    part = V.best_scale_part("at σ²=10", ranks, theory, runs, scale_name="rank", method="x")
    assert (part.decision, part.detail["sim_best"]) == (S, 5)


def test_best_rank_resolved_mismatch_is_not_supported():
    """σ² = 20 (r* = 3, runner-up 2, gap 0.067): a far-off rank 5 run that beats r* while r*
    and the runner-up are on their optima is a resolved disagreement."""
    ranks = np.arange(6)
    theory = _ladder(20.0, ranks)
    runs = np.stack([theory, theory]).T.copy()
    runs[5] = theory[3] - 0.5
    part = V.best_scale_part("at σ²=20", ranks, theory, runs, scale_name="rank", method="x")
    assert (part.detail["theory_best"], part.detail["runner_up"]) == (3, 2)
    assert (part.decision, part.detail["sim_best"]) == (N, 5)


def test_one_trained_rank_is_judged_over_the_trained_ranks():
    """Only rank 3 trained: at σ² = 0 the theory's best over 0..5 is 5, over {0, 3} it is 3."""
    theory_all = _ladder(0.0, np.arange(6))
    assert np.argmin(theory_all) == 5
    scales = np.array([0, 3])
    runs = np.stack([theory_all[scales]] * 2).T
    part = V.best_scale_part("at σ²=0", scales, theory_all[scales], runs, scale_name="rank",
                             method="x")
    assert (part.decision, part.detail["theory_best"]) == (S, 3)


def test_diverged_runner_up_is_unresolved():
    theory = _ladder(20.0, np.arange(6))
    runs = np.stack([theory, theory]).T.copy()
    runs[2] = np.nan  # every seed of the runner-up diverged: nothing measures it
    part = V.best_scale_part("x", np.arange(6), theory, runs, scale_name="rank", method="x")
    assert part.decision == U


# -- optimum part -------------------------------------------------------------------------

@pytest.mark.parametrize("excess, decision", [
    ([0.0, 0.099], S), ([0.0, 0.101], I), ([0.2, 0.3], N), ([0.01, np.nan], I),
    ([np.nan, np.nan], N), ([-1e-9, 0.05], S),
])
def test_optimum_part(excess, decision):
    part = V.optimum_part("c", np.asarray(excess), 1.0, method="exact")
    assert part.decision == decision
    assert part.detail["reached"] == sum(1 for e in excess if e <= 0.1)


def test_optimum_part_monte_carlo_lowers_by_three_se():
    assert V.optimum_part("c", np.array([0.2]), 1.0, method="mc", se=np.array([0.04])
                          ).decision == S
    assert V.optimum_part("c", np.array([0.2]), 1.0, method="mc", se=np.array([0.03])
                          ).decision == N


# -- cross-check: Bonferroni ---------------------------------------------------------------

def test_cross_check_bonferroni_critical_value_and_power():
    n = 40
    zcrit = stats.norm.ppf(1 - 0.01 / (2 * n))
    exact, se = np.ones(n), np.full(n, 0.1)
    ok = V.cross_check_part(exact + 0.1 * (zcrit - 1e-6), exact, se)
    assert ok.decision == S and ok.detail["z_crit"] == pytest.approx(zcrit, rel=1e-9)
    assert ok.interval == pytest.approx((-zcrit, zcrit)) and ok.level == pytest.approx(0.99)
    bad = V.cross_check_part(exact + np.r_[0.1 * (zcrit + 1e-3), np.zeros(n - 1)], exact, se)
    assert bad.decision == N and bad.detail["within"] == n - 1
    # family-wise size: under H0 (independent z) the rule rejects in about 1 % of families
    rng = np.random.default_rng(0)
    rejects = sum(V.cross_check_part(exact + 0.1 * rng.standard_normal(n), exact, se).decision
                  == N for _ in range(2000))
    assert rejects / 2000 <= 0.01 + 3 * np.sqrt(0.01 * 0.99 / 2000)


# -- exact evaluation of a trained Γ with input noise vs an independent Monte Carlo --------

def _monte_carlo_risk(gamma, cov, n, s2, sx2, prompts, seed):
    """Plain numpy: w ~ N(0, I), x ~ N(0, Λ), context (x + ξ, wᵀx + ε), clean query."""
    rng = np.random.default_rng(seed)
    d = cov.shape[0]
    chol = np.linalg.cholesky(cov)
    w = rng.standard_normal((prompts, d))
    x = rng.standard_normal((prompts, n + 1, d)) @ chol.T
    y = np.einsum("pnd,pd->pn", x, w)
    xc = x[:, :n] + np.sqrt(sx2) * rng.standard_normal((prompts, n, d))
    yc = y[:, :n] + np.sqrt(s2) * rng.standard_normal((prompts, n))
    h = np.einsum("pn,pnd->pd", yc, xc) / n
    err = (np.einsum("pd,de,pe->p", x[:, n], gamma, h) - y[:, n]) ** 2
    return err.mean(), err.std(ddof=1) / np.sqrt(prompts)


def test_exact_eval_matches_monte_carlo_and_catches_a_wrong_input_noise_term():
    """exact_eval (what assess stores as eval_risk) at (σ², σ_x²) = (0.5, 2) equals a numpy
    Monte Carlo of 200,000 prompts within 4 SE; the same formula with its input-noise term
    dropped or doubled is more than 10 SE off (the power of this check)."""
    rng = np.random.default_rng(7)
    d, n = 3, 4
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    cov = (q * np.array([2.0, 1.0, 0.5])) @ q.T
    gamma = 0.3 * rng.standard_normal((d, d))  # not symmetric, not optimal
    s2, sx2 = 0.5, 2.0
    exact = exact_eval(gamma[None], cov, n, [0.0, s2], [0.0, sx2])[0]
    mc, se = _monte_carlo_risk(gamma, cov, n, s2, sx2, 200_000, seed=1)
    assert abs(exact[1] - mc) <= 4 * se, (exact[1], mc, se)
    # the input-noise term written out here: ((tr Λ + σ²)/N) σ_x² tr(ΓᵀΛΓ)
    term = (np.trace(cov) + s2) / n * sx2 * np.trace(gamma.T @ cov @ gamma)
    for wrong in (exact[1] - term, exact[1] + term):
        assert abs(wrong - mc) > 10 * se, (wrong, mc, se)
    clean_mc, clean_se = _monte_carlo_risk(gamma, cov, n, 0.0, 0.0, 200_000, seed=2)
    assert abs(exact[0] - clean_mc) <= 4 * clean_se
