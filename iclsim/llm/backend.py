"""Scoring label words with a causal language model (torch + transformers).

The ONLY module of iclsim that imports torch or transformers.

**The model reads the prompt as text.**  Every scored sequence is the tokenization of the
whole text ``prefix + query + continuation`` by the model's own tokenizer, with exactly the
special tokens that tokenizer adds itself (``tokenizer(text)``; no start token is prepended
by iclsim, no chat template is applied).  Tokenizing the pieces apart and joining the ids
is NOT the same: a BPE tokenizer can merge across the join (SmolLM2 tokenizes a trailing
``"\\n\\n"`` alone to one token but to two inside ``"\\n\\nReview"``), and the model then
sees a sequence no text produces.  ``docs/llm.md`` ("How a prompt is scored") shows what
that did to the measured accuracies.

A continuation's score is ``sum_t log p(x_t | x_<t)`` over the tokens ``x_t`` of the whole
text's tokenization that are not tokens of the context's own tokenization: ``start`` is the
length of the longest common prefix of ``ids(context + continuation)`` and
``ids(context)``, and tokens ``start .. end`` are scored.  Usually ``start`` is where the
continuation's text begins; where the continuation's first token merges with the text
before it, the merged token (and all after it) are scored, as the whole text gives them.

**The KV cache.**  A prompt is a demonstration prefix shared by many queries.  The cache is
the model's state after the first ``C`` tokens, where ``C`` is the longest token prefix that
every scored sequence shares with the prefix text's own tokenization, less one (so that
every scored token is predicted inside the batched pass): cached scores are the whole-text
scores (tests: 1e-5 in float32, on the real SmolLM2 tokenizer too).  The cache is computed
once per :meth:`LanguageModel.score` call (one forward pass over ``C`` tokens), and each
batch gets its own copy expanded to the batch size, because the model appends to the cache
it is given.  Rows of a batch are right-padded: padding comes after every real token, so
under the causal mask no real token attends to padding.

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

__all__ = ["Prefix", "ScoredSequence", "TextReader", "LanguageModel", "load", "tiny_llama"]


@dataclass(frozen=True)
class Prefix:
    """A demonstration prefix: its text and the ids of its whole-text tokenization (with the
    special tokens the tokenizer adds).  ``cache=False`` (from :meth:`LanguageModel.prefix`):
    score every sequence from scratch, with no KV cache (a reference for tests)."""

    text: str
    ids: tuple[int, ...]
    cache: bool = True


@dataclass(frozen=True)
class ScoredSequence:
    """One scored sequence: the ids of ``tokenizer(text)`` and the half-open range
    ``[start, end)`` of the tokens whose log-probabilities are summed (the continuation's)."""

    text: str
    ids: tuple[int, ...]
    start: int
    end: int


def _common_prefix(a, b) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class TextReader:
    """A tokenizer as the model reads text, and the model's limits (no weights needed):
    what :class:`LanguageModel` builds on."""

    def __init__(self, tokenizer, config, *, name: str):
        self.tokenizer = tokenizer
        self.config = config
        self.name = name
        # special tokens the tokenizer itself appends after the text (e.g. an EOS): they come
        # after the continuation and are never scored
        plain, full = self.tokens("a b"), self.encode("a b")
        at = next((i for i in range(len(full) - len(plain) + 1)
                   if full[i:i + len(plain)] == plain), None)
        self.n_tail = 0 if at is None else len(full) - at - len(plain)

    def _text_config(self):
        cfg = self.config
        return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the model reads, in tokens (``max_position_embeddings`` of
        its config), or None when the config does not say."""
        n = getattr(self._text_config(), "max_position_embeddings", None)
        return int(n) if n else None

    @property
    def kv_bytes_per_token(self) -> int | None:
        """float32 bytes of the key/value cache per token of one sequence:
        ``2 · layers · kv_heads · head_dim · 4`` (None when the config does not say)."""
        cfg = self._text_config()
        layers = getattr(cfg, "num_hidden_layers", None)
        heads = getattr(cfg, "num_attention_heads", None)
        kv = getattr(cfg, "num_key_value_heads", None) or heads
        dim = getattr(cfg, "head_dim", None) or (
            cfg.hidden_size // heads if heads and getattr(cfg, "hidden_size", None) else None)
        if not (layers and kv and dim):
            return None
        return int(2 * layers * kv * dim * 4)

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` as the model reads it: ``tokenizer(text)``, with the special
        tokens the tokenizer adds itself and no others."""
        return list(self.tokenizer(text)["input_ids"])

    def tokens(self, text: str) -> list[int]:
        """The ids of ``text`` without any special token (to count or check pieces; never
        what is scored)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class LanguageModel(TextReader):
    """A causal LM and its tokenizer, in eval mode, float32, on the CPU (or where loaded)."""

    def __init__(self, model, tokenizer, *, name: str, kind: str = "unknown"):
        super().__init__(tokenizer, model.config, name=name)
        self.model = model.eval()
        self.kind = kind
        self.n_params = int(sum(p.numel() for p in model.parameters()))
        self.device = next(model.parameters()).device
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0

    def __repr__(self) -> str:
        return f"LanguageModel({self.name!r}, n_params={self.n_params}, kind={self.kind!r})"

    def prefix(self, text: str, *, cache: bool = True) -> Prefix:
        """The demonstration prefix ``text`` (its whole-text ids); ``cache=False`` makes
        :meth:`score` run every sequence from scratch."""
        return Prefix(text, tuple(self.encode(text)), bool(cache))

    def sequence(self, context: str, continuation: str) -> ScoredSequence:
        """The ids of ``context + continuation`` and the range of tokens that score the
        continuation (module docstring)."""
        text = context + continuation
        ids = self.encode(text)
        end = len(ids) - self.n_tail
        ctx = self.encode(context)
        start = _common_prefix(ids[:end], ctx[:len(ctx) - self.n_tail])
        if start >= end:
            raise LLMError(f"label word {continuation.strip()!r} ({continuation!r}) adds no "
                           f"token to the text for model {self.name}; use another word")
        if start == 0:
            raise LLMError("the first token of the text has nothing before it to predict it "
                           "(empty prompt and no start token); give a prefix text")
        return ScoredSequence(text, tuple(ids), start, end)

    def _check_continuations(self, continuations) -> None:
        for c in continuations:
            if not self.tokens(c):
                raise LLMError(f"label word {c.strip()!r} ({c!r}) tokenizes to nothing; use "
                               "a word the tokenizer can encode")

    @torch.inference_mode()
    def _prefix_cache(self, ids: tuple[int, ...]):
        """The KV cache after ``ids`` (one forward pass)."""
        x = torch.tensor([list(ids)], device=self.device)
        # logits of the last position only: the prefix's own logits are never used, and
        # all of them would be length x vocabulary floats (4.5 GB for Qwen at 7.6k tokens)
        return self.model(input_ids=x, use_cache=True, logits_to_keep=1).cache

    def _batch_cache(self, cache, rows: int):
        """A private copy of ``cache`` expanded to ``rows`` (the shared one untouched)."""
        cache = copy.deepcopy(cache)
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
        ``sum_t log p(x_t | x_<t)`` over the continuation's tokens ``x_t`` in the whole-text
        tokenization of ``prefix + query + continuation`` (module docstring).
        ``prefix=None``: no prefix.  ``batch`` queries per forward pass (each gives one row
        per continuation); ``progress(n)`` after each ``n`` queries scored."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        self._check_continuations(continuations)
        if prefix is None:
            prefix = self.prefix("", cache=False)
        seqs = self.scored_sequences(prefix, queries, continuations)
        result = np.empty((len(queries), len(continuations)), dtype=np.float64)
        flat = [s for row in seqs for s in row]
        # C: tokens every sequence shares with the prefix's own ids, less one so that every
        # scored token (index >= start >= C + 1) is predicted inside the batched pass
        n_cached = 0
        if prefix.cache and flat:
            n_cached = min(min(_common_prefix(s.ids, prefix.ids), s.start - 1) for s in flat)
        cache = self._prefix_cache(prefix.ids[:n_cached]) if n_cached > 0 else None
        for start in range(0, len(queries), batch):
            chunk = seqs[start : start + batch]
            rows = [s for row in chunk for s in row]
            scores = self._score_rows(rows, n_cached, cache)
            result[start : start + len(chunk)] = scores.reshape(len(chunk), len(continuations))
            if progress is not None:
                progress(len(chunk))
        return result

    def scored_sequences(self, prefix: Prefix | None, queries: list[str],
                         continuations: tuple[str, ...]) -> list[list[ScoredSequence]]:
        """What :meth:`score` scores: per query, per continuation, the sequence and range."""
        text = "" if prefix is None else prefix.text
        return [[self.sequence(text + q, c) for c in continuations] for q in queries]

    def _score_rows(self, rows: list[ScoredSequence], n_cached: int, cache) -> np.ndarray:
        """Sum of log-probs of tokens ``[start, end)`` of each row, all rows in one pass, the
        first ``n_cached`` tokens (shared by all) taken from ``cache``."""
        suffixes = [list(r.ids[n_cached:]) for r in rows]
        length = max(len(s) for s in suffixes)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, s in enumerate(suffixes):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        kwargs = {}
        if cache is not None:
            mask = torch.cat([torch.ones((len(rows), n_cached), dtype=torch.long), mask], dim=1)
            kwargs = {"cache": self._batch_cache(cache, len(rows)), "use_cache": True}
        else:
            kwargs = {"use_cache": False}
        positions = torch.arange(n_cached, n_cached + length).expand(len(rows), -1)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), **kwargs)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        scores = np.empty(len(rows))
        for i, r in enumerate(rows):
            # token at absolute index t is predicted at suffix position t - 1 - n_cached
            pos = torch.arange(r.start - 1 - n_cached, r.end - 1 - n_cached, device=logp.device)
            tok = torch.tensor(r.ids[r.start : r.end], device=logp.device)
            scores[i] = float(logp[i, pos, tok].double().sum())
        return scores


_LOADED: dict[tuple[str, str | None, str], LanguageModel] = {}

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


def _require_device(device: str) -> None:
    """One line unless torch can run on ``device`` here."""
    if device == "cpu":
        return
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0) if device.startswith("cuda") else -1
    if not 0 <= index < n:
        raise LLMError(f"eval.device: {device!r} is not available here (torch sees {n} CUDA "
                       "device(s)); use 'cpu'")


def load(source, *, threads: int = 1, device: str = "cpu") -> LanguageModel:
    """The model of a :class:`~iclsim.llm.models.ModelSource` (float32, eval mode), cached
    in-process by ``(folder, gguf_file)``.  A folder or file that is not a causal LM ->
    :class:`LLMError` in one line.  Sets ``torch.set_num_threads(threads)``."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(threads)
    folder = str(Path(source.folder))
    gguf = source.gguf_file
    _require_device(device)
    key = (folder, gguf, device)
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
    if device != "cpu":
        model = model.to(device)
    lm = LanguageModel(model, tokenizer, name=source.name, kind=getattr(source, "kind", "unknown"))
    lm.load_seconds = time.perf_counter() - t0
    if getattr(source, "n_params", None):
        lm.n_params = int(source.n_params)
    _LOADED.clear()  # one model in memory at a time (a sweep evaluates model by model)
    _LOADED[key] = lm
    return lm


#: Characters of the tiny test tokenizer (everything the prompts and test texts use).
_TINY_CHARS = [chr(c) for c in range(32, 127)] + ["\n"]


def _tiny_bpe_corpus() -> list[str]:
    """Prompt-like texts the tiny byte-level BPE is trained on (built in code)."""
    words = ("good bad film fine awful great fun movie plot boring slow music actor "
             "story dull best worst love hate").split()
    rng = np.random.default_rng(0)
    texts = []
    for _ in range(400):
        n = int(rng.integers(2, 7))
        review = " ".join(words[j] for j in rng.integers(len(words), size=n))
        label = ("negative", "positive", "foo", "bar")[int(rng.integers(4))]
        texts.append(f"Review: {review}\nSentiment: {label}\n\n")
        texts.append(f"Review: {review}\nSentiment: {label}\n\nReview: {review}\nSentiment:")
    return texts


def _tiny_tokenizer(vocab: str):
    """The tokenizer of :func:`tiny_llama` (``<s>`` added before every text, as Llama's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<unk>", "<pad>"]
    if vocab == "chars":
        table = {t: i for i, t in enumerate(specials + _TINY_CHARS)}
        tok = Tokenizer(models.BPE(vocab=table, merges=[], unk_token="<unk>"))
        tok.add_special_tokens(specials)
    else:  # GPT-2 style: byte-level pieces, split by GPT-2's regular expression
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(_tiny_bpe_corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[
        ("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>",
                                   pad_token="<pad>")


def tiny_llama(seed: int = 0, *, vocab: str = "chars", device: str = "cpu") -> LanguageModel:
    r"""A random-weight ``LlamaForCausalLM`` (2 layers, hidden 32, 4 heads, 2 KV heads) with a
    tokenizer built in code (no files) that adds ``<s>`` before every text, as Llama's does.

    ``vocab="chars"``: every character one token, so " negative" is 9 tokens (multi-token
    scoring).  ``vocab="bpe"``: a byte-level BPE with GPT-2's pre-tokenizer, trained in code
    on prompt-like texts, which merges ``"\n\n"`` at the end of a text into one token but
    splits it before ``"Review"``, exactly as SmolLM2's does: a scorer that tokenizes the
    prefix and the query apart gives other ids than the whole text."""
    if vocab not in ("chars", "bpe"):
        raise ValueError(f"vocab must be 'chars' or 'bpe', got {vocab!r}")
    from transformers import LlamaConfig, LlamaForCausalLM

    fast = _tiny_tokenizer(vocab)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        pad_token_id=fast.pad_token_id,
        eos_token_id=None,
    )
    torch.manual_seed(seed)
    _require_device(device)
    model = LlamaForCausalLM(config).to(torch.float32)
    with torch.no_grad():  # larger weights than the default init: peaked, informative outputs
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(10.0)
    model = model.to(device)
    return LanguageModel(model, fast, name=f"tiny-llama-{seed}" + ("-bpe" if vocab == "bpe" else ""),
                         kind="base")
