"""The sufficient-statistic samplers against the token sampler.

``iclsim.linear.data.sample_statistic`` draws h = (1/N) Σ ỹ_i x̃_i and
``sample_gram`` the context Gram Σ z_i z_iᵀ directly; they must have the
distribution of the same quantities computed from ``sample_prompts``.  The
checks are statistical, each with a 4-SE two-sample criterion, and each has a
power check: a deliberately wrong sampler (wrong regression coefficient β,
missing √S, wrong Bartlett degrees of freedom) is run through the same criterion
at the same sample size and must be caught.

Quantities compared, per prompt (reduced LSA at a random Γ built with
``iclsim.linear.model``): the loss ℓ = (ŷ − y_q)², the directional derivative δ
of ℓ along a random direction of the trained weights (the gradient, contracted),
and their squares (the second moments, i.e. the SGD noise).  E[ℓ] is also
compared with the exact ``iclsim.linear.oracle.population_risk`` and E[δ] with
the exact directional derivative of ``iclsim.linear.model.reduced_population_risk``.

The random draws themselves (one Threefry call per sampler call, converted as
``jax.random`` does) are checked bit for bit against JAX's own stream, for a
partition of the words among the parts, and against the N(0, 1) / U(0, 1) laws
with independence of the parts (with power checks: wrong conversions, reused words).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from iclsim.linear import data, oracle

# Statistical identities between samplers at float64 resolution; the float32 path has its own
# test below (test_float32_statistic_matches_exact_risk, x64 off inside).
pytestmark = pytest.mark.float64
from iclsim.linear import model as lsa

from conftest import spectra, random_rotation

N_SE = 4.0
PROMPTS = 1 << 14  # per sampler and example


# ----------------------------------------------------------------------------- helpers


def z_score(a, b=None, exact=None):
    """|mean(a) − mean(b)| (or − exact) in units of its standard error."""
    a = np.asarray(a, float)
    var = np.var(a, ddof=1) / a.size
    diff = np.mean(a)
    if b is not None:
        b = np.asarray(b, float)
        var = var + np.var(b, ddof=1) / b.size
        diff = diff - np.mean(b)
    if exact is not None:
        diff = diff - exact
    if var == 0.0:
        return 0.0 if diff == 0.0 else np.inf
    return abs(diff) / np.sqrt(var)


def problem(lam, seed):
    """(Λ, L, reduced params at a random Γ, a random unit direction of the weights).

    Γ = A Bᵀ with B = I and A = Γ* + a random perturbation of relative size ~0.3, Γ* the
    unrestricted optimum at N = 8: ŷ then carries much of y_q, so the loss and its gradient
    are sensitive to the distribution of h (at a small Γ they are dominated by y_q²).
    """
    d = len(lam)
    u = random_rotation(seed, d)
    cov = (u * lam) @ u.T
    cov = 0.5 * (cov + cov.T)
    chol = np.linalg.cholesky(cov)
    key = jax.random.PRNGKey(seed)
    k_init, k_dir = jax.random.split(key)
    params = lsa.init(k_init, lsa.LSAConfig(d, d, "reduced"), rank=d, scale=1.0)
    target = oracle.optimal_gamma(cov, 8, d)
    perturb = 0.3 * np.linalg.norm(target) / np.sqrt(d) * params["weights"]["a"]
    params["weights"]["a"] = jnp.asarray(target) + perturb / np.sqrt(d)
    params["weights"]["b"] = jnp.eye(d)
    leaves, tree = jax.tree_util.tree_flatten(params["weights"])
    dirs = [jax.random.normal(k, leaf.shape, leaf.dtype)
            for k, leaf in zip(jax.random.split(k_dir, len(leaves)), leaves)]
    norm = jnp.sqrt(sum(jnp.sum(v * v) for v in dirs))
    direction = jax.tree_util.tree_unflatten(tree, [v / norm for v in dirs])
    return cov, chol, params, direction


def per_prompt(params, direction, prompts):
    """(ℓ, δ): per-prompt loss and its derivative along ``direction`` of the weights."""

    def losses(weights):
        p = {**params, "weights": weights}
        return (lsa.apply(p, prompts) - prompts.y_query) ** 2

    return jax.jvp(losses, (params["weights"],), (direction,))


@functools.partial(jax.jit, static_argnames=("n", "batch", "sampler"))
def draw(key, chol, params, direction, s2, sx2, *, n, batch, sampler):
    """Per-prompt (ℓ, δ) from one sampler ("tokens", "statistic" or a wrong one)."""
    if sampler == "tokens":
        prompts = data.sample_prompts(key, None, n, batch, label_noise=s2, input_noise=sx2,
                                      factor=chol)
    elif sampler == "statistic":
        prompts = data.statistic_prompts(
            data.sample_statistic(key, chol, n, batch, label_noise=s2, input_noise=sx2))
    else:
        prompts = data.statistic_prompts(
            reference_statistic(key, chol, n, batch, s2, sx2, bug=sampler))
    return per_prompt(params, direction, prompts)


def reference_statistic(key, chol, n, batch, s2, sx2, *, bug):
    """The statistic sampler written from the derivation, with a switchable bug.

    bug = "none": correct (so that a caught bug is the bug, not this rewrite);
    "beta": the regression coefficient of u on ỹ uses Var(wᵀx) instead of
    Var(ỹ) = wᵀΛw + σ² (ignores the label noise); "sqrt_s": the residual term
    lacks its √S (scaled as one example, not N); "fixed_s": S = N·Var(ỹ)
    deterministic instead of Var(ỹ)·χ²_N.
    """
    d = chol.shape[0]
    k_w, k_q, k_chi, k_g = jax.random.split(key, 4)
    w = jax.random.normal(k_w, (batch, d), chol.dtype)
    x_q = jax.random.normal(k_q, (batch, d), chol.dtype) @ chol.T
    cov = chol @ chol.T
    cov_x = cov + sx2 * jnp.eye(d, dtype=chol.dtype)
    m = jnp.linalg.cholesky(cov_x)
    c = jnp.linalg.solve(m, cov @ w.T).T  # (B, d): M⁻¹Λw
    resid = cov - cov @ jnp.linalg.solve(cov_x, cov)  # Var(x | x̃)
    s_sq = s2 + jnp.einsum("bi,ij,bj->b", w, resid, w)
    v = jnp.sum(c * c, -1) + s_sq
    chi = jax.random.chisquare(k_chi, n, (batch,), chol.dtype)
    if bug == "fixed_s":
        chi = jnp.full_like(chi, n)
    big_s = v * chi
    beta_den = jnp.sum(c * c, -1) if bug == "beta" else v
    g = jax.random.normal(k_g, (batch, d), chol.dtype)
    # Residual covariance I − ccᵀ/v through its symmetric square root (eigh: independent
    # of the closed form used by the product).
    cov_r = jnp.eye(d) - c[:, :, None] * c[:, None, :] / v[:, None, None]
    evals, evecs = jnp.linalg.eigh(cov_r)
    root = (evecs * jnp.sqrt(jnp.clip(evals, 0.0))[:, None, :]) @ jnp.swapaxes(evecs, 1, 2)
    scale = jnp.ones_like(big_s) if bug == "sqrt_s" else jnp.sqrt(big_s)
    sum_yu = c * (big_s / beta_den)[:, None] + scale[:, None] * jnp.einsum("bij,bj->bi", root, g)
    h = sum_yu @ m.T / n
    return data.ContextStatistic(h=h, x_query=x_q, y_query=jnp.sum(x_q * w, -1), w=w)


def failures(ell_a, delta_a, ell_b, delta_b):
    """Names of the two-sample 4-SE checks that fail (mean and second moment of ℓ and δ)."""
    checks = {
        "loss mean": z_score(ell_a, ell_b),
        "loss second moment": z_score(ell_a**2, ell_b**2),
        "gradient mean": z_score(delta_a, delta_b),
        "gradient second moment": z_score(delta_a**2, delta_b**2),
    }
    return {k: v for k, v in checks.items() if not v <= N_SE}


def exact_loss_and_derivative(params, direction, cov, n, s2, sx2):
    def risk(weights):
        gamma = lsa.effective_gamma({**params, "weights": weights})
        return lsa.reduced_population_risk(gamma, jnp.asarray(cov), n, s2, sx2)

    value, deriv = jax.jvp(risk, (params["weights"],), (direction,))
    gamma = np.asarray(lsa.effective_gamma(params), float)
    exact = oracle.population_risk(gamma, cov, n, label_noise=s2, input_noise=sx2)
    np.testing.assert_allclose(float(value), exact, rtol=1e-10)
    return exact, float(deriv)


noise_levels = st.one_of(st.just(0.0), st.sampled_from([0.05, 0.5, 2.0]))


# ------------------------------------------------------------------- reduced statistic


@functools.partial(jax.jit, static_argnames=("n", "batch"))
def draw_both(key, chol, params, direction, s2, sx2, *, n, batch):
    """(ℓ, δ) of the token sampler and of the statistic sampler (one compile per shape)."""
    key_t, key_s = jax.random.split(key)
    args = (chol, params, direction, s2, sx2)
    return (draw(key_t, *args, n=n, batch=batch, sampler="tokens"),
            draw(key_s, *args, n=n, batch=batch, sampler="statistic"))


def check_statistic_against_tokens(lam, n, s2, sx2, seed):
    cov, chol, params, direction = problem(lam, seed)
    (ell_t, delta_t), (ell_s, delta_s) = draw_both(
        jax.random.PRNGKey(seed + 1), jnp.asarray(chol), params, direction, jnp.asarray(s2),
        jnp.asarray(sx2), n=n, batch=PROMPTS)
    assert not failures(ell_s, delta_s, ell_t, delta_t)
    risk, deriv = exact_loss_and_derivative(params, direction, cov, n, s2, sx2)
    for ell, delta in ((ell_s, delta_s), (ell_t, delta_t)):
        assert z_score(ell, exact=risk) <= N_SE
        assert z_score(delta, exact=deriv) <= N_SE


#: Default run: the explicit corners only (N = 1, N < d + 1, a large N, each noise on and off;
#: each (d, N) costs a compile), fixed so that the 4-SE criterion cannot fail by chance from one
#: run to the next; the slow variants draw fresh examples from the loaded hypothesis profile,
#: N up to 1024.
FEW = settings(phases=[Phase.explicit])


@FEW
@example(lam=np.array([3.0, 1.5, 0.7, 0.3, 0.1]), n=1, s2=0.5, sx2=0.05, seed=1)
@example(lam=np.array([2.0, 1.0, 0.5]), n=2, s2=0.0, sx2=0.0, seed=2)
@example(lam=np.array([1.5, 0.6, 0.2, 0.1]), n=100, s2=2.0, sx2=0.05, seed=3)
@example(lam=np.array([2.5, 0.4]), n=9, s2=0.0, sx2=0.5, seed=4)
@given(lam=spectra(min_d=1, max_d=5), n=st.sampled_from([1, 2, 5, 9, 100]), s2=noise_levels,
       sx2=noise_levels, seed=st.integers(0, 2**16))
def test_statistic_matches_tokens_loss_and_gradient(lam, n, s2, sx2, seed):
    """Loss and gradient of the reduced LSA: statistic ≡ tokens in mean and second moment,
    and E[loss], E[gradient] equal the exact population risk and its derivative (4 SE)."""
    check_statistic_against_tokens(lam, n, s2, sx2, seed)


@pytest.mark.slow
@given(lam=spectra(min_d=1, max_d=5), n=st.sampled_from([1, 2, 3, 5, 9, 64, 256, 1024]),
       s2=noise_levels, sx2=noise_levels, seed=st.integers(0, 2**16))
def test_statistic_matches_tokens_loss_and_gradient_many(lam, n, s2, sx2, seed):
    """As above over the profile's number of examples and longer contexts."""
    check_statistic_against_tokens(lam, n, s2, sx2, seed)


