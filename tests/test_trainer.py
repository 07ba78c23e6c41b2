"""The optax-native engine trainer, and the shared Monte Carlo risk estimator.

Independent references: closed forms (cosine schedule, gradient descent on a
quadratic), optax's own schedule functions, numpy averages of iterates recorded
one step at a time, numpy moments of the same random draws.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from iclsim.engine import trainer as T
from iclsim.engine.evaluate import mean_and_se, risk_grid
from iclsim.engine.sweep import strong_init

# The trainer's mechanics (schedules, masks, tail average, monotone steps) against closed forms
# at float64 round-off; what users run in float32 is covered by the sweep and convergence tests.
pytestmark = pytest.mark.float64

# --------------------------------------------------------------------------------------
# Toy objectives
# --------------------------------------------------------------------------------------

A_DIAG = np.array([1.0, 0.5, 0.1])
B_VEC = np.array([1.0, -2.0, 0.5])
W0 = np.array([0.3, 0.2, -0.1])


def _quadratic_trainer(optimizer, steps, *, average_tail=0.0, noise=0.0):
    """loss(w) = ½ Σ a_i (w_i − b_i − noise·z_i)², z ~ N(0, 1) fresh each step (key)."""

    def init_params(key, hyper, data):
        return {"weights": jnp.asarray(W0), "frozen": jnp.ones(())}

    def loss(params, key, hyper, data):
        z = noise * jax.random.normal(key, (3,))
        r = params["weights"] - data["b"] - z
        return 0.5 * jnp.sum(data["a"] * r * r)

    return T.build_trainer(init_params, loss, steps=steps, optimizer=optimizer,
                           average_tail=average_tail)


# numpy, not jnp: a jnp array made at import would take the importer's dtype (float32), not
# the float64 the tests run in
DATA = {"a": A_DIAG, "b": B_VEC}


def _gd_closed_form(lr_per_step):
    """Gradient descent on the quadratic: w_t − b = Π_s (1 − lr_s a) (w_0 − b)."""
    factor = np.prod([1.0 - lr * A_DIAG for lr in lr_per_step], axis=0)
    return B_VEC + factor * (W0 - B_VEC)


def _cosine_closed_form(lr0, length, alpha, count):
    frac = np.minimum(count, length) / length
    return lr0 * (alpha + (1.0 - alpha) * 0.5 * (1.0 + np.cos(np.pi * frac)))


# --------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cosine", "constant"])
def test_schedule_is_optax_schedule_and_closed_form(kind):
    steps, lr0, alpha = 40, 0.3, 0.05
    cfg = T.ScheduleConfig(kind, steps, alpha)
    count = np.arange(steps + 8)
    got = np.array([float(cfg.schedule(lr0)(c)) for c in count])
    if kind == "cosine":
        ref = optax.cosine_decay_schedule(lr0, steps, alpha=alpha)
        closed = _cosine_closed_form(lr0, steps, alpha, count)
    else:
        ref = optax.constant_schedule(lr0)
        closed = np.full(count.shape, lr0)
    np.testing.assert_allclose(got, [float(ref(c)) for c in count], rtol=1e-14)
    np.testing.assert_allclose(got, closed, rtol=1e-12)
    # A traced decay length gives the same schedule.
    traced = jax.jit(lambda c, length: cfg.schedule(lr0, length)(c))
    np.testing.assert_allclose([float(traced(c, steps)) for c in count], closed, rtol=1e-12)


def test_restarting_schedule_matches_join_schedules_and_closed_form():
    lr0, alpha, length = 0.2, 0.1, 7
    cfg = T.ScheduleConfig("cosine", 100, alpha)
    count = np.arange(40)

    @jax.jit
    def traced(c, heads):
        bounds = [jnp.where(h < heads, h * length, 10**6) for h in (1, 2, 3)]
        return cfg.restarting(lr0, bounds, length)(c)

    ref = optax.join_schedules([optax.cosine_decay_schedule(lr0, length, alpha=alpha)] * 3,
                               [length, 2 * length])
    for c in count:
        phase = min(c // length, 2)
        closed = _cosine_closed_form(lr0, length, alpha, c - phase * length)
        np.testing.assert_allclose(float(traced(c, 3)), closed, rtol=1e-12)
        np.testing.assert_allclose(float(traced(c, 3)), float(ref(c)), rtol=1e-12)
        # With 1 head no boundary fires: a single decay, flat after it.
        np.testing.assert_allclose(float(traced(c, 1)), _cosine_closed_form(lr0, length, alpha, c),
                                   rtol=1e-12)


def test_trainer_applies_the_schedule_by_step():
    """SGD on loss Σ w: each step moves every weight by exactly −lr(step)."""
    steps, lr0, alpha = 30, 0.5, 0.02
    sched = T.ScheduleConfig("cosine", steps, alpha).schedule

    def init_params(key, hyper, data):
        return {"weights": jnp.zeros(2)}

    def loss(params, key, hyper, data):
        return jnp.sum(params["weights"])

    trainer = T.build_trainer(init_params, loss, steps=steps,
                              optimizer=lambda hyper: optax.sgd(sched(hyper["lr"])))
    hyper = {"lr": jnp.asarray(lr0)}
    state = trainer.init(jax.random.key(0), hyper, {})
    run = jax.jit(trainer.run, static_argnums=3)
    losses = []
    for n in (12, 18):  # the schedule continues across chunks
        state, chunk = run(state, hyper, {}, n)
        losses.append(np.asarray(chunk))
    losses = np.concatenate(losses + [[float(loss(state.params, None, None, None))]])
    lr = -np.diff(losses) / 2.0
    np.testing.assert_allclose(lr, _cosine_closed_form(lr0, steps, alpha, np.arange(steps)),
                               rtol=1e-10)


# --------------------------------------------------------------------------------------
# Tail averaging
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("average_tail", [0.0, 0.3])
def test_tail_average_is_the_numpy_mean_of_the_last_iterates(average_tail):
    steps = 20
    trainer = _quadratic_trainer(optax.sgd(0.3), steps, average_tail=average_tail, noise=1.0)
    key = jax.random.key(4)
    state = trainer.init(key, {}, DATA)
    run = jax.jit(trainer.run, static_argnums=3)
    iterates = []
    for _ in range(steps):
        state, _ = run(state, {}, DATA, 1)
        iterates.append(np.asarray(state.params["weights"]))
    iterates = np.array(iterates)  # iterate after step s = iterates[s]
    tail = math.ceil(average_tail * steps)
    want = iterates[-tail:].mean(axis=0) if tail else iterates[-1]
    got = np.asarray(trainer.averaged_params(state)["weights"])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    assert not np.allclose(iterates[-1], want) or tail == 0  # averaging did something
    whole, metrics = jax.jit(trainer.train)(key, {}, DATA)
    np.testing.assert_allclose(np.asarray(whole["weights"]), want, rtol=1e-13, atol=1e-15)
    assert float(whole["frozen"]) == 1.0  # entries other than "weights" are carried unchanged
    assert metrics["loss"].shape == (steps,)


def test_average_tail_validation():
    with pytest.raises(ValueError, match="average_tail"):
        _quadratic_trainer(optax.sgd(0.1), 10, average_tail=1.0)
    with pytest.raises(TypeError, match="optimizer"):
        _quadratic_trainer("adam", 10)


# --------------------------------------------------------------------------------------
# The optimizer argument
# --------------------------------------------------------------------------------------


def test_plain_sgd_and_a_traced_factory_follow_the_closed_form():
    steps = 25
    plain = _quadratic_trainer(optax.sgd(0.4), steps)
    params, _ = jax.jit(plain.train)(jax.random.key(0), {}, DATA)
    np.testing.assert_allclose(np.asarray(params["weights"]), _gd_closed_form([0.4] * steps),
                               rtol=1e-12)
    # A factory: the learning rate is a per-run traced value, vmapped over runs.
    factory = _quadratic_trainer(lambda hyper: optax.sgd(hyper["lr"]), steps)
    lrs = np.array([0.1, 0.4, 1.5])
    keys = jax.random.split(jax.random.key(1), 3)
    batched, _ = jax.jit(jax.vmap(factory.train, in_axes=(0, 0, None)))(
        keys, {"lr": jnp.asarray(lrs)}, DATA)
    for i, lr in enumerate(lrs):
        np.testing.assert_allclose(np.asarray(batched["weights"][i]), _gd_closed_form([lr] * steps),
                                   rtol=1e-12)


def test_switch_at_a_traced_boundary():
    steps = 20

    def opt(hyper):
        return T.switch_at(optax.sgd(0.1), optax.sgd(0.9), hyper["boundary"])

    trainer = _quadratic_trainer(opt, steps)
    for boundary in (0, 7, 20):
        params, _ = jax.jit(trainer.train)(jax.random.key(0), {"boundary": jnp.asarray(boundary)},
                                           DATA)
        want = _gd_closed_form([0.1] * boundary + [0.9] * (steps - boundary))
        np.testing.assert_allclose(np.asarray(params["weights"]), want, rtol=1e-12)


def test_step_mask_freezes_by_step():
    """Coordinate i is frozen during steps < 5·i (mask as a function of the count)."""
    steps = 15

    def mask(count):
        return (jnp.arange(3) * 5 <= count).astype(float)

    trainer = _quadratic_trainer(optax.chain(T.step_mask(mask), optax.sgd(0.3)), steps)
    params, _ = jax.jit(trainer.train)(jax.random.key(0), {}, DATA)
    active = [steps - 5 * i for i in range(3)]
    want = B_VEC + (1 - 0.3 * A_DIAG) ** np.array(active) * (W0 - B_VEC)
    np.testing.assert_allclose(np.asarray(params["weights"]), want, rtol=1e-12)


def test_lbfgs_reaches_the_minimiser_and_stays_there():
    """L-BFGS (zoom line search, under scan) on an ill-conditioned quadratic (κ = 1e4)."""
    a = np.array([1.0, 1e-2, 1e-4])

    def init_params(key, hyper, data):
        return {"weights": jnp.asarray(W0)}

    def loss(params, key, hyper, data):
        r = params["weights"] - jnp.asarray(B_VEC)
        return 0.5 * jnp.sum(jnp.asarray(a) * r * r)

    trainer = T.build_trainer(init_params, loss, steps=300, optimizer=T.lbfgs())
    params, metrics = jax.jit(trainer.train)(jax.random.key(0), {}, {})
    np.testing.assert_allclose(np.asarray(params["weights"]), B_VEC, rtol=1e-10)
    assert np.all(np.isfinite(metrics["loss"])) and np.all(np.diff(metrics["loss"]) <= 1e-15)
    assert float(metrics["grad_norm"]) < 1e-12


def test_monotone_rejects_steps_that_raise_the_objective():
    """SGD with lr above 2/a_max diverges; under ``monotone`` the loss never rises."""
    diverging = _quadratic_trainer(optax.sgd(2.5), 12)
    _, m_div = jax.jit(diverging.train)(jax.random.key(0), {}, DATA)
    # The three guarded runs in one program (the learning rate is a traced per-run value):
    # 2.5 as above, 5.0 (its first step already raises), 0.4 (every step lowers the loss).
    guarded = _quadratic_trainer(lambda hyper: T.monotone(optax.sgd(hyper["lr"])), 12)
    keys = jax.random.split(jax.random.key(0), 3)
    params, metrics = jax.jit(jax.vmap(guarded.train, in_axes=(0, 0, None)))(
        keys, {"lr": jnp.asarray([2.5, 5.0, 0.4])}, DATA)
    m_guard, p_stuck, p_small = metrics["loss"][0], params["weights"][1], params["weights"][2]
    assert m_div["loss"][-1] > 10 * m_div["loss"][0]
    assert np.all(np.diff(np.asarray(m_guard)) <= 0.0)
    np.testing.assert_array_equal(np.asarray(p_stuck), W0)
    np.testing.assert_allclose(np.asarray(p_small), _gd_closed_form([0.4] * 12), rtol=1e-12)


# --------------------------------------------------------------------------------------
# Resumability and compiles
# --------------------------------------------------------------------------------------


def _protocol(hyper):
    """Adam under a cosine schedule, then L-BFGS: every stateful piece the settings use."""
    sched = T.ScheduleConfig("cosine", 12, 0.01).schedule(hyper["lr"])
    return T.switch_at(T.adam(sched, 0.9), T.lbfgs(), 12)


def test_three_chunks_equal_one_run_bitwise():
    steps = 24
    trainer = _quadratic_trainer(_protocol, steps, average_tail=0.25, noise=0.5)
    hyper = {"lr": jnp.asarray(0.05)}
    key = jax.random.key(7)
    run = jax.jit(trainer.run, static_argnums=3)
    # strongly typed state leaves, as the sweep engine makes them: a state restored from host
    # memory then has the types of the device one, and reuses its chunk program
    init = jax.jit(strong_init(trainer.init))
    once, once_loss = run(init(key, hyper, DATA), hyper, DATA, steps)
    state = init(key, hyper, DATA)
    losses, states = [], []
    for _ in range(3):
        state, chunk = run(state, hyper, DATA, steps // 3)
        losses.append(chunk)
        states.append(state)
    for a, b in zip(jax.tree_util.tree_leaves(state.opt_state),
                    jax.tree_util.tree_leaves(once.opt_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    chunked = trainer.averaged_params(state)
    np.testing.assert_array_equal(np.asarray(chunked["weights"]),
                                  np.asarray(trainer.averaged_params(once)["weights"]))
    np.testing.assert_array_equal(np.concatenate(losses), np.asarray(once_loss))
    # (``train``, init + run + average in one program, is checked against step-by-step
    # iterates and closed forms above, and with switch_at and L-BFGS: no third program here.)
    # Through host memory (a checkpoint after the first chunk) and back: bitwise the same.
    host = jax.tree_util.tree_map(
        lambda a: a if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else np.asarray(a),
        states[0])
    host = jax.tree_util.tree_map(jnp.asarray, host)
    for _ in range(2):
        host, _ = run(host, hyper, DATA, steps // 3)
    np.testing.assert_array_equal(np.asarray(trainer.averaged_params(host)["weights"]),
                                  np.asarray(chunked["weights"]))


@pytest.mark.slow  # 24 s; the non-vmapped twin stays in the default run
def test_three_chunks_equal_one_run_bitwise_vmapped_population_setting():
    """The real protocol (linear population: Adam, then L-BFGS) over a batch of runs."""
    from iclsim.linear import training as lt

    static = lt.TrainStatic(d=3, n_context=5, r_max=3, mode="population", steps=30)
    trainer = lt.linear_trainer(static)
    hyper = {"rank": jnp.asarray([1, 2, 3], jnp.int32), "learning_rate": jnp.full(3, 0.05),
             "init_scale": jnp.full(3, 0.3), "label_noise": jnp.zeros(3),
             "input_noise": jnp.zeros(3)}
    cov = np.diag([2.0, 1.0, 0.3])
    data = {"cov": jnp.asarray(cov), "factor": jnp.asarray(np.linalg.cholesky(cov))}
    keys = jax.random.split(jax.random.key(0), 3)
    init = jax.jit(jax.vmap(trainer.init, in_axes=(0, 0, None)))

    def chunk(n):
        return jax.jit(jax.vmap(lambda s, h, d: trainer.run(s, h, d, n), in_axes=(0, 0, None)))

    once, _ = chunk(30)(init(keys, hyper, data), hyper, data)
    state = init(keys, hyper, data)
    for _ in range(3):  # the switch to L-BFGS (step 15) falls inside the second chunk
        state, _ = chunk(10)(state, hyper, data)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(once)):
        if not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_exactly_one_compile_per_program():
    trainer = _quadratic_trainer(lambda hyper: T.adam(hyper["lr"]), 24)
    train = jax.jit(jax.vmap(trainer.train, in_axes=(0, 0, None)))
    keys = jax.random.split(jax.random.key(0), 2)
    before = T.trace_count()
    train(keys, {"lr": jnp.asarray([0.1, 0.2])}, DATA)
    assert T.trace_count() - before == 1
    train(keys, {"lr": jnp.asarray([0.3, 0.01])}, DATA)  # new traced values: no new compile
    assert T.trace_count() - before == 1
    run = jax.jit(trainer.run, static_argnums=3)
    state = trainer.init(keys[0], {"lr": jnp.asarray(0.1)}, DATA)
    state, _ = run(state, {"lr": jnp.asarray(0.1)}, DATA, 6)
    state, _ = run(state, {"lr": jnp.asarray(0.2)}, DATA, 6)
    assert T.trace_count() - before == 2  # one more program: the 6-step chunk


# --------------------------------------------------------------------------------------
# engine.evaluate
# --------------------------------------------------------------------------------------


def test_mean_and_se_is_the_sample_mean_and_its_standard_error():
    rng = np.random.default_rng(0)
    e = rng.exponential(2.0, size=(3, 2, 1000))
    m1, m2 = e.mean(axis=-1), (e**2).mean(axis=-1)
    mean, se = mean_and_se(m1, m2, e.shape[-1])
    np.testing.assert_allclose(mean, e.mean(axis=-1), rtol=1e-12)
    np.testing.assert_allclose(se, e.std(axis=-1, ddof=1) / np.sqrt(e.shape[-1]), rtol=1e-9)


def test_risk_grid_moments_per_run_and_level_on_common_draws():
    """risk_grid's (m1, m2) = numpy moments of the same draws, for every run × level pair."""
    n_batches, batch = 5, 64
    keys = jax.random.split(jax.random.key(3), n_batches)
    params = {"scale": jnp.asarray([0.5, 2.0])}
    level_a = jnp.asarray([0.0, 1.0, 0.3])
    level_b = jnp.asarray([0.0, 0.5, 2.0])

    def squared_errors(run_params, a, b, key):
        z = jax.random.normal(key, (batch,))
        return (run_params["scale"] * z + a - b * z**2) ** 2

    m1, m2 = jax.jit(lambda k, p, a, b: risk_grid(squared_errors, k, p, a, b, jnp.float64))(
        keys, params, level_a, level_b)
    assert m1.shape == m2.shape == (2, 3)
    z = np.stack([np.asarray(jax.random.normal(k, (batch,))) for k in keys])  # (batches, batch)
    for i, s in enumerate([0.5, 2.0]):
        for j, (a, b) in enumerate(zip([0.0, 1.0, 0.3], [0.0, 0.5, 2.0])):
            e = (s * z + a - b * z**2) ** 2
            np.testing.assert_allclose(float(m1[i, j]), e.mean(), rtol=1e-12)
            np.testing.assert_allclose(float(m2[i, j]), (e**2).mean(), rtol=1e-12)
