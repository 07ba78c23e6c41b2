"""Caches keyed by content: file sha256s remembered across processes, and the converted
float32 copies of GGUF models (listed and pruned by ``iclsim llm cache``).

No torch here: library versions come from :mod:`importlib.metadata`, so listing and pruning
work without loading anything.

**sha256 index.** :func:`file_sha256` hashes a file once and remembers the digest in
``<cache>/sha256-index.json`` (and in-process), keyed by the resolved path.  An entry is
trusted only while the file's size, mtime, ctime and inode are those recorded: copying another
file over it with its mtime kept (``cp -p``) still changes the ctime, which no user can set.
An entry is recorded only when the file's ctime is at least :data:`RACY_NS` older than the
moment hashing began (a file changed within the same clock tick could otherwise keep all
four numbers; such a file is simply hashed again next time).  Writes are atomic (temporary
file + ``os.replace``); concurrent writers may drop each other's entries (last writer wins:
those files are hashed again), and an unreadable or corrupt index is ignored and rebuilt.

**Converted copies.** ``<cache>/converted/<gguf stem>-<key>/`` holds the float32 weights
(safetensors) and the tokenizer saved at a GGUF model's first load; the key is a hash of the
GGUF file's sha256 and the installed transformers and torch versions.  The manifest
:data:`MANIFEST`, written last (then the temporary folder is renamed into place), lists every
file with its size and sha256 and records the source (GGUF sha256, the path as seen, library
versions, creation time).  :func:`verify_converted` checks sizes and sha256s once per process
per folder before the copy is loaded; any mismatch is one :class:`LLMError` line.  The
manifest's mtime is the copy's "last used" time (touched at each verified load).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from iclsim.llm.errors import LLMError

__all__ = [
    "INDEX", "MANIFEST", "file_sha256", "library_versions", "converted_root", "converted_key",
    "write_manifest", "verify_converted", "CachedCopy", "list_copies", "prune",
]

#: The sha256 index, in the cache folder.
INDEX = "sha256-index.json"
#: Manifest and completion marker of a converted copy (written last).
MANIFEST = "iclsim-converted.json"
#: Marker left in a copy whose verification failed (``--prune`` removes it).
CORRUPT = "iclsim-corrupt.txt"
#: Manifest format written by this code; copies of another format are stale.
FORMAT = 2
#: A file whose ctime is less than this before hashing began is not remembered (see above).
RACY_NS = 2_000_000_000
#: Temporary folders (``.<name>.*``) younger than this may belong to a running conversion.
TEMP_GRACE_S = 3600.0
#: The libraries whose versions key a converted copy.
LIBRARIES = ("transformers", "torch")

# resolved path -> (size, mtime_ns, ctime_ns, ino, sha256)
_MEMO: dict[str, tuple[int, int, int, int, str]] = {}
# converted folders verified in this process
_VERIFIED: set[str] = set()


def _cache_dir() -> Path:
    from iclsim.llm.models import cache_dir

    return cache_dir()


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    from iclsim.llm.models import sha256_file

    return sha256_file(path, chunk)


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _read_index() -> dict:
    try:
        data = json.loads((_cache_dir() / INDEX).read_text())
        files = data["files"]
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_index(files: dict) -> None:
    """Atomic replace; a failure (read-only cache, disk full) only costs re-hashing."""
    root = _cache_dir()
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{INDEX}.", dir=root)
        with os.fdopen(fd, "w") as f:
            json.dump({"format": 1, "files": files}, f, indent=1, sort_keys=True)
        os.replace(tmp, root / INDEX)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def file_sha256(path) -> str:
    """The hex sha256 of ``path``, remembered across processes (module docstring)."""
    path = Path(path)
    resolved = str(path.resolve())
    st = path.stat()
    stamp = _stamp(st)
    memo = _MEMO.get(resolved)
    if memo is not None and memo[:4] == stamp:
        return memo[4]
    files = _read_index()
    entry = files.get(resolved)
    if isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and \
            [entry.get(k) for k in ("size", "mtime_ns", "ctime_ns", "ino")] == list(stamp):
        _MEMO[resolved] = (*stamp, entry["sha256"])
        return entry["sha256"]
    began = time.time_ns()
    digest = _sha256(path)
    st2 = path.stat()
    if _stamp(st2) == stamp and st.st_ctime_ns < began - RACY_NS:
        _MEMO[resolved] = (*stamp, digest)
        files = _read_index()  # fresh: another process may have written since
        files = {p: e for p, e in files.items() if os.path.exists(p)}
        files[resolved] = {"size": stamp[0], "mtime_ns": stamp[1], "ctime_ns": stamp[2],
                           "ino": stamp[3], "sha256": digest}
        _write_index(files)
    return digest


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that key a converted copy (``absent`` if missing)."""
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