POWER_CASE = dict(lam=np.array([2.0, 1.0, 0.4]), seed=3, n=8, s2=2.0, sx2=0.3)


@pytest.mark.parametrize("bug, caught_by", [
    ("none", set()),
    ("beta", {"loss mean"}),
    ("sqrt_s", {"loss mean", "gradient second moment"}),
    ("fixed_s", {"loss mean"}),
])
def test_power_wrong_statistic_sampler_is_caught(bug, caught_by):
    """The criterion of the equivalence test, at its sample size, catches each bug (and the
    bug-free rewrite passes, so the catch is the bug's)."""
    c = POWER_CASE
    cov, chol, params, direction = problem(c["lam"], c["seed"])
    key_t, key_s = jax.random.split(jax.random.PRNGKey(11))
    args = (params, direction, jnp.asarray(c["s2"]), jnp.asarray(c["sx2"]))
    ell_t, delta_t = draw(key_t, jnp.asarray(chol), *args, n=c["n"], batch=PROMPTS,
                          sampler="tokens")
    ell_b, delta_b = draw(key_s, jnp.asarray(chol), *args, n=c["n"], batch=PROMPTS, sampler=bug)
    failed = failures(ell_b, delta_b, ell_t, delta_t)
    assert caught_by <= set(failed), failed
    if bug == "none":
        assert not failed


