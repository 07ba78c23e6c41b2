"""The backend on the REAL SmolLM2-135M (its GGUF tokenizer and weights, as `iclsim llm
fetch smollm2-135m data` puts them; the test command of README.md fetches them): every
sequence scored for the prompts of a small sweep is the whole text's tokenization, and the
cached, batched scores equal an uncached forward pass of the whole text.

SmolLM2's tokenizer merges a trailing "\\n\\n" into one token (1116) but splits it before
"Review" (198, 198), and it adds no start token itself: a scorer that tokenizes the prefix
and the query apart, or prepends a start token, fails both tests (checked by hand on the
pre-fix backend: 0 % of the ids matched)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from iclsim.engine.config import parse  # noqa: E402
from iclsim.llm import prompts  # noqa: E402
from iclsim.llm import sweep as llm_sweep  # noqa: E402
from iclsim.llm.data import DATA_FILES  # noqa: E402
from iclsim.llm.models import cache_dir  # noqa: E402

from llm_reference import whole_text_logprob  # noqa: E402

#: Where `iclsim llm fetch` put the real files, read before any test changes $ICLSIM_CACHE.
REAL_CACHE = cache_dir()


@pytest.fixture(scope="module")
def smollm2():
    gguf = REAL_CACHE / "models" / "smollm2-135m.gguf"
    data = REAL_CACHE / "data" / "vader-3.3.2" / DATA_FILES["tweets"][0]
    if not gguf.is_file() or not data.is_file():
        pytest.skip(f"needs the real smollm2-135m and VADER data in {REAL_CACHE} "
                    "(iclsim llm fetch smollm2-135m data)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ICLSIM_CACHE", str(REAL_CACHE))
        llm_sweep._task_at.cache_clear()
        cfg = parse(llm_sweep.LLMSweepConfig, {
            "name": "real-ids", "setting": "llm",
            "axes": {"model": ["smollm2-135m"], "task": ["tweets"], "k": [8],
                     "label_flip": [0.0, 1.0], "seeds": 2},
            "eval": {"n_queries": 6, "sensitivity_flip": 1.0}})
        lm = llm_sweep._model("smollm2-135m", 1)
        runs = []
        short = llm_sweep.demonstrations(cfg, "tweets", 2, "sentiment", 0.0, 1.0, 0)[0]
        for p in (0.0, 1.0):
            for seed in (0, 1):
                prefix = llm_sweep.demonstrations(cfg, "tweets", 8, "sentiment", 0.0, p, seed)[0]
                texts = llm_sweep.queries(cfg, "tweets", seed)[0]
                runs.append((prefix, texts))
        short = (short, llm_sweep.queries(cfg, "tweets", 0)[0][:4])
        llm_sweep._task_at.cache_clear()
    return lm, runs, short


CONTS = prompts.continuations(prompts.LABEL_WORDS["sentiment"])


def test_real_tokenizer_is_one_that_merges_across_the_join(smollm2):
    """Power check: the bug this file guards against exists for this tokenizer."""
    lm, runs, _ = smollm2
    prefix, texts = runs[0]
    assert prefix.endswith("\n\n")
    assert lm.tokens(prefix) + lm.tokens(texts[0]) != lm.tokens(prefix + texts[0])
    assert lm.encode("hi") == lm.tokens("hi")  # SmolLM2 adds no start token of its own


def test_real_scored_ids_are_the_whole_text(smollm2):
    lm, runs, _ = smollm2
    n = 0
    for prefix, texts in runs:
        seqs = lm.scored_sequences(lm.prefix(prefix), texts, CONTS)
        for q, row in zip(texts, seqs):
            for c, seq in zip(CONTS, row):
                assert list(seq.ids) == lm.tokenizer(prefix + q + c)["input_ids"]
                n += 1
    assert n == 4 * 6 * 2


def test_real_cached_scores_equal_the_whole_text_uncached(smollm2):
    """k = 2 flipped demonstrations, 4 queries (an uncached pass of a k = 8 prompt takes
    seconds on a loaded core; the join is the same at any k)."""
    lm, _, (prefix, texts) = smollm2
    got = lm.score(lm.prefix(prefix), texts, CONTS, batch=3)
    want = np.array([[whole_text_logprob(lm, prefix + q, c) for c in CONTS] for q in texts])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
