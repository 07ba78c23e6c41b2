"""iclsim.llm.aggregate on hand-made results: means equal numpy's, the intervals are the t
intervals over seeds of iclsim.llm.stats (pooled: a seed's value averaged over tasks), an
all-correct cell gets the Wilson interval (not zero width), and left-out runs are left out."""

import numpy as np
import pytest
import xarray as xr
from scipy import stats as sps

from iclsim.llm import stats
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


def test_means_and_intervals_equal_the_t_intervals_over_seeds():
    rng = np.random.default_rng(0)
    correct = rng.random((1, 2, 1, 1, 1, 2, 3, 16)) < 0.8
    correct[0, 0, 0, 0, 0, 0] = True  # one cell all correct: the Wilson fallback
    ds = add_aggregates(_result(correct))
    c = correct[0, :, 0, 0, 0].astype(float)  # (task, flip, seed, query)
    np.testing.assert_allclose(ds["acc_mean"].values, correct.mean(axis=(-1, -2)))
    acc = ds["acc_mean"].isel(model=0, k=0, label_words=0, input_noise=0)
    lo = ds["acc_lo"].isel(model=0, k=0, label_words=0, input_noise=0)
    hi = ds["acc_hi"].isel(model=0, k=0, label_words=0, input_noise=0)
    # every cell: the stats interval; seeds are the units
    for t in range(2):
        for f in range(2):
            r = stats.accuracy_ci(c[t, f])
            assert (float(acc[t, f]), float(lo[t, f]), float(hi[t, f])) == pytest.approx(
                r[:3])
    # the all-correct cell: Wilson on 48/48, not the single point [1, 1]
    assert float(hi[0, 0]) == 1.0 and float(lo[0, 0]) == pytest.approx(stats.wilson(48, 48)[0])
    # t by hand on a cell with spread
    units = c[1, 1].mean(axis=1)
    half = sps.t.ppf(0.975, 2) * units.std(ddof=1) / np.sqrt(3)
    assert units.std() > 0
    assert float(hi[1, 1]) == pytest.approx(min(1.0, units.mean() + half))
    # pooled: a seed's accuracy averaged over the two tasks is the unit (3 units, not 6)
    pooled = stats.accuracy_ci(c[:, 1])
    assert pooled.n_seeds == 3
    p = ds["pooled_acc_lo"].isel(model=0, k=0, label_words=0, input_noise=0, label_flip=1)
    assert float(p) == pytest.approx(pooled.lo)
    assert float(p) != pytest.approx(stats.accuracy_ci(c[:, 1].reshape(6, 16)).lo)
    # sensitivity: paired over seeds
    s = stats.paired_diff_ci(c[:, 0], c[:, 1])
    assert float(ds["pooled_sensitivity_lo"].squeeze()) == pytest.approx(s.lo)
    assert float(ds["pooled_sensitivity_hi"].squeeze()) == pytest.approx(s.hi)
    drop = correct[..., 0, :, :].mean(axis=(-1, -2)) - correct[..., 1, :, :].mean(axis=(-1, -2))
    np.testing.assert_allclose(ds["sensitivity_mean"].values, drop)
    for pre in ("acc", "pooled_acc", "sensitivity", "pooled_sensitivity", "margin"):
        assert (ds[f"{pre}_lo"].values <= ds[f"{pre}_mean"].values + 1e-12).all()
        assert (ds[f"{pre}_hi"].values >= ds[f"{pre}_mean"].values - 1e-12).all()
        assert "t interval over seeds" in ds[f"{pre}_lo"].attrs["long_name"]
    assert (ds["acc_lo"].values >= 0).all() and (ds["acc_hi"].values <= 1).all()
    assert (ds["sensitivity_lo"].values >= -1).all() and (ds["sensitivity_hi"].values <= 1).all()
    assert ds.attrs["interval_method"] == stats.METHOD
    # margins are continuous: not clipped to the data's range, the interval of the means
    r = stats.mean_ci(np.where(c[1, 1], 1.0, -1.0))
    assert float(ds["margin_hi"].isel(model=0, k=0, label_words=0, input_noise=0)[1, 1]) \
        == pytest.approx(r.hi)


def test_left_out_runs():
    rng = np.random.default_rng(1)
    correct = rng.random((1, 2, 1, 1, 1, 2, 4, 16)) < 0.7
    res = _result(correct)
    res["present"][0, 0, 0, 0, 0, 0, 3] = False  # task t0, p = 0, seed 3: missing
    res["correct"][0, 0, 0, 0, 0, 0, 3] = np.nan
    res["diverged"][0, 1, 0, 0, 0, 1, 0] = True  # task t1, p = 0.5, seed 0: diverged
    ds = add_aggregates(res)
    c = correct[0, :, 0, 0, 0].astype(float)
    r = stats.accuracy_ci(c[0, 0, :3])
    assert float(ds["acc_mean"][0, 0, 0, 0, 0, 0]) == pytest.approx(r.mean)
    assert float(ds["acc_lo"][0, 0, 0, 0, 0, 0]) == pytest.approx(r.lo)
    keep = np.ones((2, 4), bool)
    keep[0, 3] = False
    r = stats.accuracy_ci(c[:, 0], keep=keep)  # seed 3 has only task t1
    assert float(ds["pooled_acc_mean"][0, 0, 0, 0, 0]) == pytest.approx(r.mean)
    assert float(ds["pooled_acc_hi"][0, 0, 0, 0, 0]) == pytest.approx(r.hi)
    # sensitivity: a run left out at either p leaves the (task, seed) pair out
    both = keep.copy()
    both[1, 0] = False
    r = stats.paired_diff_ci(c[:, 0], c[:, 1], keep=both)
    assert float(ds["pooled_sensitivity_lo"].squeeze()) == pytest.approx(r.lo)
    assert np.isfinite(ds["pooled_sensitivity_mean"].values).all()