def test_float32_statistic_matches_exact_risk():
    """In float32 (x64 off) the statistic sampler's dtype is float32 and E[loss] and E[δ]
    still equal the exact values (4 SE)."""
    lam, n, s2, sx2 = np.array([3.0, 1.0, 0.5, 0.1]), 20, 0.3, 0.2
    cov, chol, params64, direction64 = problem(lam, 5)
    risk, deriv = exact_loss_and_derivative(params64, direction64, cov, n, s2, sx2)
    with jax.enable_x64(False):
        to32 = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), t)  # noqa
        params, direction = to32(params64), to32(direction64)

        @jax.jit
        def run(key, chol):
            stat = data.sample_statistic(key, chol, n, PROMPTS, label_noise=s2, input_noise=sx2)
            return stat, per_prompt(params, direction, data.statistic_prompts(stat))

        stat, (ell, delta) = run(jax.random.PRNGKey(0), jnp.asarray(chol, jnp.float32))
        assert all(leaf.dtype == jnp.float32 for leaf in stat)
        assert ell.dtype == jnp.float32 and delta.dtype == jnp.float32
    assert z_score(ell, exact=risk) <= N_SE
    assert z_score(delta, exact=deriv) <= N_SE


# ------------------------------------------------------------------------------- Gram


@functools.partial(jax.jit, static_argnames=("n", "batch", "sampler"))
def draw_gram(key, chol, s2, sx2, *, n, batch, sampler):
    if sampler == "tokens":
        prompts = data.sample_prompts(key, None, n, batch, label_noise=s2, input_noise=sx2,
                                      factor=chol)
        return data.context_gram(prompts)
    return data.sample_gram(key, chol, n, batch, label_noise=s2, input_noise=sx2)


