"""An independent reference for the LLM backend's scores: the whole text through the model
once, with no cache, no padding and no batching, and the scored tokens found by the
tokenizer's character offsets (not by comparing token ids, as the backend does)."""

from __future__ import annotations

import torch


def whole_text_logprob(lm, context: str, continuation: str) -> float:
    """``sum log p(x_t | x_<t)`` over the tokens of ``tokenizer(context + continuation)``
    whose characters reach into the continuation."""
    enc = lm.tokenizer(context + continuation, return_offsets_mapping=True)
    ids = enc["input_ids"]
    scored = [t for t, (a, b) in enumerate(enc["offset_mapping"]) if b > len(context) and b > a]
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[t - 1, ids[t]]) for t in scored)
