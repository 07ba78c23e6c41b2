"""Results labelled by their axes: ``to_xarray()`` of the train results, ``runs_dataset``.

The labelled values are checked against the oracle (an independent computation) and against
the flat run layout looked up by hand, never against the labelling code itself.
"""

import jax
import numpy as np
import pytest

from iclsim import linear, parity
from iclsim.engine.runner import runs_dataset


def test_runs_dataset_puts_each_run_at_its_scale_and_seed():
    run_scale, run_seed = np.repeat([2, 5, 7], 4), np.tile(np.arange(4), 3)
    value = np.arange(12 * 3, dtype=float).reshape(12, 3)
    words = [f"r{r}s{s}" for r, s in zip(run_scale, run_seed)]
    ds = runs_dataset("rank", run_scale, run_seed, {"v": value, "word": words},
                      trailing_dims={"v": ("col",)})
    assert ds.v.dims == ("rank", "seed", "col") and ds.word.dims == ("rank", "seed")
    for i, (r, s) in enumerate(zip(run_scale, run_seed)):
        np.testing.assert_array_equal(ds.v.sel(rank=r, seed=s).values, value[i])
        assert ds.word.sel(rank=r, seed=s).item() == f"r{r}s{s}"


@pytest.mark.parametrize("scale, seed", [
    (np.tile([1, 2], 2), np.repeat([0, 1], 2)),     # seed-major, not scale-major
    (np.array([1, 1, 2]), np.array([0, 1, 0])),      # an incomplete grid
])
def test_runs_dataset_refuses_a_layout_it_would_mislabel(scale, seed):
    with pytest.raises(ValueError, match="rank-major"):
        runs_dataset("rank", scale, seed, {"v": np.zeros(len(scale))})


def test_linear_result_labelled_by_rank_and_seed():
    cov, n = np.diag([2.0, 1.0, 0.3]), 10
    # Adam alone (no L-BFGS finish: a program that compiles in a fifth of the time) reaches
    # Γ_r to ~1e-6 on this well-conditioned d = 3 example in 300 steps.
    res = linear.train(jax.random.key(0), cov, n, [1, 3], seeds=2, mode="population",
                       steps=300, learning_rate=0.05, eval_prompts=256, loo=False,
                       sampler="statistic", adam_b1=0.9, average_tail=0.0, lbfgs_fraction=0.0)
    ds = res.to_xarray()
    assert dict(ds.sizes) == {"rank": 2, "seed": 2, "row": 3, "col": 3, "step": 300,
                              "ladder_rank": 4}
    np.testing.assert_allclose(ds.optimal_risk.values, linear.optimal_risks(cov, n), rtol=1e-6)
    for r in (1, 3):
        for s in (0, 1):
            # each labelled Γ is the oracle's rank-r optimum (float32 training; Γ_1 and Γ_3
            # are 1.7 apart in Frobenius norm, so a mislabelled rank fails by far)
            np.testing.assert_allclose(ds.gamma.sel(rank=r, seed=s).values,
                                       linear.optimal_gamma(cov, n, r), atol=2e-4)
            (i,) = np.flatnonzero((res.rank == r) & (res.seed == s))
            assert ds.verdict.sel(rank=r, seed=s).item() == res.verdict[i]
    assert ds.attrs["learning_rate"] == pytest.approx(0.05)


def test_parity_result_labelled_by_heads_and_seed():
    pi, n = [0.5, 0.3, 0.2], 8
    # Adam alone on the exact loss (no L-BFGS finish: a smaller program to compile) reaches
    # R_m to ~2e-5 relative in 400 steps; its verdicts are not_converged (that is the
    # finish's certificate, the subject of test_parity_training and
    # test_population_convergence): what is checked here is where each labelled run lands.
    res = parity.train(jax.random.key(0), pi, n, 2, [1, 2], seeds=2, mode="population",
                       steps=400, eval_prompts=256, lbfgs_fraction=0.0)
    ds = res.to_xarray()
    assert ds.risk.dims == ("heads", "seed") and ds.block_mass.dims[-2:] == ("head", "block")
    np.testing.assert_allclose(ds.optimal_risk.values,
                               [parity.optimal_risk(pi, n, m) for m in range(4)], rtol=1e-5)
    for m in (1, 2):
        for s in (0, 1):
            (i,) = np.flatnonzero((res.heads == m) & (res.seed == s))
            assert ds.verdict.sel(heads=m, seed=s).item() == res.verdict[i]
            np.testing.assert_array_equal(ds.risk.sel(heads=m, seed=s).values, res.risk[i])
            # each labelled risk is the oracle's R_m (R_1 = 0.56, R_2 = 0.32: far apart)
            np.testing.assert_allclose(ds.risk.sel(heads=m, seed=s).values,
                                       parity.optimal_risk(pi, n, m), rtol=1e-3)
            # the first m heads cover the top-m blocks (Theorem C)
            blocks = np.argmax(ds.block_mass.sel(heads=m, seed=s).values[:m], axis=1)
            assert sorted(blocks.tolist()) == list(range(m))
