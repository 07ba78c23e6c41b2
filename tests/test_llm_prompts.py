"""iclsim.llm.prompts: exact, balanced, nested flip counts; independent streams; prompt text."""

import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from iclsim.llm import prompts
from iclsim.llm.prompts import (
    build_prompt,
    continuations,
    corrupt_mask,
    corrupt_text,
    demonstration_indices,
    flip_mask,
    format_demo,
    format_query,
    query_indices,
    round_half_up,
)

KS = range(2, 33, 2)
PS = [i / 20 for i in range(21)] + [1 / 3, 0.125, 0.375, 0.35, 0.45]


def expected_count(p: float, k: int) -> int:
    """Independent half-up rounding through decimal arithmetic on the printed value of p."""
    return int((Decimal(repr(p)) * k).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def balanced_labels(k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat([0, 1], k // 2))


def test_round_half_up_is_not_bankers():
    assert [round_half_up(x) for x in (0.5, 1.5, 2.5, 3.5, 2.4999, 2.5001)] == [1, 2, 3, 4, 2, 3]
    assert round(2.5) == 2  # the trap: Python rounds half to even
    assert round_half_up(0.35 * 10) == 4  # 3.4999999999999996 in binary: still a half
    assert round_half_up(0.25 * 6) == 2  # 1.5 -> 2
    assert round_half_up(0.25 * 10) == 3  # 2.5 -> 3 (banker's: 2)


@pytest.mark.parametrize("k", KS)
def test_flip_counts_exact_and_balanced(k):
    labels = balanced_labels(k, k)
    for seed in range(3):
        for p in PS:
            for fn in (flip_mask, corrupt_mask):
                mask = fn(labels, p, seed)
                n = expected_count(p, k)
                assert mask.dtype == bool and mask.shape == (k,)
                assert mask.sum() == n, (fn.__name__, k, p)
                per_class = [int(mask[labels == c].sum()) for c in (0, 1)]
                assert abs(per_class[0] - per_class[1]) <= 1, (k, p, per_class)


def test_expected_count_examples():
    # the half-way cases that banker's rounding gets wrong
    assert expected_count(0.25, 6) == 2 and flip_mask(balanced_labels(6), 0.25, 0).sum() == 2
    assert expected_count(0.25, 10) == 3 and flip_mask(balanced_labels(10), 0.25, 0).sum() == 3
    assert expected_count(0.5, 2) == 1 and flip_mask(balanced_labels(2), 0.5, 0).sum() == 1


def test_odd_extra_goes_to_a_seed_chosen_class():
    labels = balanced_labels(6)
    classes = set()
    for seed in range(40):
        mask = flip_mask(labels, 0.5, seed)  # 3 flips: 2 + 1
        classes.add(int(np.argmax([mask[labels == c].sum() for c in (0, 1)])))
    assert classes == {0, 1}


@pytest.mark.parametrize("k", [4, 10, 16, 32])
def test_nested_in_p(k):
    labels = balanced_labels(k, 1)
    grid = sorted(set(PS))
    for seed in range(5):
        for fn in (flip_mask, corrupt_mask):
            masks = [fn(labels, p, seed) for p in grid]
            for small, large in zip(masks, masks[1:]):
                assert np.all(large[small]), (fn.__name__, seed)  # small is a subset of large


def test_deterministic_and_seed_dependent():
    labels = balanced_labels(16)
    pool = np.repeat([0, 1], 50)
    for fn, arg in ((flip_mask, 0.5), (corrupt_mask, 0.5)):
        assert np.array_equal(fn(labels, arg, 7), fn(labels, arg, 7))
        assert any(not np.array_equal(fn(labels, arg, 7), fn(labels, arg, s)) for s in range(8, 12))
    for fn in (demonstration_indices, query_indices):
        assert np.array_equal(fn(pool, 8, 3), fn(pool, 8, 3))
        assert not np.array_equal(fn(pool, 8, 3), fn(pool, 8, 4))


def test_flip_and_corrupt_are_independent_streams():
    k = 32
    labels = balanced_labels(k)
    # same seed, same fraction: masks must not coincide (they would if they shared a stream)
    same = [np.array_equal(flip_mask(labels, 0.5, s), corrupt_mask(labels, 0.5, s)) for s in range(50)]
    assert not any(same)
    # overlap of two independent exact-16-of-32 (8 per class) masks: hypergeometric per class,
    # mean 4 + 4 = 8, var 2 * 8*8*8*8/(16*16*15) = 2.133 -> sd of the mean of 400 seeds = 0.073
    overlap = np.array(
        [(flip_mask(labels, 0.5, s) & corrupt_mask(labels, 0.5, s)).sum() for s in range(400)]
    )
    assert abs(overlap.mean() - 8.0) < 4 * 0.073
    # and the demonstration choice does not move when the flip fraction changes (own stream)
    pool = np.repeat([0, 1], 40)
    assert np.array_equal(demonstration_indices(pool, 8, 5), demonstration_indices(pool, 8, 5))


def test_flip_positions_uniform():
    # every position is flipped equally often over seeds (1 flip per class of 4 at p = 0.25, k = 8)
    labels = balanced_labels(8)
    counts = sum(flip_mask(labels, 0.25, s).astype(int) for s in range(2000))
    # each position: Binomial(2000, 1/4), sd = sqrt(2000 * 3/16) = 19.4
    assert np.all(np.abs(counts - 500) < 5 * 19.4)


def test_demonstration_and_query_indices_balanced():
    pool = np.array([0] * 30 + [1] * 20)
    for k in KS:
        if k // 2 > 20:
            continue
        idx = demonstration_indices(pool, k, 2)
        assert len(idx) == k and len(set(idx.tolist())) == k
        assert (pool[idx] == 0).sum() == k // 2 == (pool[idx] == 1).sum()
    q = query_indices(pool, 10, 2)
    assert (pool[q] == 1).sum() == 5 and len(set(q.tolist())) == 10
    # the demonstration set is nested in k for a fixed seed
    assert set(demonstration_indices(pool, 4, 9)) <= set(demonstration_indices(pool, 12, 9))
    # the order is random: both classes appear first across seeds
    firsts = {int(pool[demonstration_indices(pool, 8, s)[0]]) for s in range(30)}
    assert firsts == {0, 1}
    with pytest.raises(ValueError, match="k must be an even"):
        demonstration_indices(pool, 3, 0)
    with pytest.raises(ValueError, match="pool has 20"):
        demonstration_indices(pool, 42, 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        flip_mask(balanced_labels(4), 1.5, 0)
    with pytest.raises(ValueError, match="seed must be"):
        flip_mask(balanced_labels(4), 0.5, -1)
    with pytest.raises(ValueError, match="labels must be"):
        flip_mask(np.array([0, 2]), 0.5, 0)


def test_corrupt_text():
    vocab = ("alpha", "beta")
    rng = np.random.default_rng(0)
    assert corrupt_text("a b c", 0.0, vocab, rng) == "a b c"
    out = corrupt_text("a b c d", 1.0, vocab, np.random.default_rng(1))
    assert all(w in vocab for w in out.split()) and len(out.split()) == 4
    # rate 0.3 over many words: about 30 % replaced (sd of the fraction sqrt(.21/5000) = 0.0065)
    words = " ".join(["x"] * 5000)
    out = corrupt_text(words, 0.3, vocab, np.random.default_rng(2)).split()
    assert abs(np.mean([w != "x" for w in out]) - 0.3) < 5 * 0.0065


def test_prompt_text_format():
    assert format_demo("Great film.", "positive") == "Review: Great film.\nSentiment: positive\n\n"
    assert format_query("Dull.") == "Review: Dull.\nSentiment:"
    assert continuations(("negative", "positive")) == (" negative", " positive")
    assert continuations(prompts.LABEL_WORDS["unrelated"]) == (" foo", " bar")
    text = build_prompt(["Good.", "Bad."], np.array([1, 0]), prompts.LABEL_WORDS["sentiment"])
    assert text == "Review: Good.\nSentiment: positive\n\nReview: Bad.\nSentiment: negative\n\n"
    # a whole prompt: prefix + query, then the continuation is scored right after "Sentiment:"
    full = text + format_query("Fine.") + continuations(("negative", "positive"))[1]
    assert full.endswith("Review: Fine.\nSentiment: positive")


def test_import_does_not_pull_torch():
    code = "import sys, iclsim.llm.prompts, iclsim.llm.stats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
