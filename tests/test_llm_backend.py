"""iclsim.llm.backend on tiny random-weight Llamas built in code (no files), with a
character tokenizer and with a byte-level BPE that merges across the prefix/query join as
SmolLM2's does: the scored ids are the whole text's tokenization, cached == uncached, batch
sizes agree, multi-token scoring equals a hand computation on the whole text, and bad label
words / folders fail in one line.  The same checks on the real SmolLM2 tokenizer and model:
tests/test_llm_real.py."""

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from iclsim.llm.backend import load, tiny_llama  # noqa: E402
from iclsim.llm.errors import LLMError  # noqa: E402
from iclsim.llm.prompts import build_prompt, continuations, format_query  # noqa: E402
from llm_reference import whole_text_logprob  # noqa: E402

WORDS = ("negative", "positive")
CONTS = continuations(WORDS)
QUERIES = [
    format_query("bad"),
    format_query("a much longer query with many more characters in it"),
    format_query("ok"),
    format_query("the film was fine, I guess"),
    format_query("no"),
    format_query("awful"),
    format_query("great fun"),
]


@pytest.fixture(scope="module", params=["chars", "bpe"])
def lm(request):
    return tiny_llama(0, vocab=request.param)


@pytest.fixture(scope="module")
def prefix_text():
    return build_prompt(["good film", "bad film", "fine"], np.array([1, 0, 1]), WORDS)


def hand_score(lm, prefix_text, query, cont):
    """Independent computation (tests/llm_reference.py): the whole text tokenized at once,
    one unpadded uncached forward pass, the tokens reaching into the continuation by their
    character offsets."""
    return whole_text_logprob(lm, prefix_text + query, cont)


def test_tokenizers_add_their_own_start_token_only(lm):
    if not lm.name.endswith("-bpe"):
        assert len(lm.tokens(" negative")) == 9  # one token per character
    assert lm.encode("ab")[0] == lm.tokenizer.bos_token_id
    assert lm.encode("ab")[1:] == lm.tokens("ab")
    assert lm.n_tail == 0


def test_bpe_tokenizer_merges_across_the_join():
    """Power check: on the BPE test tokenizer the prefix and query tokenized apart are NOT
    the whole text's ids (as for SmolLM2), so the tests below can see a join bug."""
    lm = tiny_llama(0, vocab="bpe")
    prefix = build_prompt(["good film"], np.array([1]), WORDS)
    apart = lm.encode(prefix) + lm.tokens(QUERIES[0]) + lm.tokens(CONTS[0])
    assert apart != lm.encode(prefix + QUERIES[0] + CONTS[0])


def test_scored_ids_are_the_whole_text(lm, prefix_text):
    """Every scored sequence is tokenizer(prefix + query + continuation), nothing else."""
    pre = lm.prefix(prefix_text)
    for row, q in zip(lm.scored_sequences(pre, QUERIES, CONTS), QUERIES):
        for seq, c in zip(row, CONTS):
            assert list(seq.ids) == lm.tokenizer(prefix_text + q + c)["input_ids"]
            assert seq.end == len(seq.ids) and 0 < seq.start < seq.end


def test_multi_token_scoring_matches_hand_computation(lm, prefix_text):
    scores = lm.score(lm.prefix(prefix_text), QUERIES[:3], CONTS, batch=3)
    for i, q in enumerate(QUERIES[:3]):
        for j, c in enumerate(CONTS):
            assert scores[i, j] == pytest.approx(hand_score(lm, prefix_text, q, c), abs=1e-4)
    # and the model is not degenerate: the two continuations differ
    assert np.all(np.abs(scores[:, 0] - scores[:, 1]) > 1e-3)


def test_cached_equals_uncached(lm, prefix_text):
    cached = lm.score(lm.prefix(prefix_text), QUERIES, CONTS, batch=4)
    scratch = lm.score(lm.prefix(prefix_text, cache=False), QUERIES, CONTS, batch=4)
    assert cached.dtype == np.float64 and cached.shape == (len(QUERIES), 2)
    np.testing.assert_allclose(cached, scratch, atol=1e-5, rtol=0)
    # no prefix at all: the query and continuation as one text, checked by hand
    none = lm.score(None, QUERIES[:2], CONTS)
    assert none[0, 1] == pytest.approx(hand_score(lm, "", QUERIES[0], CONTS[1]), abs=1e-4)


