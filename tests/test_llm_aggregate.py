"""iclsim.llm.aggregate on hand-made results: means equal numpy's, and accuracy intervals stay
inside [0, 1] (the shrunk two-stage bootstrap can put a percentile just past 1)."""

import numpy as np
import xarray as xr

from iclsim.llm.aggregate import add_aggregates


def _result(correct):
    """A result with dims (model, task, k, label_words, input_noise, label_flip, seed, query)."""
    shape = correct.shape
    dims = ("model", "task", "k", "label_words", "input_noise", "label_flip", "seed", "query")
    coords = {"model": ["a"], "task": ["t0", "t1"][:shape[1]], "k": [8],
              "label_words": ["sentiment"], "input_noise": [0.0],
              "label_flip": [0.0, 0.5][:shape[5]], "seed": np.arange(shape[6]),
              "query": np.arange(shape[7])}
    run = shape[:-1]
    return xr.Dataset({
        "correct": (dims, correct.astype(float)),
        "margin": (dims, np.where(correct, 1.0, -1.0)),
        "present": (dims[:-1], np.ones(run, bool)),
        "diverged": (dims[:-1], np.zeros(run, bool)),
        "n_params": (dims[:-1], np.full(run, 1000)),
    }, coords=coords)


def test_means_equal_numpy_and_intervals_stay_in_range():
    rng = np.random.default_rng(0)
    correct = rng.random((1, 2, 1, 1, 1, 2, 3, 16)) < 0.97  # nearly all correct: near the edge
    correct[0, 0, 0, 0, 0, 0] = True  # one cell exactly 1.0
    ds = add_aggregates(_result(correct), n_boot=300)
    np.testing.assert_allclose(ds["acc_mean"].values, correct.mean(axis=(-1, -2)))
    for pre in ("acc", "pooled_acc"):
        lo, hi = ds[f"{pre}_lo"].values, ds[f"{pre}_hi"].values
        assert (lo >= 0).all() and (hi <= 1).all()
        assert (lo <= ds[f"{pre}_mean"].values + 1e-12).all()
        assert (hi >= ds[f"{pre}_mean"].values - 1e-12).all()
    drop = correct[..., 0, :, :].mean(axis=(-1, -2)) - correct[..., 1, :, :].mean(axis=(-1, -2))
    np.testing.assert_allclose(ds["sensitivity_mean"].values, drop)
    assert (ds["sensitivity_lo"].values >= -1).all() and (ds["sensitivity_hi"].values <= 1).all()
    # margins (not 0/1 data) are not clipped: here a percentile lands just above the largest
    # margin, 1, which is possible for the shrunk bootstrap and harmless for a margin
    assert float(ds["margin_hi"].max()) > 1.0