def full_prediction(params, gram_stat, n):
    """ŷ of the full LSA from the Gram: v · (G + e_q e_qᵀ) W^{KQ} e_q / N."""
    w = params["weights"]
    kq = (w["a"] * params["rank_mask"]) @ w["b"].T
    e_q = jnp.concatenate([gram_stat.x_query, jnp.zeros_like(gram_stat.x_query[:, :1])], -1)
    k = e_q @ kq.T
    mixed = jnp.einsum("bij,bj->bi", gram_stat.gram, k) + e_q * jnp.sum(e_q * k, -1,
                                                                        keepdims=True)
    return mixed @ w["w_pv"][-1] / n


def gram_features(params, gram_stat, n):
    """Per-prompt quantities compared: a few Gram entries and the full-LSA loss."""
    g = gram_stat.gram
    d = g.shape[-1] - 1
    loss = (full_prediction(params, gram_stat, n) - gram_stat.y_query) ** 2
    feats = {"G[0,0]": g[:, 0, 0], "G[0,y]": g[:, 0, d], "G[y,y]": g[:, d, d],
             "full loss": loss}
    if d > 1:
        feats["G[0,1]"] = g[:, 0, 1]
        feats["G[1,y]"] = g[:, 1, d]
    return feats


def gram_failures(feats_a, feats_b):
    out = {}
    for name in feats_a:
        for label, f in (("mean", lambda v: v), ("second moment", lambda v: v**2)):
            z = z_score(f(np.asarray(feats_a[name])), f(np.asarray(feats_b[name])))
            if not z <= N_SE:
                out[f"{name} {label}"] = z
    return out


def full_params(d, seed):
    return lsa.init(jax.random.PRNGKey(seed), lsa.LSAConfig(d, d + 1, "full"), rank=d + 1,
                    scale=0.4 / np.sqrt(d + 1))


@functools.partial(jax.jit, static_argnames=("n", "batch"))
def draw_gram_both(key, chol, params, s2, sx2, *, n, batch):
    key_t, key_s = jax.random.split(key)
    return (gram_features(params, draw_gram(key_t, chol, s2, sx2, n=n, batch=batch,
                                            sampler="tokens"), n),
            gram_features(params, draw_gram(key_s, chol, s2, sx2, n=n, batch=batch,
                                            sampler="statistic"), n))


def check_gram_against_tokens(lam, n, s2, sx2, seed):
    _, chol, _, _ = problem(lam, seed)
    params = full_params(len(lam), seed)
    tok, sta = draw_gram_both(jax.random.PRNGKey(seed + 2), jnp.asarray(chol), params,
                              jnp.asarray(s2), jnp.asarray(sx2), n=n, batch=PROMPTS)
    assert not gram_failures(sta, tok)


@FEW
@example(lam=np.array([2.0, 1.0, 0.5]), n=2, s2=0.5, sx2=0.2, seed=1)
@example(lam=np.array([3.0, 1.0, 0.3, 0.1]), n=100, s2=0.0, sx2=0.0, seed=2)
@example(lam=np.array([1.2]), n=1, s2=0.05, sx2=0.0, seed=3)
@example(lam=np.array([2.0, 0.7, 0.2]), n=6, s2=2.0, sx2=0.5, seed=4)
@given(lam=spectra(min_d=1, max_d=4), n=st.sampled_from([1, 2, 3, 6, 100]), s2=noise_levels,
       sx2=noise_levels, seed=st.integers(0, 2**16))
def test_gram_matches_tokens(lam, n, s2, sx2, seed):
    """Gram entries (mean, second moment) and the full-LSA loss: Bartlett ≡ tokens (4 SE),
    including N < d + 1 (singular Wishart) and the noiseless singular Gram."""
    check_gram_against_tokens(lam, n, s2, sx2, seed)


@pytest.mark.slow
@given(lam=spectra(min_d=1, max_d=5), n=st.sampled_from([1, 2, 3, 4, 6, 9, 64, 512]),
       s2=noise_levels, sx2=noise_levels, seed=st.integers(0, 2**16))
