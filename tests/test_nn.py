"""The Flax NNX face (iclsim.nn) computes what the pure model functions compute (float64)."""

import importlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from iclsim import linear, parity
from iclsim.linear import model as lsa
from iclsim.parity import model as pm

pytestmark = pytest.mark.float64  # identities of the float64 oracle / model code

try:
    from flax import nnx

    from iclsim import nn
except ImportError:  # the optional extra is missing: only the import-guard tests run
    nnx = nn = None

needs_flax = pytest.mark.skipif(
    nnx is None, reason="flax not installed (pip install 'iclsim[flax]')"
)

EPS = np.finfo(np.float64).eps
D, N, B = 4, 6, 16
LR = 0.05
PAR = pm.ParityConfig(K=3, k=2, distractor_bits=1, m_max=4)
PI = np.array([0.5, 0.3, 0.2])


def _tol(a):
    return 1e3 * EPS * max(1.0, float(np.max(np.abs(np.asarray(a)))))


def _linear_prompts(seed):
    return linear.sample_prompts(jax.random.key(seed), np.eye(D), N, B)


def _parity_prompts(seed):
    return parity.sample_prompts(
        jax.random.key(seed), PI, N, PAR.k, B, distractor_bits=PAR.distractor_bits, label_flip=0.1
    )


