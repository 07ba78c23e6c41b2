"""iclsim.llm.data: filters, balance and the fixed split, on a small fake GroundTruth folder.

Each fake row carries its expected fate (dropped by the margin, by the length, or kept with
its label) in the test's own table, so the code's filtering is compared with a hand-made
answer, not with itself.  One test reads the real data when it is in the cache and checks
the counts written in the module docstring.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from iclsim.llm import data
from iclsim.llm.errors import LLMError


def _words(n: int, tag: str) -> str:
    return " ".join([tag] + [f"w{i}" for i in range(n - 1)])


def _rows():
    """(rating, text, expected) with expected None (dropped) or the label 0/1; margin 1, max 6 words."""
    rows = []
    k = 0

    def add(rating, n_words, expected):
        nonlocal k
        k += 1
        rows.append((rating, _words(n_words, f"t{k}"), expected))

    add(0.99, 4, None)     # below the margin
    add(-0.99, 4, None)
    add(0.0, 4, None)      # never a label
    add(1.0, 4, 1)         # the margin is inclusive
    add(-1.0, 4, 0)
    add(2.5, 2, None)      # too short
    add(-2.5, 7, None)     # too long
    add(2.5, 3, 1)         # 3 and 6 words are inclusive
    add(-2.5, 6, 0)
    for i in range(9):
        add(1.5 + 0.1 * i, 5, 1)
    for i in range(4):
        add(-1.5 - 0.1 * i, 5, 0)
    return rows   # kept: 11 positive, 6 negative -> 6 per class, 3 + 3 per pool


@pytest.fixture
def folder(tmp_path):
    rows = _rows()
    for task, (fn, _) in data.DATA_FILES.items():
        lines = [f"{i + 1}\t{r}\t{t}" for i, (r, t, _) in enumerate(rows)]
        (tmp_path / fn).write_bytes("\r\n".join(lines).encode())
    return tmp_path


def _load(folder, task="movies", **kw):
    kw.setdefault("max_words", 6)
    return data.load_task(task, data_dir=folder, **kw)


def test_filters_and_labels_match_the_hand_made_answer(folder):
    expected = {t: e for _, t, e in _rows() if e is not None}
    task = _load(folder)
    texts = task.demo_texts + task.query_texts
    labels = np.concatenate([task.demo_labels, task.query_labels])
    assert set(texts) <= set(expected)
    assert all(expected[t] == y for t, y in zip(texts, labels))
    assert task.counts == {"rows": len(_rows()), "distinct": len(_rows()), "kept_margin": 19, "kept_length": 17,
                           "negative": 6, "positive": 11, "per_class": 6,
                           "demo_per_class": 3, "query_per_class": 3, "demo": 6, "query": 6}
    # every negative survives balancing (the smaller class): all six are used
    assert sorted(t for t, y in zip(texts, labels) if y == 0) == sorted(
        t for t, e in expected.items() if e == 0)


def test_pools_are_balanced_disjoint_and_fixed(folder):
    a, b = _load(folder), _load(folder)
    np.random.seed(123)  # the global numpy state plays no part
    c = _load(folder)
    for t in (b, c):
        assert t.demo_texts == a.demo_texts and t.query_texts == a.query_texts
        np.testing.assert_array_equal(t.demo_labels, a.demo_labels)
        np.testing.assert_array_equal(t.query_labels, a.query_labels)
    assert not set(a.demo_texts) & set(a.query_texts)
    for labels in (a.demo_labels, a.query_labels):
        assert labels.dtype == np.int8 and np.bincount(labels, minlength=2).tolist() == [3, 3]
        assert not labels.flags.writeable


def test_the_split_differs_between_tasks_but_uses_the_same_rows(folder):
    # same file content under two task names: a seed per task gives a different split
    splits = {_load(folder, t).demo_texts for t in data.TASKS}
    assert len(splits) > 1


def test_an_odd_class_count_drops_one_to_keep_pools_balanced(folder):
    task = _load(folder, margin=1.65)   # positives 1.7..2.3 and 2.5 (8 rows); negatives -1.7, -1.8, -2.5 (3)
    assert task.counts["per_class"] == 3 and task.counts["demo"] == 2 and task.counts["query"] == 2


def test_max_words_widens_the_length_filter(folder):
    assert _load(folder, max_words=7).counts["kept_length"] == 18


def test_vocabulary_is_the_demo_pool_words(folder):
    task = _load(folder)
    expected = sorted({w.lower() for t in task.demo_texts for w in t.split()})
    assert list(task.vocabulary) == expected
    assert not set(task.vocabulary) & {t.split()[0] for t in task.query_texts}


def test_duplicate_texts_count_once(tmp_path):
    fn = data.DATA_FILES["products"][0]
    rows = [(2.0, f"good thing number {i}") for i in range(4)] + [(-2.0, f"bad thing number {i}") for i in range(4)]
    rows += [(-2.0, "GOOD  thing number 0"), (2.0, "bad thing number 1")]  # repeats (case, spaces)
    (tmp_path / fn).write_bytes("\r\n".join(f"{i}\t{r}\t{t}" for i, (r, t) in enumerate(rows)).encode())
    task = data.load_task("products", data_dir=tmp_path)
    assert task.counts["rows"] == 10 and task.counts["distinct"] == 8
    assert (task.counts["negative"], task.counts["positive"]) == (4, 4)
    assert "GOOD  thing number 0" not in task.demo_texts + task.query_texts


def test_decoding_crlf_utf8_invalid_bytes_and_entities(tmp_path):
    fn = data.DATA_FILES["tweets"][0]
    raw = ("1\t2.0\tcafé au lait good\r\n"
           "2\t-2.0\tbad &amp; worse here\r\n").encode() + b"3\t2.0\tbroken \xff byte here\r\n"
    (tmp_path / fn).write_bytes(raw)
    texts, ratings = data.read_ground_truth(tmp_path / fn)
    assert texts == ["café au lait good", "bad & worse here", "broken \ufffd byte here"]
    assert ratings.tolist() == [2.0, -2.0, 2.0]


def test_a_malformed_row_names_file_and_line(tmp_path):
    fn = data.DATA_FILES["nyt"][0]
    (tmp_path / fn).write_bytes(b"1\t2.0\tfine text here\r\n2\tnot-a-number\ttext\r\n")
    with pytest.raises(LLMError, match=re.escape(f"{fn}:2:")):
        data.load_task("nyt", data_dir=tmp_path)


@pytest.mark.parametrize("kw, needle", [
    ({"name": "imdb"}, "tasks are movies, products, tweets, nyt"),
    ({"margin": -1.0}, "margin"),
    ({"margin": float("nan")}, "margin"),
    ({"max_words": 2}, "max_words"),
])
def test_bad_arguments_are_one_line_errors(folder, kw, needle):
    kw = {"name": "movies", "data_dir": folder, **kw}
    with pytest.raises(LLMError) as exc:
        data.load_task(kw.pop("name"), **kw)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_not_fetched_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLSIM_CACHE", str(tmp_path / "empty"))
    with pytest.raises(LLMError) as exc:
        data.load_task("movies")
    assert str(exc.value).endswith("run: iclsim llm fetch data")
    with pytest.raises(LLMError, match="does not exist"):
        data.load_task("movies", data_dir=tmp_path)


# the counts in the module docstring (margin 1.0, max_words 40)
REAL_COUNTS = {  # rows, distinct, kept_margin, kept_length, negative, positive, per pool per class
    "movies": (10605, 10603, 9171, 9006, 4491, 4515, 2245),
    "products": (3708, 3697, 2447, 2300, 880, 1420, 440),
    "tweets": (4200, 4140, 2607, 2578, 797, 1781, 398),
    "nyt": (5190, 5119, 1530, 1490, 956, 534, 267),
}


@pytest.mark.parametrize("name", data.TASKS)
def test_real_data_counts(name):
    if not all((data.data_dir() / fn).is_file() for fn, _ in data.DATA_FILES.values()):
        pytest.skip(f"the VADER data is not in the cache ({data.data_dir()}); run: iclsim llm fetch data")
    task = data.load_task(name)
    c = task.counts
    print(name, c)
    assert (c["rows"], c["distinct"], c["kept_margin"], c["kept_length"], c["negative"],
            c["positive"], c["demo_per_class"]) == REAL_COUNTS[name]
    assert c["per_class"] == min(c["negative"], c["positive"])
    for labels in (task.demo_labels, task.query_labels):
        assert np.bincount(labels).tolist() == [c["demo_per_class"]] * 2
    key = lambda t: " ".join(t.casefold().split())  # noqa: E731
    assert not {key(t) for t in task.demo_texts} & {key(t) for t in task.query_texts}
    assert all(3 <= len(t.split()) <= 40 for t in task.demo_texts + task.query_texts)
    # the docstring table states these same numbers
    row = re.findall(rf"^{name}\s+([0-9 ]+)$", data.__doc__, re.M)[-1].split()
    assert [int(x) for x in row] == [c["rows"], c["distinct"], c["kept_margin"], c["kept_length"],
                                     c["negative"], c["positive"], c["per_class"], c["demo_per_class"]]
