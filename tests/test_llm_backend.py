"""iclsim.llm.backend on a tiny random-weight Llama built in code (no files): cached ==
uncached, batch sizes agree, multi-token scoring equals a hand computation, the shared prefix
cache is never mutated, and bad label words / folders fail in one line."""

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from iclsim.llm.backend import load, tiny_llama  # noqa: E402
from iclsim.llm.errors import LLMError  # noqa: E402
from iclsim.llm.prompts import build_prompt, continuations, format_query  # noqa: E402

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


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(0)


@pytest.fixture(scope="module")
def prefix_text():
    return build_prompt(["good film", "bad film", "fine"], np.array([1, 0, 1]), WORDS)


def hand_score(lm, prefix_text, query, cont):
    """Independent computation: one full unpadded sequence through model(...), no cache,
    log_softmax at the position BEFORE each continuation token, summed."""
    pre = lm.tokenizer(prefix_text, add_special_tokens=False)["input_ids"]
    q = lm.tokenizer(query, add_special_tokens=False)["input_ids"]
    c = lm.tokenizer(cont, add_special_tokens=False)["input_ids"]
    ids = [lm.tokenizer.bos_token_id] + pre + q + c
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    start = len(ids) - len(c)
    return sum(float(logp[start + j - 1, c[j]]) for j in range(len(c)))


def test_tokenizer_is_multi_token(lm):
    assert lm.tokens(" negative", bos=False) == lm.tokens(" ", bos=False) + lm.tokens("negative", bos=False)
    assert len(lm.tokens(" negative", bos=False)) == 9
    assert lm.tokens("ab", bos=True)[0] == lm.tokenizer.bos_token_id
    assert lm.tokens("ab", bos=True)[1:] == lm.tokens("ab", bos=False)


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
    # no prefix at all: BOS + query + continuation, checked by hand
    none = lm.score(None, QUERIES[:2], CONTS)
    assert none[0, 1] == pytest.approx(hand_score(lm, "", QUERIES[0], CONTS[1]), abs=1e-4)


def test_batch_sizes_agree(lm, prefix_text):
    pre = lm.prefix(prefix_text)
    ref = lm.score(pre, QUERIES, CONTS, batch=1)
    for b in (3, 8):
        np.testing.assert_allclose(lm.score(pre, QUERIES, CONTS, batch=b), ref, atol=1e-5, rtol=0)


def test_prefix_cache_not_mutated(lm, prefix_text):
    pre = lm.prefix(prefix_text)
    before = [t.clone() for layer in pre.cache.layers for t in (layer.keys, layer.values)]
    length = pre.cache.get_seq_length()
    first = lm.score(pre, QUERIES, CONTS, batch=3)
    second = lm.score(pre, QUERIES[::-1], CONTS, batch=8)[::-1]
    np.testing.assert_allclose(first, second, atol=1e-5, rtol=0)
    assert pre.cache.get_seq_length() == length
    after = [t for layer in pre.cache.layers for t in (layer.keys, layer.values)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


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
        assert copy.tokens(prefix_text, bos=True) == lm.tokens(prefix_text, bos=True)
        np.testing.assert_array_equal(got, want)
    finally:
        backend._LOADED.pop((str(folder), None), None)


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