def test_gram_matches_tokens_many(lam, n, s2, sx2, seed):
    """As above over the profile's number of examples and longer contexts."""
    check_gram_against_tokens(lam, n, s2, sx2, seed)


def test_power_wrong_gram_is_caught():
    """A Bartlett factor with every diagonal χ²_N (instead of χ²_{N−k}) is caught by the same
    criterion at the same sample size; the correct sampler passes on the same keys."""
    lam, n, d = np.array([2.0, 1.0, 0.5]), 3, 3
    _, chol, _, _ = problem(lam, 7)
    params = full_params(d, 7)
    key_t, key_s = jax.random.split(jax.random.PRNGKey(9))
    chol = jnp.asarray(chol)
    tok = draw_gram(key_t, chol, 0.2, 0.1, n=n, batch=PROMPTS, sampler="tokens")
    good = data.sample_gram(key_s, chol, n, PROMPTS, label_noise=0.2, input_noise=0.1)
    assert not gram_failures(gram_features(params, good, n), gram_features(params, tok, n))
    chi_square = data._chi_square
    wrong_dfs = lambda key, dfs, batch, dtype, draws=None: chi_square(  # noqa: E731
        key, np.full_like(np.asarray(dfs), n), batch, dtype)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "_chi_square", wrong_dfs)
        bad = data.sample_gram(key_s, chol, n, PROMPTS, label_noise=0.2, input_noise=0.1)
    failed = gram_failures(gram_features(params, bad, n), gram_features(params, tok, n))
    assert {"G[y,y] mean", "G[y,y] second moment"} <= set(failed), failed


# ------------------------------------------------------------------------- the χ² draw

CHI_DRAWS = 1 << 20
CHI_BINS = 100
CHI_P_MIN = 1e-4


def chi_square_gof(values, df):
    """p-value of Pearson's test of ``values`` against χ²_df on CHI_BINS equiprobable bins."""
    from scipy import stats

    edges = stats.chi2(df).ppf(np.linspace(0.0, 1.0, CHI_BINS + 1))
    counts = np.histogram(np.asarray(values, float), edges)[0]
    assert counts.sum() == np.size(values)
    return stats.chisquare(counts).pvalue


@pytest.mark.parametrize("n", [9, 20, 100, 1024])
@pytest.mark.parametrize("candidates", [data._GAMMA_CANDIDATES, 1])
def test_chi_square_draw_is_exact(n, candidates):
    """The χ²_N of the statistic sampler (2·Gamma(N/2) by vectorised Marsaglia–Tsang, N > 8)
    has the χ²_N distribution: Pearson's test on 100 equiprobable bins, 2^20 draws.  With one
    candidate per value the redraw loop runs on most calls (rejection rate 0.3–0.7 %), so
    its path is tested too."""
    key = jax.random.PRNGKey(n)
    if candidates == data._GAMMA_CANDIDATES:
        values = data._chi_square(key, [n], CHI_DRAWS, jnp.float64)[:, 0]
    else:
        values = 2.0 * data._gamma(key, 0.5 * n, (CHI_DRAWS,), jnp.float64, candidates=1)
    assert np.all(np.asarray(values) > 0)
    assert chi_square_gof(values, n) > CHI_P_MIN


def test_power_wrong_chi_square_draw_is_caught():
    """The same test at the same size catches the Marsaglia–Tsang proposal taken without its
    rejection step (wrong by 0.7 % of the mass at N = 9) and a χ² with one degree of freedom
    too many; the correct draw passes on the same keys."""
    n, key = 9, jax.random.PRNGKey(11)
    d = 0.5 * n - 1.0 / 3.0
    x = jax.random.normal(key, (CHI_DRAWS,), jnp.float64)
    no_rejection = 2.0 * d * (1.0 + x / np.sqrt(9.0 * d)) ** 3
    assert chi_square_gof(no_rejection, n) < CHI_P_MIN
    assert chi_square_gof(data._chi_square(key, [n + 1], CHI_DRAWS, jnp.float64)[:, 0], n) \
        < CHI_P_MIN
    assert chi_square_gof(data._chi_square(key, [n], CHI_DRAWS, jnp.float64)[:, 0], n) \
        > CHI_P_MIN


# ------------------------------------------------------------------ the random draws
#
# The samplers draw every normal and uniform of one call from one key with one
# ``threefry_2x32`` call (both outputs of each hash kept) and convert the words as
# ``jax.random.normal`` / ``uniform`` do.  Checked three ways: bit for bit against JAX's
# own stream (``jax_threefry_partitionable=False`` hashes counts in pairs the same way);
# the parts of a call partition the words (no word used twice); and, against an
# independent reference (the N(0, 1) and U(0, 1) laws, scipy), goodness of fit, moments
# and independence of the parts the samplers actually draw — with a power check that
# wrong conversions and reused words are caught by the same criterion at the same size.