def converted_root() -> Path:
    """The folder that holds the converted (Hugging Face format) copies of GGUF models.

    Returns
    -------
    pathlib.Path
        ``<cache folder>/converted``; one sub-folder per :func:`converted_key`.
    """
    return _cache_dir() / "converted"


def converted_key(gguf_sha256: str, versions: dict[str, str] | None = None) -> str:
    """16 hex digits naming the copy of a GGUF file of this sha256 under these libraries."""
    versions = versions or library_versions()
    ident = ":".join([gguf_sha256, *(f"{lib}={versions[lib]}" for lib in LIBRARIES)])
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def write_manifest(folder: Path, *, source: Path | None, source_sha256: str) -> dict:
    """Hash every file of ``folder`` and write :data:`MANIFEST` (last); ``source`` is the
    GGUF file as the caller saw it (None: unknown)."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[p.relative_to(folder).as_posix()] = {"size": p.stat().st_size,
                                                       "sha256": _sha256(p)}
    manifest = {
        "format": FORMAT,
        "source": {"path": str(source) if source is not None else "",
                   "sha256": source_sha256,
                   "size": source.stat().st_size if source is not None else None},
        "libraries": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _read_manifest(folder: Path) -> dict | None:
    try:
        m = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def _corrupt(folder: Path, what: str) -> LLMError:
    try:  # so 'iclsim llm cache' shows it and '--prune' removes it
        (folder / CORRUPT).write_text(what + "\n")
    except OSError:
        pass
    return LLMError(f"converted copy {folder} is corrupt: {what}; remove it with iclsim llm "
                    f"cache --prune (or delete the folder) and rerun to convert the model afresh")


def verify_converted(folder: Path) -> None:
    """Check a converted copy against its manifest (sizes, then sha256 of every file), once
    per process per folder, and touch its last-used time; a mismatch is one LLMError line."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key not in _VERIFIED:
        m = _read_manifest(folder)
        files = m.get("files") if m else None
        if m is None or m.get("format") != FORMAT or not isinstance(files, dict) or not files:
            raise _corrupt(folder, f"its manifest {MANIFEST} is unreadable or of another format")
        bad = _bad_sizes(folder, files)
        if bad:
            raise _corrupt(folder, bad)
        extra = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file() and p.name not in (MANIFEST, CORRUPT)
                       and p.relative_to(folder).as_posix() not in files)
        if extra:
            raise _corrupt(folder, f"{extra[0]} is not in the manifest")
        for name, want in sorted(files.items()):
            digest = _sha256(folder / name)
            if digest != want.get("sha256"):
                raise _corrupt(folder, f"{name} has sha256 {digest[:12]}..., expected "
                                       f"{str(want.get('sha256'))[:12]}...")
        _VERIFIED.add(key)
    try:
        os.utime(folder / MANIFEST)  # last used
    except OSError:
        pass


# ------------------------------------------------------------------------------ listing


