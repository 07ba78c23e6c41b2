"""Scoring label words with a causal language model (torch + transformers).

The ONLY module of iclsim that imports torch or transformers.  A prompt is a demonstration
prefix shared by many queries, so the prefix runs once (:meth:`LanguageModel.prefix`) and its
key/value cache is reused by every query: each batch gets its own copy of the cache, expanded
to the batch size, because the model appends to the cache it is given (the shared prefix
cache is never mutated).  Each query is scored against every continuation (" negative",
" positive") as the SUM of the log-probabilities of all the continuation's tokens, so label
words that split into several tokens are compared fairly.

Token ids are always ``tokens(prefix, bos=True) + tokens(query) + tokens(continuation)``,
each piece tokenized on its own, so the cached path and the from-scratch path (prefix
``None`` or a prefix made with ``cache=False``) see identical ids; tests compare the two to
1e-5 in float32.  Rows of a batch are right-padded: padding comes after every real token, so
under the causal mask no real token attends to padding, position ids run on from the prefix
length, and the attention mask hides the padding from nothing that matters.

Threads: ``torch.set_num_threads(threads)``, default 1 (on 2 shared cores one thread was
4-5x faster than two).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from iclsim.llm.errors import LLMError

__all__ = ["Prefix", "LanguageModel", "load", "tiny_llama"]


@dataclass(frozen=True)
class Prefix:
    """A demonstration prefix after one forward pass: its text, its ids (BOS first when the
    tokenizer has one), the KV cache (``None``: score from scratch) and the log-softmax at its
    last position (the distribution of the first token after it)."""

    text: str
    ids: tuple[int, ...]
    cache: Any
    last_logprobs: Any


class LanguageModel:
    """A causal LM and its tokenizer, in eval mode, float32, on the CPU (or where loaded)."""

    def __init__(self, model, tokenizer, *, name: str, kind: str = "unknown"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.kind = kind
        self.n_params = int(sum(p.numel() for p in model.parameters()))
        self.device = next(model.parameters()).device
        bos = getattr(tokenizer, "bos_token_id", None)
        self.bos_id = None if bos is None else int(bos)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else (self.bos_id or 0)

    def __repr__(self) -> str:
        return f"LanguageModel({self.name!r}, n_params={self.n_params}, kind={self.kind!r})"

    def tokens(self, text: str, *, bos: bool) -> list[int]:
        """Token ids of ``text`` with no special tokens, BOS first when ``bos`` (and the
        tokenizer has one: Qwen's has none, then the ids start with the text)."""
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    @torch.inference_mode()
    def prefix(self, text: str, *, cache: bool = True) -> Prefix:
        """One forward pass over BOS + ``text``, holding its KV cache (``cache=False``: keep
        only the ids, and :meth:`score` runs every sequence from scratch)."""
        ids = self.tokens(text, bos=True)
        if not ids:
            raise LLMError("the prefix is empty and the tokenizer has no BOS token; give a prefix text")
        if not cache:
            return Prefix(text, tuple(ids), None, None)
        x = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=x, use_cache=True)
        last = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        return Prefix(text, tuple(ids), out.cache, last)

    def _continuation_ids(self, continuations) -> list[list[int]]:
        out = []
        for c in continuations:
            ids = self.tokens(c, bos=False)
            if not ids:
                raise LLMError(f"label word {c.strip()!r} ({c!r}) tokenizes to nothing; use a word the tokenizer can encode")
            out.append(ids)
        return out

    def _batch_cache(self, prefix: Prefix, rows: int):
        """A private copy of the prefix cache expanded to ``rows`` (the shared one untouched)."""
        cache = copy.deepcopy(prefix.cache)
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache

    @torch.inference_mode()
    def score(
        self,
        prefix: Prefix | None,
        queries: list[str],
        continuations: tuple[str, ...],
        *,
        batch: int = 8,
        progress=None,
    ) -> np.ndarray:
        """``(len(queries), len(continuations))`` float64: for each query and continuation,
        the sum over all the continuation's tokens of log p(token | BOS + prefix + query +
        previous continuation tokens).  ``prefix=None``: no prefix (BOS + query + continuation
        from scratch); a prefix without cache: the whole sequence from scratch.
        ``batch`` queries per forward pass (each gives one row per continuation);
        ``progress(n)`` after each ``n`` queries scored."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        cont_ids = self._continuation_ids(continuations)
        if prefix is None:
            prefix = Prefix("", tuple(self.tokens("", bos=True)), None, None)
        result = np.empty((len(queries), len(cont_ids)), dtype=np.float64)
        for start in range(0, len(queries), batch):
            chunk = queries[start : start + batch]
            rows = []  # (suffix ids, index where the continuation starts)
            for q in chunk:
                q_ids = self.tokens(q, bos=False)
                for c in cont_ids:
                    rows.append((q_ids + c, len(q_ids)))
            scores = self._score_rows(prefix, rows)
            result[start : start + len(chunk)] = scores.reshape(len(chunk), len(cont_ids))
            if progress is not None:
                progress(len(chunk))
        return result

    def _score_rows(self, prefix: Prefix, rows) -> np.ndarray:
        """Sum of log-probs of the tokens after ``start`` in each suffix, all rows in one pass."""
        cached = prefix.cache is not None
        base = () if cached else prefix.ids
        n_prefix = len(prefix.ids)
        seqs = [list(base) + suffix for suffix, _ in rows]
        length = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        if cached:
            attn = torch.cat([torch.ones((len(seqs), n_prefix), dtype=torch.long), mask], dim=1)
            positions = torch.arange(n_prefix, n_prefix + length).expand(len(seqs), -1)
            out = self.model(
                input_ids=ids.to(self.device),
                attention_mask=attn.to(self.device),
                position_ids=positions.to(self.device),
                cache=self._batch_cache(prefix, len(seqs)),
                use_cache=True,
            )
            logp = torch.log_softmax(out.logits.float(), dim=-1)
            # the distribution of suffix token j is at suffix position j-1, of token 0 at the prefix end
            first = prefix.last_logprobs.to(logp.device).expand(len(seqs), 1, -1)
            logp = torch.cat([first, logp[:, :-1]], dim=1)
        else:
            out = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=torch.arange(length).expand(len(seqs), -1).to(self.device),
                use_cache=False,
            )
            logp = torch.log_softmax(out.logits.float(), dim=-1)
            logp = torch.cat([torch.full_like(logp[:, :1], float("nan")), logp[:, :-1]], dim=1)
        scores = np.empty(len(rows))
        for i, ((suffix, start), s) in enumerate(zip(rows, seqs)):
            lo = len(s) - (len(suffix) - start)  # first continuation token in this row's ids
            hi = len(s)
            pos = torch.arange(lo, hi, device=logp.device)
            tok = ids[i, lo:hi].to(logp.device)
            scores[i] = float(logp[i, pos, tok].double().sum())
        return scores


_LOADED: dict[tuple[str, str | None], LanguageModel] = {}

#: Manifest and completion marker of a converted copy (written last; :mod:`iclsim.llm.cache`).
_COMPLETE = "iclsim-converted.json"


def converted_folder(gguf_path: Path, sha256: str | None = None) -> Path | None:
    """Where the float32 copy of a GGUF model is kept: ``<cache>/converted/<file>-<key>/``.

    Reading a GGUF file means parsing it in Python three times (config, weights,
    tokenizer; 20-45 s for these models on a laptop core); the dequantised float32 weights
    (safetensors) and the tokenizer, saved at the first load, load in about a second.  The
    key covers the GGUF file's sha256 (``sha256`` when the caller knows it, e.g. a packaged
    model verified by ``resolve``; else :func:`iclsim.llm.cache.file_sha256`, remembered
    across processes) and the transformers and torch versions, so a changed file or library
    converts afresh.  ``ICLSIM_CONVERTED=0`` turns the copy off.  Returns None when turned off.
    """
    import os

    from iclsim.llm import cache

    if os.environ.get("ICLSIM_CONVERTED", "1") == "0":
        return None
    digest = sha256 or cache.file_sha256(gguf_path)
    return cache.converted_root() / f"{gguf_path.stem}-{cache.converted_key(digest)}"


def _save_converted(model, tokenizer, folder: Path, *, source: Path | None = None,
                    source_sha256: str = "") -> None:
    """Save the loaded model and tokenizer to ``folder`` (temporary name; the manifest of
    every file's size and sha256 last; then rename); a failure (disk full, …) only costs
    the speed-up."""
    import json
    import shutil
    import tempfile

    from iclsim.llm import cache

    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        # the weights are already dequantised float32: save them as a plain model (the GGUF
        # "quantizer" transformers attaches is not serialisable and describes nothing left)
        quantizer = getattr(model, "hf_quantizer", None)
        try:
            model.hf_quantizer = None
            model.save_pretrained(tmp, safe_serialization=True)
        finally:
            model.hf_quantizer = quantizer
        cfg_file = tmp / "config.json"
        cfg = json.loads(cfg_file.read_text())
        cfg.pop("quantization_config", None)
        cfg_file.write_text(json.dumps(cfg, indent=2))
        tokenizer.save_pretrained(tmp)
        cache.write_manifest(tmp, source=source, source_sha256=source_sha256)
        tmp.rename(folder)
    except (OSError, ValueError, TypeError):
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _packaged_sha256(source, gguf_path: Path) -> str | None:
    """The pinned sha256 of a packaged model's cache file (``resolve`` verifies it)."""
    from iclsim.llm import models

    entry = models.PACKAGED.get(getattr(source, "name", None))
    if entry is not None and gguf_path == models.model_file(entry.name):
        return entry.sha256
    return None


def _not_causal(where: str, why: str) -> LLMError:
    return LLMError(f"{where} is not a causal language model transformers can load ({why})")


def load(source, *, threads: int = 1) -> LanguageModel:
    """The model of a :class:`~iclsim.llm.models.ModelSource` (float32, eval mode), cached
    in-process by ``(folder, gguf_file)``.  A folder or file that is not a causal LM ->
    :class:`LLMError` in one line.  Sets ``torch.set_num_threads(threads)``."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(threads)
    folder = str(Path(source.folder))
    gguf = source.gguf_file
    key = (folder, gguf)
    if key in _LOADED:
        return _LOADED[key]
    where = str(Path(folder) / gguf) if gguf else folder
    kwargs = {"gguf_file": gguf} if gguf else {}
    # iclsim's own progress bar keeps ticking while a model loads; transformers' bars
    # (GGUF dequantisation, weight loading) would interleave with it
    transformers.utils.logging.disable_progress_bar()
    converted = gguf_path = gguf_sha = None
    if gguf:
        from iclsim.llm import cache

        gguf_path = Path(folder) / gguf
        try:
            gguf_sha = _packaged_sha256(source, gguf_path) or cache.file_sha256(gguf_path)
        except OSError as exc:
            raise _not_causal(where, f"{type(exc).__name__}: {exc}") from None
        converted = converted_folder(gguf_path, gguf_sha)
    if converted is not None and (converted / _COMPLETE).exists():
        cache.verify_converted(converted)  # sizes and sha256s, once per process
        folder, kwargs = str(converted), {}  # the float32 copy written at the first load
    try:
        config = AutoConfig.from_pretrained(folder, **kwargs)
    except Exception as exc:  # garbage, missing config, unknown architecture
        raise _not_causal(where, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}") from None
    mapping = transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if config.model_type not in mapping:
        raise _not_causal(where, f"model_type {config.model_type!r} has no causal-LM head")
    import os

    quiet = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # the GGUF reader's own tqdm bar
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - another transformers layout
        gguf_utils = None
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = lambda iterable, *a, **k: iterable
    try:
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    except Exception as exc:
        raise _not_causal(where, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}") from None
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        if quiet is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = quiet
    if converted is not None and not (converted / _COMPLETE).exists():
        _save_converted(model, tokenizer, converted, source=gguf_path, source_sha256=gguf_sha)
    lm = LanguageModel(model, tokenizer, name=source.name, kind=getattr(source, "kind", "unknown"))
    lm.load_seconds = time.perf_counter() - t0
    if getattr(source, "n_params", None):
        lm.n_params = int(source.n_params)
    _LOADED.clear()  # one model in memory at a time (a sweep evaluates model by model)
    _LOADED[key] = lm
    return lm


#: Characters of the tiny test tokenizer (everything the prompts and test texts use).
_TINY_CHARS = [chr(c) for c in range(32, 127)] + ["\n"]


def tiny_llama(seed: int = 0, *, vocab: str = "chars") -> LanguageModel:
    """A random-weight ``LlamaForCausalLM`` (2 layers, hidden 32, 4 heads, 2 KV heads) with a
    character-level tokenizer built in code (no files): every character one token, so
    " negative" is 9 tokens, which is what the multi-token scoring tests need."""
    if vocab != "chars":
        raise ValueError(f"vocab must be 'chars', got {vocab!r}")
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<s>", "<unk>", "<pad>"]
    table = {t: i for i, t in enumerate(specials + _TINY_CHARS)}
    tok = Tokenizer(models.BPE(vocab=table, merges=[], unk_token="<unk>"))
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>", pad_token="<pad>")
    config = LlamaConfig(
        vocab_size=len(table),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=0,
        pad_token_id=2,
        eos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    with torch.no_grad():  # larger weights than the default init: peaked, informative outputs
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(10.0)
    return LanguageModel(model, fast, name=f"tiny-llama-{seed}", kind="base")
