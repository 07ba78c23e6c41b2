"""The sentiment tasks: the VADER snippets of Hutto & Gilbert (ICWSM 2014), as binary tasks.

The label-flipping experiments run on real text.  The four human-rated
corpora shipped in the ``vaderSentiment==3.3.2`` source distribution (MIT licence;
``additional_resources/hutto_ICWSM_2014.tar.gz``) give four tasks with different domains:

=========  ======================================  ====================================
task       file                                    what
=========  ======================================  ====================================
movies     movieReviewSnippets_GroundTruth.txt     Rotten Tomatoes review snippets
products   amazonReviewSnippets_GroundTruth.txt    Amazon product review sentences
tweets     tweets_GroundTruth.txt                  tweets
nyt        nytEditorialSnippets_GroundTruth.txt    New York Times opinion sentences
=========  ======================================  ====================================

Each file has one row per snippet: ID, mean rating of about 20 raters on -4..4, text, tab
separated, CRLF line ends.  Files are decoded as UTF-8 with ``errors="replace"`` (movies and
tweets hold some UTF-8, the others are ASCII; all four decode cleanly, so no character is
replaced in the real data), HTML entities are unescaped (tweets write ``&amp;``) and
surrounding whitespace is stripped.

Some snippets occur more than once (extra rows: movies 2, products 11, nyt 71, and tweets
60 that differ only in case; products 1 and nyt 14 of them with ratings of opposite sign): only the first row of each text
(compared case-insensitively, whitespace collapsed) is used, so no text can be both a
demonstration and a query.

Labels: 1 = positive (rating > 0), 0 = negative (rating < 0).  A snippet is kept when its
rating is clearly on one side, ``|rating| >= margin`` (a rating of exactly 0 is never kept),
and when it has ``3 <= words <= max_words`` whitespace-separated words (long snippets make
prompts of k demonstrations too long for small models).  The classes are then balanced (a
fixed random subset of the larger class, the size of the smaller) and each class is split
half / half into a demonstration pool and a query pool, by ``numpy.random.default_rng`` with
a fixed seed per task -- independent of any sweep seed, so every sweep, model and seed draws
demonstrations and queries from the same two disjoint pools.  An odd class count drops one
snippet, so both pools are exactly balanced.

Measured counts with the defaults (margin 1.0, max_words 40), data as fetched 2026-11-30:

=========  =====  ========  ===========  ===========  ========  ========  =========  ==================
task       rows   distinct  kept margin  kept length  negative  positive  per class  per pool per class
=========  =====  ========  ===========  ===========  ========  ========  =========  ==================
movies     10605     10603         9171         9006      4491      4515       4491                2245
products    3708      3697         2447         2300       880      1420        880                 440
tweets      4200      4140         2607         2578       797      1781        797                 398
nyt         5190      5119         1530         1490       956       534        534                 267
=========  =====  ========  ===========  ===========  ========  ========  =========  ==================

So the demonstration and query pools hold 4490 / 880 / 796 / 534 snippets each (movies /
products / tweets / nyt), half of each class.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iclsim.llm.errors import LLMError
from iclsim.llm.models import cache_dir

TASKS = ("movies", "products", "tweets", "nyt")

DATA_PACKAGE = "vaderSentiment==3.3.2"

# task -> (file name, sha256 of the file as it is inside the sdist)
DATA_FILES = {
    "movies": ("movieReviewSnippets_GroundTruth.txt",
               "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"),
    "products": ("amazonReviewSnippets_GroundTruth.txt",
                 "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2"),
    "tweets": ("tweets_GroundTruth.txt",
               "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f"),
    "nyt": ("nytEditorialSnippets_GroundTruth.txt",
            "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e"),
}

# The split's seed: a fixed constant (the year and number of the VADER paper), combined with
# the task's index, so the pools never depend on a sweep seed.
SPLIT_SEED = 2014_8550

MIN_WORDS = 3

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")


def data_dir() -> Path:
    """Where ``iclsim llm fetch data`` puts the four GroundTruth files."""
    return cache_dir() / "data" / "vader-3.3.2"


#: A file of this name in the data folder marks hand-made (test) data: its files are hashed
#: into the result key but not checked against the pins of :data:`DATA_FILES`.
UNPINNED = "iclsim-unpinned-data"


def data_sha256(tasks) -> dict:
    """``{file name: "sha256:<hex>"}`` of the data file of each task in ``tasks`` (what a
    sweep reads), each checked against its pin in :data:`DATA_FILES`: a file changed since
    ``iclsim llm fetch data`` is a one-line :class:`LLMError` (not checked, and
    ``"unpinned": True`` added, when the folder holds a file named :data:`UNPINNED`).
    Hashes are remembered across processes (:func:`iclsim.llm.cache.file_sha256`)."""
    from iclsim.llm.cache import file_sha256

    unpinned = (data_dir() / UNPINNED).exists()
    out: dict = {"unpinned": True} if unpinned else {}
    for task in sorted(set(tasks)):
        if task not in DATA_FILES:
            raise LLMError(f"unknown task {task!r}; tasks are " + ", ".join(TASKS))
        fn, pinned = DATA_FILES[task]
        path = data_dir() / fn
        if not path.is_file():
            raise LLMError(f"data for task {task!r} is not in the cache ({path}); run: iclsim "
                           "llm fetch data")
        digest = file_sha256(path)
        if digest != pinned and not unpinned:
            raise LLMError(f"data file {path} changed since fetch: sha256 {digest}, expected "
                           f"{pinned}; rerun iclsim llm fetch data")
        out[fn] = "sha256:" + digest
    return out


@dataclass(frozen=True)
class Task:
    """One binary sentiment task: a demonstration pool and a disjoint query pool.

    Labels are read-only int8 arrays (0 = negative, 1 = positive), each pool exactly
    balanced.  ``vocabulary`` is the sorted distinct lower-case words (letters/digits, inner
    apostrophes kept) of the demonstration pool, which input-noise corruption draws from.
    ``counts`` records the filtering: rows, distinct, kept_margin, kept_length, negative, positive
    (after both filters), per_class (after balancing), demo_per_class, query_per_class,
    demo, query.
    """

    name: str
    demo_texts: tuple[str, ...]
    demo_labels: np.ndarray
    query_texts: tuple[str, ...]
    query_labels: np.ndarray
    vocabulary: tuple[str, ...]
    counts: dict


def read_ground_truth(path: Path) -> tuple[list[str], np.ndarray]:
    """Texts and mean ratings of one ``*_GroundTruth.txt`` file (rows: ID, rating, text)."""
    texts, ratings = [], []
    raw = path.read_bytes().decode("utf-8", errors="replace")
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            if len(parts) != 3:
                raise ValueError
            rating = float(parts[1])
            if not math.isfinite(rating):
                raise ValueError
        except ValueError:
            raise LLMError(f"{path}:{lineno}: expected 'ID<tab>rating<tab>text'") from None
        texts.append(html.unescape(parts[2]).strip())
        ratings.append(rating)
    return texts, np.asarray(ratings, dtype=np.float64)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def load_task(name: str, *, margin: float = 1.0, max_words: int = 40, data_dir=None) -> Task:
    """Load task ``name`` (one of :data:`TASKS`) from the fetched data (or ``data_dir``).

    Deterministic: the same arguments give the same Task on every call and machine.
    """
    if name not in TASKS:
        raise LLMError(f"unknown task {name!r}; tasks are " + ", ".join(TASKS))
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise LLMError(f"margin must be a finite number >= 0, got {margin!r}")
    if not (isinstance(max_words, int) and max_words >= MIN_WORDS):
        raise LLMError(f"max_words must be an integer >= {MIN_WORDS}, got {max_words!r}")
    folder = Path(data_dir) if data_dir is not None else globals()["data_dir"]()
    path = folder / DATA_FILES[name][0]
    if not path.is_file():
        if data_dir is None:
            raise LLMError(f"data for task {name!r} is not in the cache ({path}); run: iclsim llm fetch data")
        raise LLMError(f"data for task {name!r} not found: {path} does not exist")

    texts, ratings = read_ground_truth(path)
    seen: set[str] = set()
    first = np.zeros(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        key = " ".join(t.casefold().split())
        first[i] = key not in seen
        seen.add(key)
    n_words = np.array([len(t.split()) for t in texts])
    by_margin = first & (np.abs(ratings) >= margin) & (ratings != 0)
    keep = by_margin & (n_words >= MIN_WORDS) & (n_words <= max_words)
    labels = (ratings > 0).astype(np.int8)

    rng = np.random.default_rng([SPLIT_SEED, TASKS.index(name)])
    idx = [np.flatnonzero(keep & (labels == c)) for c in (0, 1)]
    per_class = min(len(i) for i in idx)
    half = per_class // 2
    demo, query = [], []
    for c in (0, 1):
        chosen = rng.permutation(idx[c])[: 2 * half]  # balance, and drop one if odd
        demo.append(chosen[:half])
        query.append(chosen[half:])
    demo_idx = np.sort(np.concatenate(demo))  # file order inside a pool: easy to inspect
    query_idx = np.sort(np.concatenate(query))

    demo_texts = tuple(texts[i] for i in demo_idx)
    vocabulary = tuple(sorted({w for t in demo_texts for w in _WORD.findall(t.lower())}))
    counts = {
        "rows": len(texts),
        "distinct": int(first.sum()),
        "kept_margin": int(by_margin.sum()),
        "kept_length": int(keep.sum()),
        "negative": len(idx[0]),
        "positive": len(idx[1]),
        "per_class": per_class,
        "demo_per_class": half,
        "query_per_class": half,
        "demo": 2 * half,
        "query": 2 * half,
    }
    return Task(
        name=name,
        demo_texts=demo_texts,
        demo_labels=_readonly(labels[demo_idx].copy()),
        query_texts=tuple(texts[i] for i in query_idx),
        query_labels=_readonly(labels[query_idx].copy()),
        vocabulary=vocabulary,
        counts=counts,
    )