def _assert_tree_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_import_iclsim_does_not_import_flax():
    code = (
        "import sys, iclsim, iclsim.linear, iclsim.parity, iclsim.linear.model, "
        "iclsim.parity.model; print(any(m == 'flax' or m.startswith('flax.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_flax_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "flax", None)  # makes `from flax import nnx` fail
    monkeypatch.setitem(sys.modules, "flax.nnx", None)
    monkeypatch.delitem(sys.modules, "iclsim.nn", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'iclsim\[flax\]'"):
        importlib.import_module("iclsim.nn")


# --------------------------------------------------------------------------------------
# LinearSelfAttention
# --------------------------------------------------------------------------------------


def _lsa_module(kind, seed=0):
    return nn.LinearSelfAttention(lsa.LSAConfig(D, 3, kind), rank=2, rngs=nnx.Rngs(seed), scale=0.7)


@needs_flax
@pytest.mark.parametrize("kind", ["full", "block", "reduced"])
def test_lsa_module_equals_pure_functions(kind):
    module = _lsa_module(kind)
    # Same draw as the pure init from the same key stream.
    want_params = lsa.init(nnx.Rngs(0).params(), lsa.LSAConfig(D, 3, kind), rank=2, scale=0.7)
    _assert_tree_equal(module.params, want_params)
    assert isinstance(module.rank_mask, nn.Mask) and not isinstance(module.rank_mask, nnx.Param)
    prompts = _linear_prompts(1)
    tokens = lsa.prompt_tokens(prompts)
    out = module(tokens)
    np.testing.assert_array_equal(out, lsa.lsa_layer(want_params, tokens))
    want = lsa.apply(want_params, prompts)
    np.testing.assert_array_equal(module.predict(prompts), want)
    np.testing.assert_allclose(lsa.read_prediction(out), want, rtol=0, atol=_tol(want))
    np.testing.assert_array_equal(module.effective_gamma(), lsa.effective_gamma(want_params))
    # from_params round trip (the engine's parameter dicts convert both ways).
    _assert_tree_equal(nn.LinearSelfAttention.from_params(want_params).params, want_params)


@needs_flax
@pytest.mark.parametrize("kind", ["full", "reduced"])
def test_lsa_module_split_merge_round_trip(kind):
    module = _lsa_module(kind, seed=3)
    graphdef, state = nnx.split(module)
    merged = nnx.merge(graphdef, state)
    tokens = lsa.prompt_tokens(_linear_prompts(2))
    np.testing.assert_array_equal(merged(tokens), module(tokens))
    _assert_tree_equal(merged.params, module.params)
    # The trainable state is exactly the weights; the mask is separate state.
    _, weights, masks = nnx.split(module, nnx.Param, nn.Mask)
    assert set(nnx.to_pure_dict(weights)) == set(module.params["weights"])
    assert set(nnx.to_pure_dict(masks)) == {"rank_mask"}


@needs_flax
@pytest.mark.parametrize("kind", ["full", "block", "reduced"])
def test_lsa_module_gradient_step_equals_pure_sgd(kind):
    module = _lsa_module(kind, seed=4)
    params = module.params
    prompts = _linear_prompts(5)
    tokens = lsa.prompt_tokens(prompts)

    def module_loss(m):
        return jnp.mean((lsa.read_prediction(m(tokens)) - prompts.y_query) ** 2)

    def pure_loss(weights):
        return jnp.mean((lsa.apply({**params, "weights": weights}, prompts) - prompts.y_query) ** 2)

    optimizer = nnx.Optimizer(module, optax.sgd(LR), wrt=nnx.Param)
    grads = nnx.grad(module_loss)(module)
    optimizer.update(module, grads)
    pure_grads = jax.grad(pure_loss)(params["weights"])
    for name, w in params["weights"].items():
        want = w - LR * pure_grads[name]
        got = module.params["weights"][name]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=_tol(want))
    np.testing.assert_array_equal(module.rank_mask.get_value(), params["rank_mask"])
    assert float(module_loss(module)) < float(pure_loss(params["weights"]))


@needs_flax
def test_lsa_modules_stack_in_sequential():
    layers = [_lsa_module("full", 6), _lsa_module("reduced", 7)]
    stack = nnx.Sequential(*layers)
    prompts = _linear_prompts(8)
    got = lsa.read_prediction(stack(lsa.prompt_tokens(prompts)))
    want = lsa.apply_stack([m.params for m in layers], prompts)
    np.testing.assert_allclose(got, want, rtol=0, atol=_tol(want))
    def loss(s):
        return jnp.mean((lsa.read_prediction(s(lsa.prompt_tokens(prompts))) - prompts.y_query) ** 2)

    grads = nnx.grad(loss)(stack)
    assert len(jax.tree_util.tree_leaves(grads)) == 5  # w_pv, a, b of the first; a, b of the second
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


# --------------------------------------------------------------------------------------
# ParityAttention
# --------------------------------------------------------------------------------------


def _parity_module(seed=0, heads=3):
    return nn.ParityAttention(PAR, heads=heads, rngs=nnx.Rngs(seed), scale=1.5)


@needs_flax
def test_parity_module_equals_pure_functions():
    module = _parity_module()
    want_params = pm.init(nnx.Rngs(0).params(), PAR, heads=3, scale=1.5)
    _assert_tree_equal(module.params, want_params)
    prompts = _parity_prompts(1)
    tokens = pm.prompt_tokens(prompts)
    out = module(tokens)
    np.testing.assert_array_equal(out, pm.parity_layer(want_params, tokens, PAR.k))
    want = pm.apply(want_params, prompts, PAR.k)
    np.testing.assert_array_equal(module.predict(prompts), want)
    np.testing.assert_allclose(pm.read_prediction(out), want, rtol=0, atol=_tol(want))
    back = nn.ParityAttention.from_params(want_params, PAR.k)
    _assert_tree_equal(back.params, want_params)
    assert back.k == PAR.k


@needs_flax
def test_parity_module_split_merge_round_trip():
    module = _parity_module(seed=2)
    graphdef, state = nnx.split(module)
    merged = nnx.merge(graphdef, state)
    tokens = pm.prompt_tokens(_parity_prompts(3))
    np.testing.assert_array_equal(merged(tokens), module(tokens))
    _assert_tree_equal(merged.params, module.params)
    assert merged.k == module.k
    _, weights, masks = nnx.split(module, nnx.Param, nn.Mask)
    assert set(nnx.to_pure_dict(weights)) == {"logits", "readout"}
    assert set(nnx.to_pure_dict(masks)) == {"head_mask"}


@needs_flax
def test_parity_module_gradient_step_equals_pure_sgd():
    module = _parity_module(seed=4)
    params = module.params
    prompts = _parity_prompts(5)
    tokens = pm.prompt_tokens(prompts)

    def module_loss(m):
        return jnp.mean((pm.read_prediction(m(tokens)) - prompts.y_query) ** 2)

    def pure_loss(weights):
        pred = pm.apply({**params, "weights": weights}, prompts, PAR.k)
        return jnp.mean((pred - prompts.y_query) ** 2)

    optimizer = nnx.Optimizer(module, optax.sgd(LR), wrt=nnx.Param)
    optimizer.update(module, nnx.grad(module_loss)(module))
    pure_grads = jax.grad(pure_loss)(params["weights"])
    for name, w in params["weights"].items():
        want = w - LR * pure_grads[name]
        got = module.params["weights"][name]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=_tol(want))
    # The masked head is untouched.
    np.testing.assert_array_equal(module.params["weights"]["readout"][3:], 0.0)
    np.testing.assert_array_equal(module.head_mask.get_value(), params["head_mask"])