@dataclass(frozen=True)
class CachedCopy:
    """One entry of ``<cache>/converted``: a copy or a leftover temporary folder."""

    folder: Path
    size: int
    source: str  # GGUF path as seen at conversion ("" unknown)
    source_sha256: str
    libraries: dict
    last_used: float  # epoch seconds (manifest mtime, else folder mtime)
    state: str  # "ok", or why it can go: "STALE: ...", "INCOMPLETE...", "CORRUPT: ..."

    @property
    def removable(self) -> bool:
        return self.state != "ok" and not self.state.startswith("IN PROGRESS")


def _size(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def _bad_sizes(folder: Path, files) -> str:
    """What is wrong with the file sizes of a copy, by its manifest ("" when nothing)."""
    if not isinstance(files, dict) or not files:
        return "the manifest lists no files"
    for name, want in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if not isinstance(want, dict) or path.stat().st_size != want.get("size"):
            return f"{name} has {path.stat().st_size} bytes, expected " + \
                str(want.get("size") if isinstance(want, dict) else "?")
    return ""


def _describe(folder: Path, installed: dict[str, str]) -> CachedCopy:
    size = _size(folder)
    if folder.name.startswith("."):
        age = time.time() - folder.stat().st_mtime
        state = "IN PROGRESS? (temporary folder)" if age < TEMP_GRACE_S else \
            "INCOMPLETE (leftover temporary folder)"
        return CachedCopy(folder, size, "", "", {}, folder.stat().st_mtime, state)
    m = _read_manifest(folder)
    if m is None:
        state = "INCOMPLETE (no manifest)"
        if (folder / CORRUPT).exists():
            state = "CORRUPT: " + (folder / CORRUPT).read_text(errors="replace").strip()
        return CachedCopy(folder, size, "", "", {}, folder.stat().st_mtime, state)
    last = (folder / MANIFEST).stat().st_mtime
    source = m.get("source") if isinstance(m.get("source"), dict) else {}
    libs = m.get("libraries") if isinstance(m.get("libraries"), dict) else \
        {k: m[k] for k in LIBRARIES if isinstance(m.get(k), str)}  # the first format
    src, sha = str(source.get("path", "")), str(source.get("sha256", ""))
    state = "ok"
    if m.get("format") != FORMAT:
        state = "STALE: made by older iclsim code"
    elif (folder / CORRUPT).exists():
        state = "CORRUPT: " + (folder / CORRUPT).read_text(errors="replace").strip()
    elif _bad_sizes(folder, m.get("files")):
        state = "CORRUPT: " + _bad_sizes(folder, m.get("files"))
    elif any(libs.get(lib) != installed[lib] for lib in LIBRARIES):
        state = "STALE: made with " + ", ".join(f"{lib} {libs.get(lib)}" for lib in LIBRARIES
                                                if libs.get(lib) != installed[lib]) + \
            " (installed: " + ", ".join(f"{lib} {installed[lib]}" for lib in LIBRARIES) + ")"
    elif not src or not Path(src).is_file():
        state = "STALE: source file gone"
    else:
        try:
            if file_sha256(Path(src)) != sha:
                state = "STALE: source file changed"
        except OSError:
            state = "STALE: source file unreadable"
    return CachedCopy(folder, size, src, sha, libs, last, state)


def list_copies() -> list[CachedCopy]:
    """Every folder under ``<cache>/converted``, sorted by name (temporary ones included)."""
    root = converted_root()
    if not root.is_dir():
        return []
    installed = library_versions()
    return [_describe(p, installed) for p in sorted(root.iterdir()) if p.is_dir()]


def prune(*, everything: bool = False, dry_run: bool = False) -> list[CachedCopy]:
    """Remove stale, incomplete and corrupt copies (``everything``: all copies); return them."""
    gone = [c for c in list_copies() if everything or c.removable]
    if not dry_run:
        for c in gone:
            shutil.rmtree(c.folder, ignore_errors=True)
            _VERIFIED.discard(str(c.folder.resolve()))
    return gone