DRAW_BATCH = 1 << 14  # × d = 8: 131,072 values per part


def test_draws_are_jax_own_stream_bit_for_bit():
    """``_random_words`` (under JAX's default flags) = ``jax.random.bits`` under
    ``jax_threefry_partitionable=False`` (the paired-output counter-mode Threefry stream),
    and ``_standard_draws`` = ``jax.random.normal`` / ``uniform`` there, bit for bit: float32
    and float64 (64-bit words from both outputs of one hash), an odd number of 32-bit words,
    jitted and vmapped over keys; the rbg implementation falls back to ``jax.random.bits``."""
    # float32: an odd word count (threefry_2x32 pads it); float64: 2n words, even.
    cases = [(jnp.float32, jnp.uint32, 1001), (jnp.float64, jnp.uint64, 500)]

    def ours(k):
        out = []
        for dtype, _, n in cases:
            words = data._random_words(k, n, dtype)
            out.append((words, data._normal_from_words(words, dtype),
                        data._uniform_from_words(words, dtype)))
        return out, [data._standard_draws(k, {"z": ("normal", (n,))}, dtype)["z"]
                     for dtype, _, n in cases]

    def jax_own(k):
        return [(jax.random.bits(k, (n,), uint), jax.random.normal(k, (n,), dtype),
                 jax.random.uniform(k, (n,), dtype)) for dtype, uint, n in cases], \
            [jax.random.normal(k, (n,), dtype) for dtype, _, n in cases]

    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    assert jax.config.jax_threefry_partitionable  # the default: jax.random XORs the outputs
    got = jax.jit(jax.vmap(ours))(keys)
    with jax.threefry_partitionable(False):
        want = jax.jit(jax.vmap(jax_own))(keys)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    key = jax.random.key(1, impl="rbg")
    np.testing.assert_array_equal(data._random_words(key, 10, jnp.float32),
                                  jax.random.bits(key, (10,), jnp.uint32))


def spy_draws(monkeypatch, call):
    """The dict of draws of the first ``_standard_draws`` call made by ``call()`` (the sampler's
    one draw of everything; later calls are the χ² draw's rare redraws)."""
    real = data._standard_draws

    def run():
        seen = []

        def spy(key, parts, dtype):
            out = real(key, parts, dtype)
            seen.append(out)
            return out

        with monkeypatch.context() as mp:
            mp.setattr(data, "_standard_draws", spy)
            call()
        return seen[0]

    return jax.jit(run)()  # one compile; the sampler's own outputs are dead code


#: Sampler calls whose draws cover every layout: the χ² by normals (N <= 8) or by gamma
#: candidates, the Gram with N < d + 1 and with both kinds of χ² columns.
SAMPLER_CALLS = {
    "statistic, χ² by normals": (data.sample_statistic, 5),
    "statistic, χ² by gamma": (data.sample_statistic, 20),
    "gram, N < d + 1": (data.sample_gram, 3),
    "gram, mixed χ²": (data.sample_gram, 11),
}


@pytest.mark.parametrize("call", SAMPLER_CALLS, ids=list(SAMPLER_CALLS))
def test_draw_parts_partition_the_words(monkeypatch, call):
    """Every part of a sampler call takes its own words: with word i made to encode i (its
    uniform is exactly i·2^-23, used for normals too), the values of all parts, pooled, are
    each index 0..m−1 exactly once (no word reused, none skipped)."""
    def index_words(key, count, dtype):
        return lax.shift_left(lax.iota(jnp.uint32, count), jnp.uint32(9))

    monkeypatch.setattr(data, "_random_words", index_words)
    monkeypatch.setattr(data, "_normal_from_words", data._uniform_from_words)
    sampler, n = SAMPLER_CALLS[call]
    with jax.enable_x64(False):
        draws = spy_draws(monkeypatch, lambda: sampler(jax.random.PRNGKey(0), np.eye(3), n, 16))
        assert all(v.dtype == jnp.float32 for v in draws.values())
    index = np.concatenate([np.asarray(v, np.float64).ravel() for v in draws.values()])
    index = np.sort(np.round(index * 2.0**23).astype(np.int64))
    np.testing.assert_array_equal(index, np.arange(index.size))


DRAW_P_MIN = 1e-4
LAWS = {"normal": ("norm", [0.0, 1.0, 0.0, 3.0], 0.0, 1.0),
        "uniform": ("uniform", [1 / 2, 1 / 3, 1 / 4, 1 / 5], 0.5, 1 / 12)}


