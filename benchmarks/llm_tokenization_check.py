"""Does the model read the prompt as text?  For each model: the fraction of scored sequences
whose ids equal the tokenizer's whole-text tokenization (must be 100 %), the fraction that a
piecewise construction (a start token + tokens(prefix) + tokens(query) + tokens(label), what
iclsim did before it scored whole texts) would have got right, and the largest |difference|
between the cached, batched scores and an uncached forward pass of the whole text.

    python benchmarks/llm_tokenization_check.py [MODEL ...]      (default: smollm2-135m qwen2.5-coder-0.5b)

Needs the extra llm and the models fetched (iclsim llm fetch smollm2-135m qwen2.5-coder-0.5b data).
Prompts: the four tasks, k = 16, seeds 0-2, p = 0 / 0.5 / 1, 20 queries each (ids);
tweets, k = 4, seed 0, p = 0.5, 4 queries (scores: uncached passes are slow on a CPU).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from llm_reference import whole_text_logprob  # noqa: E402

from iclsim.engine.config import parse  # noqa: E402
from iclsim.llm import prompts  # noqa: E402
from iclsim.llm import sweep as llm_sweep  # noqa: E402

TASKS = ("movies", "products", "tweets", "nyt")
CONTS = prompts.continuations(prompts.LABEL_WORDS["sentiment"])


def _cfg(n_queries: int):
    return parse(llm_sweep.LLMSweepConfig, {
        "name": "tokenization-check", "setting": "llm",
        "axes": {"task": list(TASKS), "k": [16], "label_flip": [0.0, 0.5, 1.0], "seeds": 3},
        "eval": {"n_queries": n_queries}})


def piecewise_ids(lm, prefix: str, query: str, cont: str) -> list[int]:
    """The ids the earlier scorer built: the tokenizer's BOS (if it names one), then each
    piece tokenized on its own."""
    bos = lm.tokenizer.bos_token_id
    return ([] if bos is None else [bos]) + lm.tokens(prefix) + lm.tokens(query) + lm.tokens(cont)


def check(name: str) -> dict:
    lm = llm_sweep._model(name, 1)
    cfg = _cfg(20)
    same = old_same = total = 0
    for task in TASKS:
        for seed in range(3):
            texts = llm_sweep.queries(cfg, task, seed)[0]
            for p in (0.0, 0.5, 1.0):
                prefix = llm_sweep.demonstrations(cfg, task, 16, "sentiment", 0.0, p, seed)[0]
                for q, row in zip(texts, lm.scored_sequences(lm.prefix(prefix), texts, CONTS)):
                    for c, seq in zip(CONTS, row):
                        whole = lm.tokenizer(prefix + q + c)["input_ids"]
                        same += list(seq.ids) == whole
                        old_same += piecewise_ids(lm, prefix, q, c) == whole
                        total += 1
    prefix = llm_sweep.demonstrations(cfg, "tweets", 4, "sentiment", 0.0, 0.5, 0)[0]
    texts = llm_sweep.queries(cfg, "tweets", 0)[0][:4]
    t0 = time.perf_counter()
    got = lm.score(lm.prefix(prefix), texts, CONTS, batch=4)
    want = np.array([[whole_text_logprob(lm, prefix + q, c) for c in CONTS] for q in texts])
    return {"model": name, "sequences": total, "whole_text": same / total,
            "piecewise": old_same / total, "max_abs_diff": float(np.abs(got - want).max()),
            "seconds": time.perf_counter() - t0}


def main(argv: list[str]) -> None:
    names = argv or ["smollm2-135m", "qwen2.5-coder-0.5b"]
    print(f"{'model':<22}{'sequences':>10}{'ids = whole text':>18}{'piecewise = whole text':>24}"
          f"{'max |cached - uncached|':>25}")
    for name in names:
        r = check(name)
        print(f"{r['model']:<22}{r['sequences']:>10}{100 * r['whole_text']:>17.1f}%"
              f"{100 * r['piecewise']:>23.1f}%{r['max_abs_diff']:>25.2e}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
