"""Matrix-product precision (``iclsim.engine.precision``).

The programs are lowered on the CPU and the StableHLO text is read: under
``"float32"`` EVERY dot_general of the LSA forward, of the reduced/full loss and
its gradient, and of whole trainers (Monte Carlo Adam; population Adam + L-BFGS)
must carry ``HIGHEST``; under ``"fast"`` every dot keeps ``DEFAULT``.  The test
fails if any code path (an einsum, a matmul in optax, a dot in a scan or while
body) escapes the setting.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iclsim.engine import precision as prec
from iclsim.linear import data
from iclsim.linear import model as lsa

HIGHEST = ("HIGHEST", "HIGHEST")
DEFAULT = ("DEFAULT", "DEFAULT")


def lowered(fn, *args, precision):
    """StableHLO text of ``jit(fn)`` lowered under ``precision`` (None: no scope at all)."""
    if precision is None:
        return jax.jit(fn).lower(*args).as_text()
    with prec.precision_scope(precision):
        return jax.jit(fn).lower(*args).as_text()


def assert_every_dot(text, expected, at_least=1):
    found = prec.dot_precisions(text)
    assert len(found) >= at_least, f"expected >= {at_least} dots, found {len(found)}"
    wrong = [p for p in found if p != expected]
    assert not wrong, f"{len(wrong)} of {len(found)} dots are not {expected}: {set(wrong)}"


@pytest.fixture
def float32():
    with jax.enable_x64(False):
        yield


def model_problem(parametrization, d=4, n=6, batch=8):
    cfg = lsa.LSAConfig(d, d + (parametrization == "full"), parametrization)
    params = lsa.init(jax.random.PRNGKey(0), cfg, rank=2)
    chol = jnp.asarray(np.linalg.cholesky(np.diag([2.0, 1.0, 0.5, 0.2])), jnp.float32)
    prompts = data.sample_prompts(jax.random.PRNGKey(1), None, n, batch, factor=chol,
                                  label_noise=0.1, input_noise=0.1)
    return params, prompts, chol


@pytest.mark.parametrize("parametrization", lsa.PARAMETRIZATIONS)
@pytest.mark.parametrize("precision, expected", [("float32", HIGHEST), ("fast", DEFAULT)])
def test_lsa_forward_loss_and_gradient(float32, parametrization, precision, expected):
    params, prompts, _ = model_problem(parametrization)
    assert prompts.x.dtype == jnp.float32

    def loss(p, prompts):
        return jnp.mean((lsa.apply(p, prompts) - prompts.y_query) ** 2)

    assert_every_dot(lowered(lsa.apply, params, prompts, precision=precision), expected, 2)
    assert_every_dot(lowered(jax.value_and_grad(loss), params, prompts, precision=precision),
                     expected, 4)
    stack = lambda p, q: lsa.apply_stack([p, p], q)  # noqa: E731
    assert_every_dot(lowered(stack, params, prompts, precision=precision), expected, 4)


@pytest.mark.parametrize("precision, expected", [("float32", HIGHEST), ("fast", DEFAULT)])
def test_statistic_samplers_and_population_risk(float32, precision, expected):
    _, _, chol = model_problem("reduced")
    params, _, _ = model_problem("reduced")

    def stat_loss(p, key, s2, sx2):
        stat = data.sample_statistic(key, chol, 6, 8, label_noise=s2, input_noise=sx2)
        pred = lsa.apply(p, data.statistic_prompts(stat))
        gram = data.sample_gram(key, chol, 6, 8, label_noise=s2, input_noise=sx2)
        return jnp.mean((pred - stat.y_query) ** 2) + jnp.mean(gram.gram)

    def risk(p):
        return lsa.reduced_population_risk(lsa.effective_gamma(p), chol @ chol.T, 6, 0.1, 0.1)

    args = (params, jax.random.PRNGKey(0), jnp.float32(0.1), jnp.float32(0.2))
    assert_every_dot(lowered(jax.grad(stat_loss), *args, precision=precision), expected, 4)
    assert_every_dot(lowered(jax.grad(risk), params, precision=precision), expected, 4)


def _trainer_text(mode, precision):
    from iclsim.linear.training import TrainStatic, linear_trainer

    static = TrainStatic(d=3, n_context=5, r_max=3, mode=mode, steps=4,
                         batch=8 if mode == "monte_carlo" else 1)
    trainer = linear_trainer(static)
    runs = 2
    hyper = {
        "rank": jnp.asarray([1, 2], jnp.int32),
        "learning_rate": jnp.full(runs, 1e-2, jnp.float32),
        "init_scale": jnp.full(runs, 0.1, jnp.float32),
        "label_noise": jnp.zeros(runs, jnp.float32),
        "input_noise": jnp.zeros(runs, jnp.float32),
    }
    cov = np.diag([2.0, 1.0, 0.5])
    data_ = {"cov": jnp.asarray(cov, jnp.float32),
             "factor": jnp.asarray(np.linalg.cholesky(cov), jnp.float32)}
    keys = jax.random.split(jax.random.PRNGKey(0), runs)
    fn = jax.vmap(trainer.train, in_axes=(0, 0, None))
    return lowered(fn, keys, hyper, data_, precision=precision)


@pytest.mark.parametrize("mode", ["monte_carlo", "population"])
def test_whole_linear_trainer(float32, mode):
    """The vmapped trainer of setting 1 (Adam in a scan; population: + L-BFGS in a while loop):
    every dot HIGHEST under "float32"; "fast" lowers exactly as with no scope at all (all
    DEFAULT, except the dots optax's L-BFGS pins to HIGHEST itself)."""
    assert_every_dot(_trainer_text(mode, "float32"), HIGHEST, 4)
    fast = _trainer_text(mode, "fast")
    assert fast == _trainer_text(mode, None)
    found = prec.dot_precisions(fast)
    assert found.count(DEFAULT) >= 4
    if mode == "monte_carlo":
        assert_every_dot(fast, DEFAULT, 4)
    else:
        assert set(found) == {DEFAULT, HIGHEST}  # optax.lbfgs: explicit Precision.HIGHEST


def test_scopes_nest_and_the_jit_cache_keeps_them_apart(float32):
    a = jnp.ones((3, 3), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a)  # traced and cached at the default precision
    with prec.precision_scope("float32"):
        assert prec.dot_precisions(f.lower(a).as_text()) == [HIGHEST]
        with prec.precision_scope("fast"):
            assert prec.dot_precisions(f.lower(a).as_text()) == [DEFAULT]
        assert prec.dot_precisions(f.lower(a).as_text()) == [HIGHEST]
    assert prec.dot_precisions(f.lower(a).as_text()) == [DEFAULT]
    wrapped = prec.with_precision("float32")(lambda x: f.lower(x).as_text())
    assert prec.dot_precisions(wrapped(a)) == [HIGHEST]


def test_set_precision_is_process_wide_and_restorable(float32):
    a = jnp.ones((2, 2), jnp.float32)
    before = jax.config.jax_default_matmul_precision
    try:
        prec.set_precision("float32")
        assert prec.dot_precisions(jax.jit(lambda x: x @ x).lower(a).as_text()) == [HIGHEST]
    finally:
        jax.config.update("jax_default_matmul_precision", before)
    assert prec.dot_precisions(jax.jit(lambda x: x @ x).lower(a).as_text()) == [DEFAULT]


def test_parser_reads_both_syntaxes_and_flags_missing_attributes():
    text = "\n".join([
        "%0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0], "
        "precision = [HIGHEST, HIGHEST] : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>",
        '%1 = "stablehlo.dot_general"(%a, %b) {precision_config = [#stablehlo<precision '
        'DEFAULT>, #stablehlo<precision HIGH>]} : (tensor<2x2xf32>) -> tensor<2x2xf32>',
        "%2 = stablehlo.dot %a, %b : (tensor<2xf32>, tensor<2xf32>) -> tensor<f32>",
        "%3 = stablehlo.add %a, %b : tensor<2xf32>",
    ])
    assert prec.dot_precisions(text) == [HIGHEST, ("DEFAULT", "HIGH"), None]


def test_names():
    assert prec.DEFAULT_PRECISION == "float32" and set(prec.PRECISIONS) == {"float32", "fast"}
    assert prec.matmul_precision("float32") == "float32"
    assert prec.matmul_precision("fast") is None
    for bad in ("highest", "FLOAT32", None, 32):
        with pytest.raises(ValueError, match="precision"):
            prec.check_precision(bad)
        with pytest.raises(ValueError, match="precision"):
            prec.with_precision(bad)