def law_failures(draws):
    """Names of the failed checks of ``draws`` ({name: (kind, values)}) against the exact laws,
    each part on its own: Pearson's test on 100 equiprobable bins of N(0, 1) / U(0, 1)
    (p > 1e-4), moments 1-4 (E z^k = 0, 1, 0, 3; E u^k = 1/(k+1)) within 4 SE; and every two
    parts at the same index (over their common length; "a-b" with a < b): E[a b] = 0 and
    E[(a² − Var a)(b² − Var b)] = 0 of the centred values within 4 SE (independent parts)."""
    from scipy import stats

    failed = set()
    centred = {}
    for name, (kind, values) in draws.items():
        law, moments, mean, var = LAWS[kind]
        v = np.asarray(values, np.float64).ravel()
        if not np.all(np.isfinite(v)):
            failed.add(f"{name} not finite")
            continue
        counts = np.histogram(v, getattr(stats, law)().ppf(np.linspace(0.0, 1.0, 101)))[0]
        if counts.sum() != v.size or stats.chisquare(counts).pvalue <= DRAW_P_MIN:
            failed.add(f"{name} law")
        for k, exact in enumerate(moments, 1):
            if not z_score(v**k, exact=exact) <= N_SE:
                failed.add(f"{name} moment {k}")
        centred[name] = (v - mean, (v - mean) ** 2 - var)
    names = sorted(centred)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            size = min(centred[a][0].size, centred[b][0].size)
            for j, label in enumerate(("correlation", "square correlation")):
                if not z_score(centred[a][j][:size] * centred[b][j][:size], exact=0.0) <= N_SE:
                    failed.add(f"{a}-{b} {label}")
    return failed


def statistic_draws_by_kind(monkeypatch, dtype):
    """The draws of one ``sample_statistic`` call (2^14 prompts, d = 8, N = 20: w, query, g
    and the χ² draw's Marsaglia–Tsang normals and uniforms), as ``law_failures`` reads them."""
    chol = np.linalg.cholesky(np.diag([3.0, 2.0, 1.5, 1.0, 0.6, 0.4, 0.2, 0.1]))
    got = spy_draws(monkeypatch, lambda: data.sample_statistic(
        jax.random.PRNGKey(21), jnp.asarray(chol, dtype), 20, DRAW_BATCH, label_noise=0.1))
    assert set(got) == {"w", "query", "g", "gamma_x", "gamma_u"}
    assert all(v.dtype == dtype for v in got.values())
    return {name: ("uniform" if name == "gamma_u" else "normal", v) for name, v in got.items()}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_sampler_draws_have_the_normal_and_uniform_laws(monkeypatch, dtype):
    """The normals and uniforms of a statistic-sampler call (131,072 per part, 32,768 of each
    χ² kind) have the N(0, 1) / U(0, 1) laws and the parts are uncorrelated
    (``law_failures``), in float32 (the training dtype) and float64."""
    with jax.enable_x64(dtype == jnp.float64):
        draws = statistic_draws_by_kind(monkeypatch, dtype)
    assert not law_failures(draws)


_UNIFORM_FROM_WORDS = data._uniform_from_words


def _sign_bit_uniform(words, dtype, minval=0.0, maxval=1.0):
    """Wrong conversion: 24 bits including the sign — the 23 mantissa bits and the top bit as a
    sign, but the top bit is also the mantissa's first bit, so u ∈ (−1/2, 0] ∪ [1/2, 1)."""
    u = _UNIFORM_FROM_WORDS(words, dtype)
    top = lax.shift_right_logical(words, jnp.array(jnp.finfo(dtype).bits - 1, words.dtype))
    signed = jnp.where(top == 1, u, -u)
    return lax.max(lax.convert_element_type(minval, dtype),
                   (signed + 1.0) / 2.0 * (maxval - minval) + minval)


def _reused_words(real):
    def draws(key, parts, dtype):
        out = real(key, parts, dtype)
        if "w" in out:  # the query drawn from the task's words
            out["query"] = out["w"]
        if "gamma_u" in out:  # the acceptance uniform from the candidate's own word
            out["gamma_u"] = jax.scipy.stats.norm.cdf(out["gamma_x"]).astype(dtype)
        return out
    return draws


