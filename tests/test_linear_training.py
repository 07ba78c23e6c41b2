"""The engine trainer and linear.train: purity identities, optimum reached, verdicts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CANONICAL_LAMBDA, CANONICAL_N, random_rotation
from iclsim import linear
from iclsim.engine import trace_count
from iclsim.linear import model as lsa
from iclsim.linear.training import TrainStatic, classify_runs, linear_trainer, relative_gradient

COV3 = np.diag([2.0, 1.0, 0.3])


def _hyper(ranks, lr=0.05, scale=0.3):
    n = len(ranks)
    return {
        "rank": jnp.asarray(ranks, jnp.int32),
        "learning_rate": jnp.full(n, lr),
        "init_scale": jnp.full(n, scale),
        "label_noise": jnp.zeros(n),
        "input_noise": jnp.zeros(n),
    }


def _data(cov):
    return {"cov": jnp.asarray(cov), "factor": jnp.asarray(np.linalg.cholesky(cov))}


@pytest.fixture(scope="module")
def mc_batched():
    """Three Monte Carlo runs (ranks 1, 2, 3; float64) trained by one vmapped, jitted program:
    the reference of the two identity tests below.  4 steps: the identities are exact whatever
    the length, and an eager run costs ~0.1 s a step after compiling each primitive once."""
    with jax.enable_x64(True):
        static = TrainStatic(d=3, n_context=5, r_max=3, mode="monte_carlo", steps=4, batch=16)
        trainer = linear_trainer(static)
        hyper = _hyper([1, 2, 3])
        keys = jax.random.split(jax.random.key(0), 3)
        batched = jax.jit(jax.vmap(trainer.train, in_axes=(0, 0, None)))(
            keys, hyper, _data(COV3))
    return trainer, keys, hyper, batched


@pytest.mark.float64  # float64 round-off bounds (float32 twin: test_population_convergence)
def test_vmapped_runs_equal_one_at_a_time_and_jit_equals_no_jit(mc_batched):
    """Run 1 of the vmapped, jitted program is that run trained alone and eagerly
    (``jax.disable_jit``), to float64 rounding; every run alone, jitted: the test below."""
    trainer, keys, hyper, (batched, m_batched) = mc_batched
    one_hyper = jax.tree_util.tree_map(lambda a: a[1], hyper)
    with jax.disable_jit():
        single, m_single = trainer.train(keys[1], one_hyper, _data(COV3))
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a[1], b, rtol=1e-9, atol=1e-12), batched, single
    )
    np.testing.assert_allclose(m_batched["loss"][1], m_single["loss"], rtol=1e-9)


@pytest.mark.float64  # float64 round-off bounds (float32 twin: test_population_convergence)
def test_chunked_run_equals_one_run(mc_batched):
    """Chunks continue exactly where they stopped (same data keys, same schedule).

    Each run of the reference, alone, in two jitted chunks of 2 of its 4 steps: another XLA
    program (one run, not vmapped), so agreement is to rounding (1e-12); the same chunking
    after a host round trip is bitwise equal.  One chunk program serves every check.
    """
    trainer, keys, hyper, (batched, m_batched) = mc_batched
    run = jax.jit(trainer.run, static_argnums=3)
    for i in range(3):
        one = jax.tree_util.tree_map(lambda a: a[i], hyper)
        state = trainer.init(keys[i], one, _data(COV3))
        first, loss_1 = run(state, one, _data(COV3), 2)
        uninterrupted, loss_2 = run(first, one, _data(COV3), 2)
        chunked = trainer.averaged_params(uninterrupted)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-12, atol=1e-14),
            batched, chunked,
        )
        np.testing.assert_allclose(np.concatenate([loss_1, loss_2]), m_batched["loss"][i],
                                   rtol=1e-12)
    # Resume (run 2): stop after the first chunk, move the state through host memory, continue.
    restored = jax.tree_util.tree_map(
        lambda a: a if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
        else jnp.asarray(np.asarray(a)), first)
    resumed, _ = run(restored, one, _data(COV3), 2)
    jax.tree_util.tree_map(np.testing.assert_array_equal, uninterrupted.params, resumed.params)


def _canonical_population(steps, **kwargs):
    """Population training of every rank of the canonical example (float64)."""
    u = random_rotation(7, 8)
    cov = (u * CANONICAL_LAMBDA) @ u.T
    with jax.enable_x64(True):
        res = linear.train(
            jax.random.key(0), cov, CANONICAL_N, range(1, 9), mode="population", steps=steps,
            learning_rate=0.05, init_scale=0.1, eval_prompts=4096, loo=False,
            sampler="statistic", adam_b1=0.9, average_tail=0.0, **kwargs,
        )
    return cov, res


@pytest.fixture(scope="module")
def canonical_population():
    """750 Adam steps, then 750 L-BFGS steps (the default split); shared by two tests."""
    return _canonical_population(1500)


@pytest.mark.float64  # float64 round-off bounds (float32 twin: test_population_convergence)
def test_population_mode_reaches_every_rank_optimum(canonical_population):
    cov, res = canonical_population
    assert res.verdict == ["optimum_reached"] * 8
    assert res.converged.all(), res.grad_rel
    np.testing.assert_allclose(res.risk, linear.optimal_risks(cov, CANONICAL_N)[1:], rtol=1e-12)
    # The L-BFGS finish takes Γ to rounding (its 750 Adam steps alone: 1e-4 … 0.6 here).
    assert np.max(res.gamma_error) < 1e-10, res.gamma_error
    # Each run's Γ is the rank-r optimum of the oracle (an independent computation).
    for r, g in zip(res.rank, res.gamma):
        np.testing.assert_allclose(g, linear.optimal_gamma(cov, CANONICAL_N, r), atol=1e-10)


@pytest.mark.float64  # float64 round-off bounds (float32 twin: test_population_convergence)
def test_adam_alone_is_flagged_not_converged_in_population_mode(canonical_population):
    """Without the L-BFGS finish, the 750 Adam steps of the finished run leave a gradient far
    above rounding (grad_rel 2e-7 … 5e-5 here, tolerance 1e-10); the finish converges."""
    cov, finished = canonical_population
    _, res = _canonical_population(750, lbfgs_fraction=0.0)
    # The same Adam phase (same init, learning rate and schedule length) as the finished run:
    # its loss curve is that run's first 750 steps, to rounding.
    np.testing.assert_allclose(res.loss, finished.loss[:, :750], rtol=1e-12)
    assert not res.converged.any(), res.grad_rel
    assert set(res.verdict) <= {"not_converged", "stuck_at_rank_k"}, res.verdict
    assert finished.converged.all() and finished.verdict == ["optimum_reached"] * 8
    assert np.max(finished.gamma_error) < 1e-10


@pytest.mark.float64  # float64 round-off bounds (float32 twin: test_population_convergence)
def test_relative_gradient_is_scale_free_and_zero_at_the_optimum():
    """ρ at Γ_r (built from the oracle) is at rounding level; rescaling Λ leaves ρ unchanged."""
    n = 10
    gamma = linear.optimal_gamma(COV3, n, 2)
    lam, u = linear.eigh_descending(COV3)
    # Reduced parametrisation Γ = A Bᵀ with A = U_2 diag(γ), B = U_2.
    a = np.zeros((3, 3))
    b = np.zeros((3, 3))
    a[:, :2] = u[:, :2] * np.diag(u[:, :2].T @ gamma @ u[:, :2])
    b[:, :2] = u[:, :2]
    params = {"weights": {"a": jnp.asarray(a)[None], "b": jnp.asarray(b)[None]},
              "rank_mask": jnp.asarray([[1.0, 1.0, 0.0]])}
    np.testing.assert_allclose(np.asarray(lsa.effective_gamma(
        jax.tree_util.tree_map(lambda x: x[0], params))), gamma, atol=1e-14)
    assert relative_gradient(params, COV3, n)[0] < 1e-14
    off = {**params, "weights": {"a": params["weights"]["a"] * 1.01, "b": params["weights"]["b"]}}
    rho = relative_gradient(off, COV3, n)[0]
    assert rho > 1e-4
    # Λ → cΛ and Γ → Γ/c (both factors / √c) scale the risk by c: ρ is unchanged.
    c = 7.0
    scaled = {**off, "weights": {k: v / np.sqrt(c) for k, v in off["weights"].items()}}
    np.testing.assert_allclose(relative_gradient(scaled, c * COV3, n)[0], rho, rtol=1e-10)


#: Monte Carlo training of the block LSA on d = 3: one static shape (steps = 1500 with
#: batch = 128 appears in no other test) and one evaluation program for the runs below.
MC_SMALL = {"mode": "monte_carlo", "parametrization": "block", "steps": 1500, "batch": 128,
            "init_scale": 0.3, "eval_prompts": 50000, "loo": False, "sampler": "statistic",
            "adam_b1": 0.9, "average_tail": 0.0}


@pytest.fixture(scope="module")
def mc_small():
    """Two calls of ``linear.train`` with the static shape MC_SMALL: ranks 1, 2, 3 at learning
    rate 0.02, then ranks 3, 1, 2 at 1e30 (finite in float32: the weights overflow); and how
    many times the trainer was traced by each call."""
    before = trace_count()
    trained = linear.train(jax.random.key(1), COV3, 10, [1, 2, 3], learning_rate=0.02,
                           **MC_SMALL)
    middle = trace_count()
    diverged = linear.train(jax.random.key(0), COV3, 10, [3, 1, 2], learning_rate=1e30,
                            **MC_SMALL)
    return trained, diverged, middle - before, trace_count() - middle


def test_one_compile_for_all_ranks_and_learning_rates(mc_small):
    """The first call compiles this static shape exactly once for its three ranks; the second
    (other ranks per run, another learning rate: traced values) traces nothing new."""
    _, _, first, second = mc_small
    assert first == 1
    assert second == 0  # same static shape: no new trace


def test_monte_carlo_mode_reaches_optimum_small(mc_small):
    """Fresh-prompt training on d = 3: test risk within 4 SE of L_r (SE of the test set)."""
    res = mc_small[0]
    opt = linear.optimal_risks(COV3, 10)
    for r, risk, se in zip(res.rank, res.test_risk, res.test_se):
        assert abs(risk - opt[r]) < 4 * se, (r, risk, opt[r], se)
    assert res.verdict == ["optimum_reached"] * 3


def test_spurious_rank_one_configuration_is_detected():
    """The trap of docs/theory/linear.md (training facts).

    v_y = 0, label routed through the y-row of W^KQ -> risk L_1, not L_r.
    """
    d, n = 3, 10
    gamma1 = linear.optimal_gamma(COV3, n, 1)
    lam, u = linear.eigh_descending(COV3)
    # Γ = K_yxᵀ v_xᵀ with K_yx = γ₁ u₁ᵀ, v_x = u₁ᵀ.
    w_pv = np.zeros((d + 1, d + 1))
    w_pv[d, :d] = u[:, 0]
    a = np.zeros((d + 1, 3))
    b = np.zeros((d + 1, 3))
    a[d, 0] = 1.0
    b[:d, 0] = gamma1 @ u[:, 0]
    params = {"weights": {"w_pv": jnp.asarray(w_pv), "a": jnp.asarray(a), "b": jnp.asarray(b)},
              "rank_mask": lsa.rank_mask(3, 3)}
    np.testing.assert_allclose(lsa.effective_gamma(params), gamma1, atol=1e-12)
    stacked = jax.tree_util.tree_map(lambda x: x[None], params)
    risk, se = linear.evaluate(jax.random.key(0), stacked, COV3, n, n_prompts=100000)
    assert abs(risk[0, 0] - linear.optimal_risk(COV3, n, 1)) < 4 * se[0, 0]
    verdict, stuck = classify_runs(risk[:, 0], se[:, 0], [3], linear.optimal_risks(COV3, n))
    assert verdict == ["stuck_at_rank_k"] and stuck[0] == 1


def test_classify_runs():
    opt = np.array([10.0, 6.0, 4.0, 3.5])
    risk = np.array([4.01, 6.02, np.nan, 5.0, 3.5])
    verdict, stuck = classify_runs(risk, np.zeros(5), [2, 3, 3, 3, 3], opt)
    assert verdict == [
        "optimum_reached", "stuck_at_rank_k", "diverged", "not_converged", "optimum_reached",
    ]
    assert list(stuck) == [-1, 1, -1, -1, -1]


def test_diverged_run_is_reported(mc_small):
    """A learning rate of 1e30 overflows the weights: every run is ``diverged``."""
    res = mc_small[1]
    assert list(res.rank) == [3, 1, 2]
    assert res.verdict == ["diverged"] * 3


def test_evaluate_matches_oracle_under_noise():
    cov = np.diag([2.0, 1.0, 0.3])
    n = 10
    params = lsa.init(jax.random.key(0), lsa.LSAConfig(3, 2), rank=2, scale=0.5)
    stacked = jax.tree_util.tree_map(lambda x: x[None], params)
    s2 = np.array([0.0, 4.0, 0.0])
    sx2 = np.array([0.0, 0.0, 1.0])
    mean, se = linear.evaluate(jax.random.key(2), stacked, cov, n, label_noise=s2,
                               input_noise=sx2, n_prompts=200000)
    gamma = np.asarray(lsa.effective_gamma(params))
    for j in range(3):
        want = linear.population_risk(gamma, cov, n, label_noise=s2[j], input_noise=sx2[j])
        assert abs(mean[0, j] - want) < 4 * se[0, j], (j, mean[0, j], want, se[0, j])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"ranks": [0]}, "ranks"),
        ({"ranks": [4]}, "ranks"),
        ({"mode": "exact"}, "mode"),
        ({"parametrization": "full", "mode": "population", "loo": False}, "parametrization"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"seeds": 0}, "seeds"),
        ({"steps": 0}, "steps"),
        ({"n_context": 0}, "n_context"),
        ({"train_label_noise": -0.1}, "train_label_noise"),
    ],
)
def test_train_validation(kwargs, field):
    args = {"ranks": [1], "n_context": 5}
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        linear.train(jax.random.key(0), COV3, args.pop("n_context"), args.pop("ranks"), **args)


def _kappa(weights):
    """u² − (‖A‖² + ‖B‖²)/2 per run (the quantity gradient flow conserves)."""
    w = jax.tree_util.tree_map(np.asarray, weights)
    return w["u"] ** 2 - 0.5 * (np.sum(w["a"] ** 2, axis=(-2, -1)) + np.sum(w["b"] ** 2,
                                                                           axis=(-2, -1)))


@pytest.mark.float64  # float64 round-off bounds (float32 twin: test_population_convergence)
def test_balance_u_keeps_gamma_and_restores_the_flow_balance():
    """One balanced step: Γ is that of the plain step, κ that of the initial weights."""
    from iclsim.linear.training import balance_u

    rng = np.random.default_rng(0)
    params = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(4, 3)), "u": np.float64(0.7)}
    params = jax.tree_util.tree_map(jnp.asarray, params)
    step = jax.tree_util.tree_map(lambda p: 0.3 * jnp.asarray(rng.normal(size=p.shape)), params)
    step["u"] = jnp.asarray(-0.4)  # a large drift of u, as Adam makes
    tx = balance_u()
    state = tx.init(params)
    balanced, _ = tx.update(step, state, params)
    plain = jax.tree_util.tree_map(jnp.add, params, step)
    new = jax.tree_util.tree_map(jnp.add, params, balanced)
    gamma = lambda w: w["u"] * w["b"] @ w["a"].T  # noqa: E731  (Γ = u W₁₁ᵀ, W₁₁ = A Bᵀ)
    np.testing.assert_allclose(gamma(new), gamma(plain), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_kappa(new), _kappa(params), rtol=1e-10)
    assert abs(float(_kappa(plain) - _kappa(params))) > 0.1  # the plain step did move κ
    with pytest.raises(ValueError, match="params"):
        tx.update(step, state, None)


def test_block_training_keeps_u_balanced_only_with_flow():
    """Adam on the block LSA lets u drift off the flow balance; u_balance="flow" holds it
    (this drift, u → ~0.1, is what left ranks 7, 8 of the quickstart on a plateau)."""
    from iclsim.linear.training import optimizer

    cfg = lsa.LSAConfig(3, 3, "block")
    cov = jnp.asarray(COV3)
    drift = {}
    for balance in ("none", "flow"):
        static = TrainStatic(d=3, n_context=10, r_max=3, parametrization="block", steps=150,
                             lbfgs_fraction=0.0, u_balance=balance)
        tx = optimizer(static)({"learning_rate": jnp.asarray(0.05)})
        params = lsa.init(jax.random.key(0), cfg, rank=3, scale=0.01)
        state = tx.init(params["weights"])

        def risk(w, params=params):
            return lsa.reduced_population_risk(lsa.effective_gamma({**params, "weights": w}),
                                               cov, 10)

        @jax.jit
        def step(w, state, tx=tx, risk=risk):
            updates, state = tx.update(jax.grad(risk)(w), state, w)
            return jax.tree_util.tree_map(jnp.add, w, updates), state

        w = params["weights"]
        for _ in range(150):
            w, state = step(w, state)
        # κ at init is 1 − (‖A‖² + ‖B‖²)/2 ≈ 1 − 9·0.01² (u = 1, 9 entries each of A, B).
        drift[balance] = abs(float(_kappa(w)) - 1.0)
        assert float(risk(w)) < 0.5 * float(jnp.trace(cov))  # it did train
    assert drift["none"] > 0.2, drift
    assert drift["flow"] < 2e-3, drift
    with pytest.raises(ValueError, match="u_balance"):
        TrainStatic(d=3, n_context=5, r_max=3, parametrization="block", u_balance="both")


def test_sweep_key_u_balance_reaches_the_trainer():
    """``train.u_balance``: default "flow", passed to the compiled program, validated."""
    from iclsim.engine.config import ConfigError, load_toml, parse
    from iclsim.linear.sweep import LinearSweepConfig, _static

    from pathlib import Path

    data = load_toml(Path(__file__).parent.parent / "sweeps" / "quickstart.toml")
    data.setdefault("model", {})["parametrization"] = "block"
    assert _static(parse(LinearSweepConfig, data), 20).u_balance == "flow"
    data["train"]["u_balance"] = "none"
    assert _static(parse(LinearSweepConfig, data), 20).u_balance == "none"
    data["train"]["u_balance"] = "sometimes"
    with pytest.raises(ConfigError, match="u_balance"):
        parse(LinearSweepConfig, data)
