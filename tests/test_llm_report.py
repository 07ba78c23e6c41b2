"""iclsim.llm.report on hand-made results: the size comparison is the paired t interval over
seeds of the difference of pooled drops, the verdict follows its sign, the power statement
is printed, and mixed model kinds are flagged."""

import numpy as np
import pytest
import xarray as xr

from iclsim.llm import stats
from iclsim.llm.aggregate import add_aggregates
from iclsim.llm.report import size_comparison, summary

DIMS = ("model", "task", "k", "label_words", "input_noise", "label_flip", "seed", "query")


def _result(correct, kinds=("instruct", "instruct")):
    """Two models (small: 1e8 parameters, big: 1e9) × 2 tasks × p in {0, 0.5}."""
    shape = correct.shape
    coords = {"model": ["small", "big"], "task": ["t0", "t1"], "k": [8],
              "label_words": ["sentiment"], "input_noise": [0.0], "label_flip": [0.0, 0.5],
              "seed": np.arange(shape[6]), "query": np.arange(shape[7])}
    run = shape[:-1]
    n_params = np.ones(run, np.int64)
    n_params[0], n_params[1] = 10**8, 10**9
    ds = xr.Dataset({
        "correct": (DIMS, correct.astype(float)),
        "margin": (DIMS, np.where(correct, 1.0, -1.0)),
        "present": (DIMS[:-1], np.ones(run, bool)),
        "diverged": (DIMS[:-1], np.zeros(run, bool)),
        "n_params": (DIMS[:-1], n_params),
    }, coords=coords)
    ds = ds.assign_coords(kind=("model", list(kinds)))
    return add_aggregates(ds)


def _correct(drop_small, drop_big, n_seeds=5, q=40, seed=0):
    rng = np.random.default_rng(seed)
    acc = np.array([0.8, 0.9])[:, None, None]  # small, big at p = 0
    drop = np.array([drop_small, drop_big])[:, None, None]
    p = np.stack([acc + 0 * drop, acc - drop], axis=-1)  # (model, 1, 1, flip)
    p = p + 0.03 * rng.standard_normal((2, 2, n_seeds, 2))  # (model, task, seed, flip)
    p = np.clip(p, 0, 1).transpose(0, 1, 3, 2)  # (model, task, flip, seed)
    c = rng.random((2, 2, 2, n_seeds, q)) < p[..., None]
    return c[:, :, None, None, None]  # (model, task, k, words, q, flip, seed, query)


@pytest.mark.parametrize("drops, word", [((0.0, 0.4), "SUPPORTED"),
                                         ((0.4, 0.0), "NOT SUPPORTED"),
                                         ((0.1, 0.1), "INCONCLUSIVE")])
def test_verdict_and_power_statement(drops, word):
    ds = _result(_correct(*drops))
    sel = dict(k=8, label_words="sentiment", input_noise=0.0)
    cmp = size_comparison(ds, **sel)
    c = ds["correct"].sel(**sel).transpose("model", "task", "label_flip", "seed", "query").values
    r = stats.drop_diff_ci(c[1, :, 0], c[1, :, 1], c[0, :, 0], c[0, :, 1])
    assert (cmp.big, cmp.small) == ("big", "small")
    assert (cmp.mean, cmp.lo, cmp.hi, cmp.n_seeds) == pytest.approx(r[:3] + (5,))
    # by hand: per seed, big's drop minus small's drop, each averaged over tasks
    d = (c[1, :, 0] - c[1, :, 1]).mean(axis=(0, 2)) - (c[0, :, 0] - c[0, :, 1]).mean(axis=(0, 2))
    assert cmp.sd == pytest.approx(d.std(ddof=1))
    text = summary(ds)
    line = next(t for t in text.splitlines() if t.startswith("k = 8, sentiment"))
    assert f": {word} (" in line
    assert "mixes model kinds" not in line
    power = stats.detectable_difference(d.std(ddof=1), 5)
    assert (f"with 5 seed(s) × 40 queries × 2 tasks this sweep detects a difference in "
            f"sensitivity of ≥ {power:.3f} with 80 % power (two-sided paired t test at the 5 % "
            f"level), from the measured seed-to-seed sd of the difference s_d = "
            f"{d.std(ddof=1):.3f}") in text
    assert "bootstrap" not in text and "Student t over seeds" in text


def test_mixed_kinds_and_one_seed():
    ds = _result(_correct(0.0, 0.4, n_seeds=1), kinds=("instruct", "base"))
    text = summary(ds)
    assert "big is base, small is instruct: the comparison mixes model kinds" in text
    assert "fewer than 2 seeds" in text
    cmp = size_comparison(ds, k=8, label_words="sentiment", input_noise=0.0)
    assert cmp.method == "newcombe" and cmp.lo < cmp.mean < cmp.hi


def test_verdict_rule():
    from iclsim.llm.report import Comparison, verdict

    base = dict(big="b", small="s", method="t", n_seeds=5, sd=0.1, detectable=0.2,
                big_kind="base", small_kind="base")
    assert verdict(Comparison(mean=0.1, lo=0.01, hi=0.2, **base)).startswith("SUPPORTED")
    assert verdict(Comparison(mean=0.1, lo=-0.01, hi=0.2, **base)).startswith("INCONCLUSIVE")
    assert verdict(Comparison(mean=-0.1, lo=-0.2, hi=-0.01, **base)).startswith("NOT SUPPORTED")


@pytest.mark.parametrize("drops, word, code", [((0.0, 0.4), "AGREES", 0),
                                               ((0.4, 0.0), "DIFFERS", 1),
                                               ((0.1, 0.1), "UNDECIDED", 0)])
def test_claim_as_verdict_parts_and_check_exit_code(drops, word, code):
    """The claim is one engine Verdict part per block; its interval is the paired t interval
    computed here with scipy from the per-seed differences, and --check's exit code follows."""
    from scipy import stats as sps

    from iclsim.engine.verdict import fold
    from iclsim.llm.report import verdict_parts

    ds = _result(_correct(*drops))
    c = ds["correct"].sel(k=8, label_words="sentiment", input_noise=0.0).transpose(
        "model", "task", "label_flip", "seed", "query").values
    d = (c[1, :, 0] - c[1, :, 1]).mean(axis=(0, 2)) - (c[0, :, 0] - c[0, :, 1]).mean(axis=(0, 2))
    half = sps.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    (part,) = verdict_parts(ds)
    assert part.statistic == pytest.approx(d.mean())
    assert part.interval == pytest.approx((d.mean() - half, d.mean() + half))
    result = fold([part], subject="the paper's claim")
    assert result.word == word and result.exit_code == code
    assert result.line in summary(ds)