@pytest.mark.parametrize("bug, caught_by", [
    ("sign_bit", {"w law", "query law", "g law", "gamma_x law", "gamma_u law"}),
    ("half_normal", {"w law", "w moment 1", "query law", "g law"}),
    ("reused_words", {"query-w correlation", "gamma_u-gamma_x correlation"}),
])
def test_power_wrong_draws_are_caught(monkeypatch, bug, caught_by):
    """The criterion of the law test, at its size, catches a wrong conversion of the words (24
    bits including the sign; normals from u ∈ [0, 1) without the map to (−1, 1): half-normal)
    and reused words (the query = the task, the χ² acceptance uniform = Φ(its candidate))."""
    dtype = jnp.float32
    if bug == "sign_bit":
        monkeypatch.setattr(data, "_uniform_from_words", _sign_bit_uniform)
    elif bug == "half_normal":
        monkeypatch.setattr(data, "_normal_from_words", lambda words, dtype: (
            np.sqrt(2.0) * lax.erf_inv(_UNIFORM_FROM_WORDS(words, dtype))).astype(dtype))
    else:
        monkeypatch.setattr(data, "_standard_draws", _reused_words(data._standard_draws))
    with jax.enable_x64(False):
        draws = statistic_draws_by_kind(monkeypatch, dtype)
    failed = law_failures(draws)
    assert caught_by <= failed, failed


# -------------------------------------------------------------------- exact identities


def test_statistic_prompts_reproduce_the_model_and_the_gram_formula():
    """On the same token prompts: apply(statistic_prompts(context_statistic(p))) = apply(p)
    (reduced and block), and the Gram formula of the full LSA = apply(p) (full)."""
    d, n = 4, 7
    cov = np.diag([3.0, 1.0, 0.5, 0.2])
    prompts = data.sample_prompts(jax.random.PRNGKey(0), cov, n, 64, label_noise=0.3,
                                  input_noise=0.1)
    for kind in ("reduced", "block"):
        params = lsa.init(jax.random.PRNGKey(1), lsa.LSAConfig(d, d, kind), rank=3, scale=0.5)
        via_stat = lsa.apply(params, data.statistic_prompts(data.context_statistic(prompts)))
        np.testing.assert_allclose(via_stat, lsa.apply(params, prompts), rtol=1e-12, atol=1e-12)
    params = full_params(d, 2)
    np.testing.assert_allclose(full_prediction(params, data.context_gram(prompts), n),
                               lsa.apply(params, prompts), rtol=1e-11, atol=1e-12)


def test_noiseless_statistic_lives_in_the_span_and_gram_is_singular():
    """σ² = σ_x² = 0 (singular residual covariance, no Cholesky of it): the Gram has (−w, 1)
    in its kernel (ỹ = wᵀx̃), and at N = 1, h = ỹ₁x̃₁ so wᵀh = ỹ₁² ≥ 0; a zero task gives a
    zero statistic (the 0/0 is guarded)."""
    chol = jnp.asarray(np.linalg.cholesky(np.diag([2.0, 1.0, 0.25])))

    @jax.jit
    def draws(key):
        k1, k2, k3 = jax.random.split(key, 3)
        zero = np.zeros(3)
        return (data.sample_gram(k1, chol, 10, 256), data.sample_statistic(k2, chol, 1, 256),
                data.sample_statistic(k3, chol, 5, 8, task=zero),
                data.sample_gram(k3, chol, 5, 8, task=zero))

    gram, stat, zero, zero_g = draws(jax.random.PRNGKey(0))
    kernel = jnp.concatenate([-gram.w, jnp.ones_like(gram.w[:, :1])], -1)
    resid = jnp.einsum("bij,bj->bi", gram.gram, kernel)
    assert float(jnp.max(jnp.abs(resid))) < 1e-9 * float(jnp.max(jnp.abs(gram.gram)))
    assert float(jnp.min(jnp.sum(stat.w * stat.h, -1))) >= -1e-12
    assert np.all(np.asarray(zero.h) == 0.0)
    assert np.all(np.asarray(zero_g.gram[:, -1]) == 0.0) and np.all(np.isfinite(zero_g.gram))


def test_fixed_task_and_reproducibility():
    chol = jnp.asarray(np.linalg.cholesky(np.diag([2.0, 1.0])))
    task = np.array([0.5, -1.0])
    a = data.sample_statistic(jax.random.PRNGKey(0), chol, 4, 16, task=task)
    b = data.sample_statistic(jax.random.PRNGKey(0), chol, 4, 16, task=task)
    assert np.all(np.asarray(a.w) == task)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(a.y_query, a.x_query @ task)
    assert a.h.dtype == jnp.result_type(float)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_context=0), "n_context"),
    (dict(batch=0), "batch"),
    (dict(label_noise=-1.0), "label_noise"),
    (dict(input_noise=-0.1), "input_noise"),
    (dict(factor=np.ones(3)), "factor"),
    (dict(task=np.ones(3)), "task"),
])
@pytest.mark.parametrize("sampler", [data.sample_statistic, data.sample_gram])
def test_bad_arguments(sampler, kwargs, match):
    args = dict(key=jax.random.PRNGKey(0), factor=np.eye(2), n_context=3, batch=4)
    args.update(kwargs)
    key, factor, n, batch = (args.pop(k) for k in ("key", "factor", "n_context", "batch"))
    with pytest.raises(ValueError, match=match):
        sampler(key, factor, n, batch, **args)
