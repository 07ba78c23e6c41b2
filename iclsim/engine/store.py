"""Atomic files and the labelled result store.

Every write goes to a temporary file in the destination folder and is then
renamed over the target (``os.replace``, atomic on POSIX), so a reader — or a
resumed sweep after ``kill -9`` — sees either the old file or the complete new
one, never a half-written file.

Results are :class:`xarray.Dataset` objects stored as netCDF-4 (h5netcdf engine):
one self-describing file with named dimensions, coordinates and attributes,
readable by xarray (``iclsim.load_result``), by ``ds.to_dataframe()`` into
pandas, and by any netCDF tool in other languages.  netCDF keeps the labels
next to the numbers, which is what a sweep result is; zarr would add a folder
of chunks that a single-host sweep of this size does not need.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "save_npz",
    "load_npz",
    "save_checked",
    "load_checked",
    "CorruptFileError",
    "SweepLocked",
    "sweep_lock",
    "fsync_dir",
    "save_dataset",
    "load_result",
    "result_files",
]


def fsync_dir(folder) -> None:
    """fsync a directory so that a rename inside it survives a power cut."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic(path, writer, suffix=""):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync'd,
    then renamed over ``path`` (and the folder fsync'd), so a reader sees the old file or the
    whole new one, never a part.  Creates missing parent folders.

    Returns
    -------
    pathlib.Path
        ``path``.
    """

    def writer(tmp):
        with open(tmp, "wb") as fh:
            fh.write(data)

    return _atomic(path, writer)


def atomic_write_text(path, text: str):
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj):
    """:func:`atomic_write_text` of ``obj`` as JSON (indent 2, sorted keys, final newline).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npz(path, arrays: dict):
    """Atomically write a dict of arrays as an uncompressed ``.npz``."""

    def writer(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return _atomic(path, writer)


def load_npz(path) -> dict:
    """Read an ``.npz`` written by :func:`save_npz` (no pickles).

    Returns
    -------
    dict
        Name → numpy array, read fully into memory (the file is closed on return).
    """
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


class CorruptFileError(OSError):
    """A checkpoint or group file that is truncated, altered or of another layout."""


_MANIFEST = "__manifest__"


def _sha(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def save_checked(path, arrays: dict, meta: dict | None = None):
    """Atomically write named arrays with a manifest of shapes, dtypes and sha256 sums.

    Names are arbitrary strings (e.g. pytree paths such as ``.params['weights']['a']``):
    the arrays are stored as ``a0, a1, …`` and the manifest maps each name to its
    entry, so a reader restores by name, never by position.  ``meta`` (JSON-able)
    is stored in the manifest too.
    """
    entries, payload = {}, {}
    for i, (name, value) in enumerate(arrays.items()):
        arr = np.asarray(value)
        key = f"a{i}"
        payload[key] = arr
        entries[name] = {"key": key, "shape": list(arr.shape), "dtype": arr.dtype.str,
                         "sha256": _sha(arr)}
    manifest = json.dumps({"format": "iclsim-checked-npz/1", "arrays": entries,
                           "meta": meta or {}}, sort_keys=True)
    payload[_MANIFEST] = np.frombuffer(manifest.encode(), np.uint8)
    return save_npz(path, payload)


def load_checked(path) -> tuple[dict, dict]:
    """(arrays by name, meta) from :func:`save_checked`; :class:`CorruptFileError` if any
    array is missing, truncated, of the wrong shape/dtype, or fails its checksum."""
    try:
        raw = load_npz(path)
        manifest = json.loads(bytes(raw.pop(_MANIFEST)).decode())
        out = {}
        for name, entry in manifest["arrays"].items():
            arr = raw[entry["key"]]
            if (list(arr.shape) != entry["shape"] or arr.dtype.str != entry["dtype"]
                    or _sha(arr) != entry["sha256"]):
                raise CorruptFileError(f"{path}: array {name!r} fails its checksum")
            out[name] = arr
        return out, manifest.get("meta", {})
    except CorruptFileError:
        raise
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError,
            json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None


class SweepLocked(RuntimeError):
    """Another process holds the lock of this sweep folder."""


@contextlib.contextmanager
def sweep_lock(folder, name: str = ".lock"):
    """Exclusive, non-blocking advisory lock (``fcntl.flock``) on ``folder/name``.

    Two processes running the same sweep on the same folder would overwrite each
    other's checkpoints; the second one gets :class:`SweepLocked` instead.  The
    lock dies with its process (``kill -9`` included), so a stale lock never blocks.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise SweepLocked(f"{folder}: another iclsim process (pid {holder}) is running this "
                              "sweep; wait for it or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def save_dataset(path, ds):
    """Atomically write an xarray Dataset as netCDF-4."""

    def writer(tmp):
        ds.to_netcdf(tmp, engine="h5netcdf")

    return _atomic(path, writer, suffix=".nc")


def result_dirs(path) -> list[Path]:
    """Result folders below ``path``, newest first.

    ``path`` may be a result folder (``<name>-<config>/<code>/``), a config folder
    holding one subfolder per code version, or a results root.
    """
    import glob

    text = str(path)
    if any(c in text for c in "*?["):  # a pattern such as results/quickstart-*
        paths = [Path(p) for p in sorted(glob.glob(text))]
    else:
        paths = [Path(path)]
    found = set()
    for path in paths:
        if path.is_file():
            found.add(path.parent)
        elif list(path.glob("result*.nc")):
            found.add(path)
        else:
            found |= {f.parent for f in path.glob("*/result*.nc")}
            found |= {f.parent for f in path.glob("*/*/result*.nc")}
    return sorted(found, key=lambda p: max(f.stat().st_mtime for f in p.glob("result*.nc")),
                  reverse=True)


def result_files(path) -> list[Path]:
    """The result file(s) of a sweep folder (or the file itself).

    A config folder with several code versions resolves to the newest result.
    """
    if Path(path).is_file():
        return [Path(path)]
    dirs = result_dirs(path)
    path = dirs[0] if dirs else Path(path)
    if (path / "result.nc").exists():
        return [path / "result.nc"]
    shards = sorted(path.glob("result.p*.nc"))
    if not shards:
        raise FileNotFoundError(f"{path}: no result.nc in this folder (has the sweep finished?)")
    return shards


def load_result(path):
    """Load a sweep result as an xarray Dataset.

    ``path``: a ``result.nc`` file, a result folder, a config folder or results root holding
    several results, or a glob pattern such as ``"results/quickstart-*"`` — anything that
    holds several results resolves to the newest.

    Multi-host sweeps write one ``result.p<k>.nc`` per host, each holding its
    own runs (marked by the boolean variable ``present``); they are combined run
    by run.
    """
    import xarray as xr

    files = result_files(path)
    parts = [xr.load_dataset(f, engine="h5netcdf") for f in files]
    merged = parts[0]
    for part in parts[1:]:
        present = part["present"]
        for name, var in part.data_vars.items():
            if set(present.dims) <= set(var.dims):
                merged[name] = xr.where(present, var, merged[name]).transpose(*var.dims)
    return merged
