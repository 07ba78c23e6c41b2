"""In-context prompts for the real-LM experiment: which demonstrations, which labels flipped,
which inputs corrupted, and the exact prompt text.

Everything random here is a pure function of ``seed`` through a numpy ``Generator`` seeded
from ``(seed, stream)``, with one fixed stream constant per purpose (demonstration choice,
query choice, label flips, input corruption).  The streams are independent, so changing the
flip fraction never changes which demonstrations are shown or which inputs are corrupted,
and a sweep over the flip fraction ``p`` at a fixed seed uses common random numbers: the
flipped set at a smaller ``p`` is a subset of the flipped set at a larger ``p`` (nesting),
so the accuracy curve over ``p`` is not blurred by re-drawing the demonstrations.

Counts are exact, not Bernoulli: ``round_half_up(p * k)`` labels are flipped, split across
the two classes as evenly as possible.  Python's ``round`` (and numpy's) rounds half to
even (``round(0.5 * 5) == 2``), which would make ``p = 0.5`` of ``k = 6`` flip 3 labels but
``p = 0.25`` of ``k = 10`` flip 2; we round half up instead, everywhere.

numpy only: importing this module does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "LABEL_WORDS",
    "round_half_up",
    "demonstration_indices",
    "query_indices",
    "flip_mask",
    "corrupt_mask",
    "corrupt_text",
    "format_demo",
    "format_query",
    "continuations",
    "build_prompt",
]

#: Label words per label-word set: index 0 is the word of class 0 (negative), 1 of class 1.
#: "unrelated" are semantically empty words, the paper's control for label-word priors.
LABEL_WORDS = {"sentiment": ("negative", "positive"), "unrelated": ("foo", "bar")}

# One stream constant per purpose (ASCII of a short tag), so the four draws never share
# random numbers: Generator(SeedSequence([seed, stream])).
_STREAM_DEMOS = 0x64656D6F  # "demo"
_STREAM_QUERIES = 0x71756572  # "quer"
_STREAM_FLIPS = 0x666C6970  # "flip"
_STREAM_CORRUPT = 0x636F7272  # "corr"


def _generator(seed: int, stream: int) -> np.random.Generator:
    """The numpy Generator of ``(seed, stream)``: independent across streams and seeds."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([int(seed), stream])


