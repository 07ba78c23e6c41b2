"""``train(..., progress=True)`` runs in chunks with a progress bar and gives the numbers of
the one-shot program to rounding (XLA may fuse a 45-step scan and the bar's fifteen 3-step
scans differently; the sweep engine's bitwise resume compares chunked with chunked).  The tests
run in float32, the dtype users run: 45 Adam steps of a few float32 roundings each drift by a
few 1e-6 relative (measured 1.9e-6); float64 bounds are kept for a run with x64 on."""

import pytest

import jax
import numpy as np

from iclsim import linear, parity


def test_linear_train_progress_is_the_same(capsys):
    cov = np.diag([2.0, 1.0, 0.5])
    kw = dict(mode="monte_carlo", parametrization="reduced", seeds=2, steps=45, batch=16,
              eval_prompts=256, learning_rate=0.01, loo=False, sampler="statistic", adam_b1=0.9, average_tail=0.0)
    quiet = linear.train(jax.random.key(0), cov, 5, [1, 3], **kw)
    shown = linear.train(jax.random.key(0), cov, 5, [1, 3], progress=True, **kw)
    rtol, atol = _rounding()
    np.testing.assert_allclose(shown.gamma, quiet.gamma, rtol=rtol, atol=atol)
    np.testing.assert_allclose(shown.loss, quiet.loss, rtol=rtol)
    assert "run-step" in capsys.readouterr().err


def _rounding():
    """(rtol, atol) of a few hundred roundings in the dtype JAX trains in (results are
    returned as numpy float64 either way)."""
    return (1e-12, 1e-14) if jax.config.jax_enable_x64 else (2e-5, 1e-7)


@pytest.mark.slow  # 15 s (the linear twin stays in the default run)
def test_parity_train_progress_is_the_same(capsys):
    pi = [0.5, 0.3, 0.2]
    kw = dict(mode="monte_carlo", seeds=1, steps=30, batch=16, eval_prompts=256)
    quiet = parity.train(jax.random.key(1), pi, 8, 2, [1, 2], **kw)
    shown = parity.train(jax.random.key(1), pi, 8, 2, [1, 2], progress=True, **kw)
    np.testing.assert_allclose(shown.loss, quiet.loss, rtol=_rounding()[0])
    assert "run-step" in capsys.readouterr().err
