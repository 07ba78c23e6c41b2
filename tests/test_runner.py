"""``train(..., progress=True)`` runs in chunks with a progress bar and gives the numbers of
the one-shot program (to float64 rounding: XLA may fuse a 45-step scan and three 15-step scans
differently; the sweep engine's bitwise resume compares chunked with chunked)."""

import pytest

import jax
import numpy as np

from iclsim import linear, parity


def test_linear_train_progress_is_the_same(capsys):
    cov = np.diag([2.0, 1.0, 0.5])
    kw = dict(mode="monte_carlo", parametrization="reduced", seeds=2, steps=45, batch=16,
              eval_prompts=256)
    quiet = linear.train(jax.random.key(0), cov, 5, [1, 3], **kw)
    shown = linear.train(jax.random.key(0), cov, 5, [1, 3], progress=True, **kw)
    np.testing.assert_allclose(shown.gamma, quiet.gamma, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(shown.loss, quiet.loss, rtol=1e-12)
    assert "run-step" in capsys.readouterr().err


@pytest.mark.slow  # 15 s (the linear twin stays in the default run)
def test_parity_train_progress_is_the_same(capsys):
    pi = [0.5, 0.3, 0.2]
    kw = dict(mode="monte_carlo", seeds=1, steps=30, batch=16, eval_prompts=256)
    quiet = parity.train(jax.random.key(1), pi, 8, 2, [1, 2], **kw)
    shown = parity.train(jax.random.key(1), pi, 8, 2, [1, 2], progress=True, **kw)
    np.testing.assert_allclose(shown.loss, quiet.loss, rtol=1e-12)
    assert "run-step" in capsys.readouterr().err