def _labels(labels) -> np.ndarray:
    """``labels`` as a 1-d int array of 0/1 (the class of each item)."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or not np.all((arr == 0) | (arr == 1)):
        raise ValueError("labels must be a 1-d array of 0 (negative) and 1 (positive)")
    return arr.astype(np.int64)


def round_half_up(x: float) -> int:
    """``floor(x + 1/2)``: 2.5 -> 3, 3.5 -> 4 (Python's ``round`` gives 2 and 4).

    A tolerance of 1e-9 absorbs binary representation error, so ``0.35 * 10`` (which is
    3.4999999999999996 in floating point) counts as the half it stands for and gives 4.
    """
    return int(math.floor(float(x) + 0.5 + 1e-9))


def _fraction(name: str, value) -> float:
    value = float(value)
    if not (0.0 <= value <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return value


def _balanced_indices(labels: np.ndarray, n: int, rng: np.random.Generator, what: str):
    """``n/2`` indices of each class (``n`` even), nested in ``n``, in random order."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 or n % 2:
        raise ValueError(f"{what} must be an even non-negative integer, got {n!r}")
    half = int(n) // 2
    chosen = []
    for c in (0, 1):
        members = np.flatnonzero(labels == c)
        if half > members.size:
            raise ValueError(
                f"{what} = {n} needs {half} items of class {c}, the pool has {members.size}"
            )
        chosen.append(rng.permutation(members)[:half])
    order = rng.permutation(2 * half)
    return np.concatenate(chosen)[order]


def demonstration_indices(labels, k: int, seed: int) -> np.ndarray:
    """Indices into the demonstration pool: ``k/2`` of each class, in random order.

    ``labels`` are the pool's true labels.  Depends on ``seed`` only (not on flip or
    corruption fractions); for a fixed seed the chosen SET is nested in ``k``.
    """
    return _balanced_indices(_labels(labels), k, _generator(seed, _STREAM_DEMOS), "k")


def query_indices(labels, n: int, seed: int) -> np.ndarray:
    """Indices into the query pool: ``n/2`` of each class, in random order (own stream)."""
    return _balanced_indices(_labels(labels), n, _generator(seed, _STREAM_QUERIES), "n")


def _class_counts(n: int, sizes: tuple[int, int], extra: int) -> tuple[int, int]:
    """Split ``n`` over the two classes as evenly as possible (odd: the extra to ``extra``),
    never more than a class has (overflow goes to the other class).  Monotone in ``n``."""
    counts = [n // 2, n // 2]
    counts[extra] += n % 2
    for c in (0, 1):
        over = counts[c] - sizes[c]
        if over > 0:
            counts[c] -= over
            counts[1 - c] += over
    return counts[0], counts[1]


def _exact_mask(labels, frac: float, seed: int, stream: int, name: str) -> np.ndarray:
    """Exactly ``round_half_up(frac * k)`` of the ``k`` items marked, balanced over the
    classes, nested in ``frac``: a per-class random order and which class takes an odd
    extra are drawn from ``(seed, stream)`` alone, and the first ``n_c`` of class ``c`` are
    marked."""
    labels = _labels(labels)
    frac = _fraction(name, frac)
    rng = _generator(seed, stream)
    extra = int(rng.integers(2))
    members = [np.flatnonzero(labels == c) for c in (0, 1)]
    orders = [rng.permutation(m) for m in members]
    n = round_half_up(frac * labels.size)
    counts = _class_counts(n, (members[0].size, members[1].size), extra)
    mask = np.zeros(labels.size, dtype=bool)
    for order, count in zip(orders, counts):
        mask[order[:count]] = True
    return mask


def flip_mask(labels, p: float, seed: int) -> np.ndarray:
    """Which demonstrations show the wrong label: exactly ``round_half_up(p * k)`` of the
    ``k = len(labels)``, split over the two classes as evenly as possible (an odd count gives
    the extra flip to a class chosen by ``seed``), nested in ``p`` for a fixed seed."""
    return _exact_mask(labels, p, seed, _STREAM_FLIPS, "p")


def corrupt_mask(labels, q: float, seed: int) -> np.ndarray:
    """Which demonstration inputs are corrupted: the rule of :func:`flip_mask` for the
    fraction ``q``, on an independent random stream (flips and corruption do not align)."""
    return _exact_mask(labels, q, seed, _STREAM_CORRUPT, "q")


def corrupt_text(text: str, rate: float, vocabulary: Sequence[str], rng: np.random.Generator) -> str:
    """``text`` with each word replaced, with probability ``rate``, by a uniformly drawn
    vocabulary word (input noise).  One uniform and one index are drawn per word whatever
    the outcome, so the draws of later words do not depend on ``rate``."""
    rate = _fraction("rate", rate)
    if len(vocabulary) == 0:
        raise ValueError("vocabulary must not be empty")
    words = text.split()
    u = rng.random(len(words))
    pick = rng.integers(len(vocabulary), size=len(words))
    return " ".join(vocabulary[j] if ui < rate else w for w, ui, j in zip(words, u, pick))


def format_demo(text: str, word: str) -> str:
    """One demonstration: ``"Review: {text}\\nSentiment: {word}\\n\\n"``."""
    return f"Review: {text}\nSentiment: {word}\n\n"


def format_query(text: str) -> str:
    """The query, ending where the label word is scored: ``"Review: {text}\\nSentiment:"``."""
    return f"Review: {text}\nSentiment:"


def continuations(words: Sequence[str]) -> tuple[str, ...]:
    """The scored continuation of each label word: a space then the word (``" negative"``)."""
    return tuple(" " + w for w in words)


def build_prompt(texts: Sequence[str], shown_labels, words: Sequence[str]) -> str:
    """The demonstration prefix: ``format_demo(text, words[label])`` concatenated in order.

    ``shown_labels`` are the labels as shown (after any flips), not the true ones.
    """
    shown = _labels(shown_labels)
    if len(texts) != shown.size:
        raise ValueError(f"texts and shown_labels differ in length: {len(texts)} != {shown.size}")
    return "".join(format_demo(t, words[int(c)]) for t, c in zip(texts, shown))
