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

import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "save_npz",
    "load_npz",
    "save_dataset",
    "load_result",
    "result_files",
]


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
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path, data: bytes):
    def writer(tmp):
        with open(tmp, "wb") as fh:
            fh.write(data)

    return _atomic(path, writer)


def atomic_write_text(path, text: str):
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj):
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npz(path, arrays: dict):
    """Atomically write a dict of arrays as an uncompressed ``.npz``."""

    def writer(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return _atomic(path, writer)


def load_npz(path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_dataset(path, ds):
    """Atomically write an xarray Dataset as netCDF-4."""

    def writer(tmp):
        ds.to_netcdf(tmp, engine="h5netcdf")

    return _atomic(path, writer, suffix=".nc")


def result_files(path) -> list[Path]:
    """The result file(s) of a sweep folder (or the file itself)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / "result.nc").exists():
        return [path / "result.nc"]
    shards = sorted(path.glob("result.p*.nc"))
    if not shards:
        raise FileNotFoundError(f"{path}: no result.nc in this folder (has the sweep finished?)")
    return shards


def load_result(path):
    """Load a sweep result (a ``result.nc`` file or a sweep folder) as an xarray Dataset.

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
