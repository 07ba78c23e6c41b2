"""The real-LM experiment as a sweep (``setting = "llm"``): noisy demonstrations vs model size.

The paper's Section 6 claim, measured by the same engine as the two exact settings:
larger language models are hurt more by noisy in-context demonstrations; smaller ones
are more robust (the theory's "a larger model covers more features, so it follows the
context more, for better and worse"; ``docs/llm.md``).

Grid (``[axes]``, one run per cell): ``model`` (a packaged name, a ``.gguf`` path or a
Hugging Face model folder), ``task`` (a binary sentiment task of human-rated sentences,
:mod:`iclsim.llm.data`), ``k`` demonstrations (k/2 per class), ``label_words``
(``sentiment``: negative/positive; ``unrelated``: foo/bar), ``input_noise`` q (that
fraction of the demonstration inputs corrupted, labels kept), ``label_flip`` p (exactly
round(p·k) demonstration labels flipped, split evenly across the classes) and ``seed``.

One run: the seed draws k demonstrations from the task's demonstration pool and
``eval.n_queries`` clean queries from its query pool (the same for every model, p and q:
common random numbers); flips and corruptions are nested in p and q for a fixed seed.
The demonstration prefix runs through the model once and its KV cache serves every
query (:mod:`iclsim.llm.backend`).  The prediction is the label word whose continuation
(all of its tokens) has the larger log-probability; stored per query: ``correct`` and
the ``margin`` log p(true word) − log p(other word).

Aggregates (stored in the result beside the per-query numbers): accuracy and margin per
cell with a t interval over seeds (each seed an independent draw of demonstrations and
queries; :mod:`iclsim.llm.stats`), the same pooled over tasks, and the
*sensitivity*: accuracy at p = 0 minus accuracy at p = ``eval.sensitivity_flip``, with a
paired t interval over seeds.  Nothing here imports torch: the backend is loaded when the
first run is evaluated.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from iclsim.engine.config import CommonSweep, ConfigError, check_distinct, spec
from iclsim.engine.setting import Setting
from iclsim.llm import prompts
from iclsim.llm.data import TASKS
from iclsim.llm.errors import LLMError

__all__ = ["LLMSweepConfig", "LLM", "RUN_AXES", "TINY_MODEL", "model_info"]

#: The run axes of a real-LM sweep, in the order of the run index (one evaluation per
#: combination).
RUN_AXES = ("model", "task", "k", "label_words", "input_noise", "label_flip", "seed")
#: A random-weight Llama built in code (no files): chance accuracy; for smoke tests.
TINY_MODEL = "tiny-random-llama"
#: Stream constant of the generator that draws replacement words for corrupted inputs.
_CORRUPT_TEXT_STREAM = 7_331


def word_pair(words: str) -> tuple[str, str]:
    """The (negative, positive) label words of an ``axes.label_words`` entry: a named pair
    (:data:`iclsim.llm.prompts.LABEL_WORDS`) or ``"NEGATIVE/POSITIVE"``."""
    if words in prompts.LABEL_WORDS:
        return tuple(prompts.LABEL_WORDS[words])
    parts = words.split("/")
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1] or any(
            w != w.strip() or not w.isprintable() or " " in w for w in parts):
        named = ", ".join(prompts.LABEL_WORDS)
        raise ConfigError(f"axes.label_words: {words!r} is not allowed; choose one of {named} "
                          "or a pair of two different words without spaces, 'NEGATIVE/POSITIVE' "
                          "(e.g. 'bad/good')")
    return parts[0], parts[1]


@dataclass(frozen=True)
class AxesConfig:
    model: tuple[str, ...] = spec(("smollm2-135m",), "models: packaged names ('iclsim llm "
                                  "models'), a .gguf path or a Hugging Face model folder; "
                                  f"'{TINY_MODEL}' is a random-weight model built in code",
                                  min_len=1)
    task: tuple[str, ...] = spec(("movies",), "binary sentiment tasks", choices=TASKS,
                                 min_len=1)
    k: tuple[int, ...] = spec((8,), "demonstrations per prompt (even: k/2 per class)", lo=2,
                              hi=512, min_len=1)
    label_words: tuple[str, ...] = spec(("sentiment",), "label words: sentiment "
                                        "(negative/positive), unrelated (foo/bar), or your own "
                                        "pair 'NEGATIVE/POSITIVE', e.g. 'bad/good'", min_len=1)
    input_noise: tuple[float, ...] = spec((0.0,), "fraction q of demonstration inputs "
                                          "corrupted (labels kept)", lo=0.0, hi=1.0, min_len=1)
    label_flip: tuple[float, ...] = spec((0.0, 0.5, 1.0), "fraction p of demonstration labels "
                                         "flipped (exactly round(p·k), split across classes)",
                                         lo=0.0, hi=1.0, min_len=1)
    seeds: int = spec(3, "demonstration seeds (each draws its own demonstrations and queries)",
                      lo=1, hi=100_000)

    def __post_init__(self):
        check_distinct(self)
        for words in self.label_words:
            word_pair(words)  # raises ConfigError for a malformed pair
        odd = [k for k in self.k if k % 2]
        if odd:
            raise ConfigError(f"axes.k: {odd[0]} is odd; k must be even (k/2 demonstrations "
                              "per class)")


@dataclass(frozen=True)
class DataConfig:
    margin: float = spec(1.0, "keep sentences whose |mean human rating| is at least this "
                         "(ratings run from -4 to 4)", lo=0.0, hi=3.5)
    max_words: int = spec(40, "keep sentences of 3 to this many words", lo=3, hi=1000)


@dataclass(frozen=True)
class EvalConfig:
    n_queries: int = spec(64, "clean queries per run (even: half per class)", lo=2,
                          hi=1_000_000)
    batch: int = spec(8, "queries per forward pass (all share the cached prefix)", lo=1,
                      hi=4096)
    threads: int = spec(1, "torch CPU threads (on 2 cores one thread was 4-5x faster than two)",
                        lo=1, hi=1024)
    device: str = spec("cpu", "where torch runs the model: cpu, or cuda / cuda:N on a GPU "
                       "machine (float32 either way)", choices=("cpu", "cuda", "cuda:0", "cuda:1",
                                                                 "cuda:2", "cuda:3"))
    corruption_rate: float = spec(0.5, "input noise: each word of a corrupted demonstration "
                                  "is replaced by a random word of the demonstration pool "
                                  "with this probability", lo=0.0, hi=1.0)
    sensitivity_flip: float = spec(0.5, "sensitivity = accuracy(p = 0) - accuracy(p = this); "
                                   "both must be axes.label_flip values", lo=0.0, hi=1.0)
    confidence: float = spec(0.95, "level of the intervals (t over seeds; Wilson / Newcombe "
                             "when the seeds do not vary)", lo=0.5, hi=0.999)

    def __post_init__(self):
        if self.n_queries % 2:
            raise ConfigError(f"eval.n_queries: {self.n_queries} is odd; it must be even (half "
                              "per class)")


@dataclass(frozen=True)
class LLMSweepConfig(CommonSweep):
    setting: str = spec("llm", "which setting", choices=("llm",))
    axes: AxesConfig = AxesConfig()
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()

    def __post_init__(self):
        if 0.0 in self.axes.label_flip and len(self.axes.label_flip) > 1 and \
                self.eval.sensitivity_flip not in self.axes.label_flip:
            raise ConfigError(f"eval.sensitivity_flip: {self.eval.sensitivity_flip} is not one "
                              f"of axes.label_flip {list(self.axes.label_flip)}")


class LLMStatic(NamedTuple):
    model: str
    steps: int  # progress units per run: its queries


# ------------------------------------------------------------------------------ models


def _is_tiny(name: str) -> bool:
    return name == TINY_MODEL


def _require_backend() -> None:
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise LLMError(f"setting llm needs {' and '.join(missing)}: install the extra with "
                       "pip install -e \".[llm]\"")


def _source(name: str, verify: bool = True):
    from iclsim.llm import models

    return models.resolve(name, verify=verify)


@functools.lru_cache(maxsize=1)  # runs are grouped model by model: one in memory at a time
def _model(name: str, threads: int, device: str = "cpu"):
    from iclsim.llm import backend

    if _is_tiny(name):
        return backend.tiny_llama(0, device=device)
    return backend.load(_source(name, verify=False), threads=threads, device=device)


def model_info(name: str) -> dict:
    """Family, kind (base/instruct) and parameter count of a model, without loading it."""
    from iclsim.llm import models

    if _is_tiny(name):
        return {"family": "random Llama", "kind": "random", "n_params": -1}
    entry = models.PACKAGED.get(name)
    if entry is not None:
        return {"family": entry.family, "kind": entry.kind, "n_params": int(entry.n_params)}
    return {"family": "local", "kind": "unknown", "n_params": -1}


def _file_identity(path: Path) -> str:
    """``sha256:<hex>`` of a local model file, remembered across processes in the cache's
    sha256 index (:func:`iclsim.llm.cache.file_sha256`): the result key follows the bytes."""
    from iclsim.llm.cache import file_sha256

    return "sha256:" + file_sha256(path)


# ------------------------------------------------------------------------------ data


def _task(name: str, margin: float, max_words: int):
    from iclsim.llm.data import data_dir

    return _task_at(name, margin, max_words, str(data_dir()))


@functools.lru_cache(maxsize=16)
def _task_at(name: str, margin: float, max_words: int, folder: str):
    """Cached per data folder (``$ICLSIM_CACHE`` may change within a process)."""
    from iclsim.llm.data import load_task

    return load_task(name, margin=margin, max_words=max_words)


def demonstrations(cfg, task_name: str, k: int, words: str, q: float, p: float, seed: int):
    """The demonstration prefix of one run: (prefix text, true labels, shown labels,
    flipped mask, corrupted mask)."""
    task = _task(task_name, cfg.data.margin, cfg.data.max_words)
    idx = prompts.demonstration_indices(task.demo_labels, k, seed)
    labels = np.asarray(task.demo_labels)[idx]
    flipped = prompts.flip_mask(labels, p, seed)
    corrupted = prompts.corrupt_mask(labels, q, seed)
    shown = np.where(flipped, 1 - labels, labels)
    rng = np.random.default_rng([int(seed), _CORRUPT_TEXT_STREAM])
    texts = []
    for i, c in zip(idx, corrupted):
        text = task.demo_texts[i]
        # always draw, so the words of demonstration j do not depend on which others are corrupted
        noisy = prompts.corrupt_text(text, cfg.eval.corruption_rate, task.vocabulary, rng)
        texts.append(noisy if c else text)
    return prompts.build_prompt(texts, shown, word_pair(words)), labels, shown, flipped, corrupted


def queries(cfg, task_name: str, seed: int):
    """(query texts, true labels, indices into the query pool) of one seed."""
    task = _task(task_name, cfg.data.margin, cfg.data.max_words)
    idx = prompts.query_indices(task.query_labels, cfg.eval.n_queries, seed)
    texts = [prompts.format_query(task.query_texts[i]) for i in idx]
    return texts, np.asarray(task.query_labels)[idx].astype(np.int8), idx


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``; None if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory(cfg, name: str) -> None:
    """One line, before the model is loaded, when its float32 weights (4 bytes per
    parameter, known for packaged models) do not fit in the available memory.  Loading a
    GGUF file the first time needs about twice that (the file and the float32 copy)."""
    n_params = model_info(name)["n_params"]
    free = _available_memory()
    if n_params <= 0 or free is None:
        return
    need = 4 * n_params
    if need > free:
        raise LLMError(f"axes.model: {name} needs about {need / 2**30:.1f} GiB for its float32 "
                       f"weights, {free / 2**30:.1f} GiB of memory is available; free memory "
                       "or choose a smaller model")


#: Tokens allowed for the joins of prefix, query and continuation on top of the pieces' counts.
_JOIN_SLACK = 4


def prompt_tokens(cfg, lm, task: str, k: int, words: str, q: float, p: float, seed: int) -> int:
    """An upper bound on the tokens of the longest scored sequence of one run: the prefix's
    whole-text tokens + the longest of its queries + the longest continuation + a slack for
    the joins (a join can merge or split a token or two)."""
    prefix = demonstrations(cfg, task, k, words, q, p, seed)[0]
    texts = queries(cfg, task, seed)[0]
    longest_query = max(len(ids) for ids in lm.tokenizer(texts, add_special_tokens=False)["input_ids"])
    longest_cont = max(len(lm.tokens(c)) for c in prompts.continuations(word_pair(words)))
    return len(lm.encode(prefix)) + longest_query + longest_cont + _JOIN_SLACK


def _check_length(cfg, name: str, lm) -> None:
    """One line when some run's prompt would be longer than the model's positions.  Only
    the largest k is tokenized: for a fixed seed the demonstrations are nested in k."""
    limit = lm.max_positions
    if not limit:
        return
    import itertools

    axes = cfg.axes
    k = max(axes.k)
    for task, words, q, seed in itertools.product(axes.task, axes.label_words,
                                                  axes.input_noise, range(axes.seeds)):
        n = max(prompt_tokens(cfg, lm, task, k, words, q, p, seed) for p in axes.label_flip)
        if n > limit:
            fits = max(2, int(k * limit / n) // 2 * 2)
            raise LLMError(f"axes.k: {k} demonstrations of task {task} make prompts of up to "
                           f"{n:,} tokens for model {name}, which reads at most {limit:,}; "
                           f"use k <= {fits} (or a model with a longer context)")


# ------------------------------------------------------------------------------ the setting


class LLMSetting(Setting):
    """Real causal LMs on binary sentiment tasks with noisy demonstrations (evaluated, not
    trained: ``kind = "evaluated"``)."""

    name = "llm"
    kind = "evaluated"
    config_class = LLMSweepConfig
    scale = "model"
    tuning_axes = ()  # nothing is tuned: every run is its own measurement
    run_axes = RUN_AXES
    static_axes = ("model",)
    verdicts = ("evaluated", "diverged")
    progress_unit = "query"

    def static(self, cfg, *, model):
        return LLMStatic(model=str(model), steps=int(cfg.eval.n_queries))

    def group_runs(self, cfg) -> int:
        return 1

    def check(self, cfg) -> None:
        """Everything that can fail before a run starts, each as one line: the backend, the
        model files, the data, the pools' sizes, each model's memory (float32 weights vs
        available memory) and its context length (the longest prompt of the sweep vs the
        positions the model reads)."""
        _require_backend()
        for name in cfg.axes.model:
            if not _is_tiny(name):
                _source(name, verify=True)
        for task in cfg.axes.task:
            t = _task(task, cfg.data.margin, cfg.data.max_words)
            for k in cfg.axes.k:
                per_class = int(np.min(np.bincount(np.asarray(t.demo_labels), minlength=2)))
                if k // 2 > per_class:
                    raise LLMError(f"axes.k: {k} needs {k // 2} demonstrations per class; task "
                                   f"{task} has {per_class} (lower data.margin?)")
            per_class = int(np.min(np.bincount(np.asarray(t.query_labels), minlength=2)))
            if cfg.eval.n_queries // 2 > per_class:
                raise LLMError(f"eval.n_queries: {cfg.eval.n_queries} needs "
                               f"{cfg.eval.n_queries // 2} queries per class; task {task} has "
                               f"{per_class}")
        # the first model evaluated is checked last, so it stays loaded (one in memory)
        for name in reversed(cfg.axes.model):
            _check_memory(cfg, name)
            lm = _model(name, cfg.eval.threads, cfg.eval.device)  # the evaluation reuses it
            for words in cfg.axes.label_words:
                for word in prompts.continuations(word_pair(words)):
                    if not lm.tokens(word):
                        raise LLMError(f"axes.label_words: {word.strip()!r} tokenizes to "
                                       f"nothing for model {name}; choose another word")
            _check_length(cfg, name, lm)

    def provenance(self, cfg) -> dict:
        from iclsim.llm import models
        from iclsim.llm.data import data_sha256

        out = {}
        for lib in ("torch", "transformers", "gguf", "tokenizers"):
            try:
                out[lib] = importlib.metadata.version(lib)
            except importlib.metadata.PackageNotFoundError:
                out[lib] = "absent"
        files = {}
        for name in cfg.axes.model:
            if _is_tiny(name):
                files[name] = "built in code"
            elif name in models.PACKAGED:
                files[name] = "sha256:" + models.PACKAGED[name].sha256
            else:
                src = _source(name, verify=False)
                path = Path(src.folder) / src.gguf_file if src.gguf_file else Path(src.folder)
                if path.is_dir():
                    files[name] = {p.name: _file_identity(p) for p in sorted(path.iterdir())
                                   if p.is_file()}
                else:
                    files[name] = _file_identity(path)
        out["models"] = files
        out["data"] = data_sha256(cfg.axes.task)  # checked against the pins
        return out

    def evaluate(self, cfg, static, runs, progress) -> dict:
        lm = _model(static.model, cfg.eval.threads, cfg.eval.device)
        n = cfg.eval.n_queries
        out = {key: [] for key in ("correct", "margin", "query_label", "query_index", "n_flipped",
                                   "n_corrupted", "prefix_chars", "n_params", "verdict",
                                   "diverged")}
        for i in range(len(runs)):
            task, k, words = str(runs["task"][i]), int(runs["k"][i]), str(runs["label_words"][i])
            q, p, seed = float(runs["input_noise"][i]), float(runs["label_flip"][i]), \
                int(runs["seed"][i])
            prefix, _, _, flipped, corrupted = demonstrations(cfg, task, k, words, q, p, seed)
            texts, labels, idx = queries(cfg, task, seed)
            state = lm.prefix(prefix)
            scores = np.asarray(lm.score(state, texts, prompts.continuations(word_pair(words)),
                                         batch=cfg.eval.batch, progress=progress), float)
            finite = bool(np.isfinite(scores).all())
            rows = np.arange(n)
            margin = scores[rows, labels] - scores[rows, 1 - labels]
            out["correct"].append((margin > 0).astype(float))
            out["margin"].append(margin)
            out["query_label"].append(labels)
            out["query_index"].append(np.asarray(idx, np.int64))
            out["n_flipped"].append(int(flipped.sum()))
            out["n_corrupted"].append(int(corrupted.sum()))
            out["prefix_chars"].append(len(prefix))
            # packaged models: shared input/output embeddings counted once (iclsim.llm.models)
            known = model_info(static.model)["n_params"]
            out["n_params"].append(int(known if known > 0 else lm.n_params))
            out["verdict"].append("evaluated" if finite else "diverged")
            out["diverged"].append(not finite)
        return {key: np.asarray(v) for key, v in out.items()}

    def run_vars(self, cfg) -> dict:
        return {
            "correct": (("query",), {"long_name": "1 if the true label word has the larger "
                                     "log-probability (ties count as wrong)"}),
            "margin": (("query",), {"long_name": "log p(true label word) - log p(other label "
                                    "word), all tokens of each"}),
            "query_label": (("query",), {"long_name": "true label of the query (0 negative, "
                                         "1 positive)"}),
            "query_index": (("query",), {"long_name": "index of the query in the task's "
                                         "query pool"}),
            "n_flipped": ((), {"long_name": "demonstration labels flipped"}),
            "n_corrupted": ((), {"long_name": "demonstration inputs corrupted"}),
            "prefix_chars": ((), {"long_name": "characters of the demonstration prefix"}),
            "n_params": ((), {"long_name": "parameters of the model"}),
        }

    def metadata(self, cfg, coords) -> tuple[dict, dict, dict]:
        # no oracle (the default: real language models have no closed form); what the
        # runs are: the query index, each model's family and kind, the chance level
        info = [model_info(m) for m in cfg.axes.model]
        new_coords = {
            "query": np.arange(cfg.eval.n_queries),
            "family": ("model", np.asarray([i["family"] for i in info])),
            "kind": ("model", np.asarray([i["kind"] for i in info])),
        }
        attrs = {"reference": "none: real language models have no closed form; the theory's "
                 "prediction is qualitative (sensitivity to flipped labels grows with size)",
                 "chance_accuracy": 0.5}
        return {}, new_coords, attrs

    def aggregate(self, cfg, ds):
        from iclsim.llm.aggregate import add_aggregates

        return add_aggregates(ds, level=cfg.eval.confidence,
                              sensitivity_flip=cfg.eval.sensitivity_flip)

    def verdict_parts(self, ds) -> list:
        from iclsim.llm.report import verdict_parts

        return verdict_parts(ds)

    def summary(self, ds) -> str:
        from iclsim.llm.report import summary

        return summary(ds)

    def figures(self, ds, out_dir, formats) -> list:
        from iclsim.llm.figures import draw_all

        return draw_all(ds, Path(out_dir), formats)


#: The engine setting ``llm`` (``iclsim run sweeps/llm_*.toml``).
LLM = LLMSetting()