def test_batch_sizes_agree(lm, prefix_text):
    pre = lm.prefix(prefix_text)
    ref = lm.score(pre, QUERIES, CONTS, batch=1)
    for b in (3, 8):
        np.testing.assert_allclose(lm.score(pre, QUERIES, CONTS, batch=b), ref, atol=1e-5, rtol=0)


def test_repeated_scoring_is_unchanged(lm, prefix_text):
    """Scoring twice from one prefix, in another order and batch size, gives the same
    numbers (no state is carried from one call or batch to the next)."""
    pre = lm.prefix(prefix_text)
    first = lm.score(pre, QUERIES, CONTS, batch=3)
    second = lm.score(pre, QUERIES[::-1], CONTS, batch=8)[::-1]
    np.testing.assert_allclose(first, second, atol=1e-5, rtol=0)


def test_progress_counts_queries(lm, prefix_text):
    seen = []
    lm.score(lm.prefix(prefix_text), QUERIES, CONTS, batch=3, progress=seen.append)
    assert seen == [3, 3, 1]


def test_empty_continuation_is_one_line_error(lm, prefix_text):
    with pytest.raises(LLMError, match="tokenizes to nothing") as info:
        lm.score(lm.prefix(prefix_text), QUERIES[:1], (" positive", ""))
    assert "\n" not in str(info.value)


def test_seeds_give_different_models():
    a, b = tiny_llama(0), tiny_llama(1)
    sa = a.score(None, QUERIES[:1], CONTS)
    sb = b.score(None, QUERIES[:1], CONTS)
    assert not np.allclose(sa, sb)
    np.testing.assert_array_equal(sa, tiny_llama(0).score(None, QUERIES[:1], CONTS))


def test_not_a_causal_lm_is_one_line_error(tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("this is not json {")
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"not a gguf file at all")
    for folder, file in ((bert, None), (garbage, None), (tmp_path, "fake.gguf")):
        src = SimpleNamespace(name=str(folder), folder=folder, gguf_file=file, kind="unknown", n_params=None)
        with pytest.raises(LLMError, match="not a causal language model") as info:
            load(src)
        assert "\n" not in str(info.value)


def test_saved_float32_copy_scores_like_the_original(lm, prefix_text, tmp_path):
    """The converted copy a GGUF model gets at its first load (``_save_converted``) loads
    back through ``load`` as a plain Hugging Face folder and scores identically (bitwise:
    the same float32 weights and token ids)."""
    from iclsim.llm import backend

    folder = tmp_path / "converted"
    backend._save_converted(lm.model, lm.tokenizer, folder)
    assert (folder / backend._COMPLETE).exists() and (folder / "config.json").exists()
    source = SimpleNamespace(name="copy", folder=folder, gguf_file=None, kind="base",
                             n_params=None, family="")
    copy = load(source)
    try:
        want = lm.score(lm.prefix(prefix_text), QUERIES, CONTS)
        got = copy.score(copy.prefix(prefix_text), QUERIES, CONTS)
        assert copy.encode(prefix_text) == lm.encode(prefix_text)
        np.testing.assert_array_equal(got, want)
    finally:
        backend._LOADED.pop((str(folder), None, "cpu"), None)


def test_converted_folder_key_follows_the_file(tmp_path, monkeypatch):
    """The converted copy is keyed by the GGUF file's sha256 (a rewritten file converts
    afresh; touching it does not) and can be turned off (more: tests/test_llm_cache.py)."""
    import os

    from iclsim.llm import backend

    monkeypatch.setenv("ICLSIM_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x" * 10)
    first = backend.converted_folder(gguf)
    assert first.parent == tmp_path / "cache" / "converted" and first.name.startswith("m-")
    gguf.write_bytes(b"y" * 10)
    assert backend.converted_folder(gguf) != first
    gguf.write_bytes(b"x" * 10)
    os.utime(gguf, ns=(1, 1))
    assert backend.converted_folder(gguf) == first
    monkeypatch.setenv("ICLSIM_CONVERTED", "0")
    assert backend.converted_folder(gguf) is None
