"""Training of the parity model (setting 2): protocols, losses, verdicts.

Independent references: the numpy oracle (``iclsim.parity.oracle``: R_m, γ and the
exact loss (5)), Monte Carlo averages with their standard errors, and verdicts
checked on hand-built attention masses.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iclsim.parity import model as pm
from iclsim.parity import oracle
from iclsim.parity import training as pt

# A small instance (K = 3 blocks of k = 2 bits) so that compiles stay cheap.
PI = np.array([0.5, 0.3, 0.2])
K_DEG = 2
N = 8


def _hyper(heads, lr=0.1, scale=0.1):
    r = len(heads)
    return {
        "heads": jnp.asarray(heads, jnp.int32),
        "learning_rate": jnp.full(r, lr),
        "init_scale": jnp.full(r, scale),
        "label_flip": jnp.zeros(r),
        "bit_flip": jnp.zeros(r),
    }


@pytest.fixture(scope="module")
def population_result():
    """Progressive population training of m = 1..3, 2 seeds each (one compiled program)."""
    return pt.train(jax.random.key(3), PI, N, K_DEG, [1, 2, 3], mode="population", seeds=2,
                    steps=1500, learning_rate=0.1, eval_prompts=4096)


def test_progressive_population_reaches_theorem_c(population_result):
    """Every run lands on the top-m solution: risk (5) at R_m (oracle) and readout at γ."""
    res = population_result
    r_m = oracle.optimal_risks(PI, N)
    gamma = oracle.optimal_readout(PI, N)
    assert res.verdict == ["optimum_reached"] * len(res.heads), res.verdict
    for i, m in enumerate(res.heads):
        # Soft attention with mass ≥ 0.99 is within ~1e-4 of the limit; (5) ≥ R_m always.
        assert r_m[m] - 1e-10 <= res.risk[i] <= r_m[m] + 1e-4, (m, res.risk[i], r_m[m])
        blocks = np.argmax(res.block_mass[i, :m], axis=1)
        assert sorted(blocks.tolist()) == list(range(m))
        np.testing.assert_allclose(res.readout[i, :m], gamma[blocks], rtol=0.02)
        # The MC test risk of the trained model agrees with the exact loss (5).
        assert abs(res.test_risk[i] - res.risk[i]) < 4 * res.test_se[i], (
            res.test_risk[i], res.risk[i], res.test_se[i])


def test_progressive_freezes_earlier_heads_exactly():
    """After its phase a head's logits never move again: not even by Adam's momentum.

    (Zeroing only the gradient is not enough: Adam keeps moving a row for ~1/(1-β1)
    steps with its stale first moment; the update itself must be zeroed.)
    """
    static = pt.ParityStatic(n_features=3, k=K_DEG, n_context=N, m_max=3, mode="population",
                             protocol="progressive", steps=300, batch=1, lbfgs_fraction=0.0)
    trainer = pt.parity_trainer(static)
    data = {"pi": jnp.asarray(PI)}
    hyper = jax.tree_util.tree_map(lambda a: a[0], _hyper([3], scale=0.0))
    state = jax.jit(trainer.init)(jax.random.key(0), hyper, data)
    run = jax.jit(trainer.run, static_argnums=3)
    state, _ = run(state, hyper, data, 100)  # end of phase 0 (length 100)
    state, _ = run(state, hyper, data, 1)  # first step of phase 1: head 0 is frozen
    head0 = np.asarray(state.params["weights"]["logits"][0])
    state, _ = run(state, hyper, data, 199)
    np.testing.assert_array_equal(np.asarray(state.params["weights"]["logits"][0]), head0)
    # Head 1 froze at the end of phase 1 and head 2 (the last) did move.
    mass = np.asarray(pm.block_mass(state.params, static.model_config()))
    assert np.argmax(mass[0]) == 0 and mass[0, 0] > 0.9, mass


def test_vmapped_runs_equal_single_runs():
    """A vmapped group of runs gives the same parameters as each run alone."""
    static = pt.ParityStatic(n_features=3, k=K_DEG, n_context=N, m_max=3, mode="monte_carlo",
                             protocol="progressive", steps=40, batch=16)
    trainer = pt.parity_trainer(static)
    data = {"pi": jnp.asarray(PI)}
    hyper = _hyper([1, 3], lr=0.05)
    keys = jax.random.split(jax.random.key(1), 2)
    batched, _ = jax.jit(jax.vmap(trainer.train, in_axes=(0, 0, None)))(keys, hyper, data)
    single = jax.jit(trainer.train)
    for i in range(2):
        one, _ = single(keys[i], jax.tree_util.tree_map(lambda a: a[i], hyper), data)
        for name in ("logits", "readout"):
            np.testing.assert_allclose(np.asarray(batched["weights"][name][i]),
                                       np.asarray(one["weights"][name]), rtol=1e-10, atol=1e-12)


def test_leave_one_out_loss_is_unbiased_for_population_loss():
    """E[LOO loss] over prompts = the exact loss (5) at any parameters (4 SE, independent draws)."""
    static = pt.ParityStatic(n_features=3, k=K_DEG, n_context=N, m_max=2, mode="monte_carlo",
                             protocol="joint", steps=1, batch=4096, loo=True)
    cfg = static.model_config()
    trainer_loss = pt._loss_fn(static)
    params = pm.init(jax.random.key(5), cfg, heads=2, scale=1.0)
    params = {**params, "weights": {**params["weights"], "readout": jnp.asarray([0.7, -0.4])}}
    data = {"pi": jnp.asarray(PI)}
    hyper = jax.tree_util.tree_map(lambda a: a[0], _hyper([2]))
    draws = jax.jit(jax.vmap(lambda key: trainer_loss(params, key, hyper, data)))(
        jax.random.split(jax.random.key(6), 200))
    draws = np.asarray(draws)
    alpha = np.asarray(pm.attention(params))
    exact = oracle.population_loss(alpha, np.array([0.7, -0.4]), PI, N, K_DEG)
    se = draws.std(ddof=1) / np.sqrt(len(draws))
    assert abs(draws.mean() - exact) < 4 * se, (draws.mean(), exact, se)


def test_classify_runs_names_each_failure_mode():
    gamma = oracle.optimal_readout(PI, N)
    eye = np.eye(3)
    near = 0.995 * eye + 0.005 / 3
    cases = {
        "optimum_reached": (near, gamma, 3, True),
        "collapsed": (np.stack([near[0], near[0], near[1]]), gamma, 3, True),
        "wrong_feature": (np.stack([near[0], near[2], near[1]]), gamma, 2, True),
        "not_converged": (0.9 * eye + 0.1 / 3, gamma, 3, True),
        "diverged": (near, gamma, 3, False),
    }
    for expected, (mass, c, m, finite) in cases.items():
        got = pt.classify_runs(mass[None], np.asarray(c)[None], [m], gamma, [finite])
        assert got == [expected], (expected, got)
    # Readout off by 5% fails the 2% criterion even with perfect attention.
    got = pt.classify_runs(near[None], (1.05 * gamma)[None], [3], gamma, [True])
    assert got == ["not_converged"]


def test_joint_protocol_failure_modes_are_detected():
    """Joint training from small random logits: the collapse is named, the rest are not.

    docs/theory/parity.md reports joint training mostly collapsing for m >= 2. With this key
    (population mode, float64: deterministic) after 400 steps seed 3 has collapsed (two heads
    on one block) and seeds 0-2 sit on the top-3 blocks but are not yet converged. Both kinds
    must occur, and each verdict must agree with masses and risks checked independently here
    (argmax of the masses; risk (5) against the oracle's R_2 and R_3).
    """
    res = pt.train(jax.random.key(0), PI, N, K_DEG, [3], mode="population", protocol="joint",
                   seeds=4, steps=400, learning_rate=0.1, init_scale=0.1, eval_prompts=1024)
    gamma = oracle.optimal_readout(PI, N)
    r_m = oracle.optimal_risks(PI, N)
    assert res.verdict.count("collapsed") >= 1, res.verdict
    assert res.verdict.count("collapsed") < len(res.verdict), res.verdict
    assert set(res.verdict) <= {"collapsed", "not_converged", "optimum_reached"}, res.verdict
    for i, v in enumerate(res.verdict):
        blocks = np.argmax(res.block_mass[i, :3], axis=1)
        if v == "collapsed":
            assert len(set(blocks.tolist())) < 3, (i, blocks)
            # A collapsed run uses at most two blocks: its risk is at least R_2 > R_3.
            assert res.risk[i] >= r_m[2] - 1e-6, (i, res.risk[i], r_m)
        else:
            assert sorted(blocks.tolist()) == [0, 1, 2], (i, v, blocks)
            assert res.risk[i] <= r_m[3] + 1e-3, (i, v, res.risk[i], r_m)
            if v == "optimum_reached":
                np.testing.assert_allclose(res.readout[i, :3], gamma[blocks], rtol=0.02)


def test_diverged_run_is_reported():
    """Adam moves each parameter by ~lr per step: at lr = 1e300 the squared readout overflows
    (float64 max ~1.8e308) within 30 steps, so the run must be reported diverged, risk non-finite.
    (At lr = 1e30 it stays finite in float64 and lands on 'wrong_feature'.)"""
    res = pt.train(jax.random.key(0), PI, N, K_DEG, [1], mode="monte_carlo", protocol="joint",
                   seeds=1, steps=30, batch=8, learning_rate=1e300, eval_prompts=256)
    assert res.verdict == ["diverged"], res.verdict
    assert not np.isfinite(res.risk).any(), res.risk
    # With a NaN readout the verdict must be 'diverged'.
    bad = pt.classify_runs(np.eye(3)[None], np.full((1, 3), np.nan), [1],
                           oracle.optimal_readout(PI, N), [False])
    assert bad == ["diverged"]


@pytest.mark.parametrize("bad", [
    dict(heads=[0]), dict(heads=[4]), dict(k=0), dict(learning_rate=-1.0), dict(mode="exact"),
    dict(protocol="greedy"),
])
def test_train_rejects_bad_input(bad):
    kwargs = dict(pi=PI, n_context=N, k=K_DEG, heads=[1], steps=2)
    kwargs.update(bad)
    with pytest.raises(ValueError) as err:
        pt.train(jax.random.key(0), **kwargs)
    name = next(iter(bad))
    assert name.split("[")[0] in str(err.value), str(err.value)
