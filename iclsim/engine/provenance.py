"""Provenance: which code made a result.

A sweep result is keyed by (config, code).  The *code key* is a hash of the
*code record* (:func:`code_record`), which holds

* ``source_sha256``, ``source_files``: every file of the installed ``iclsim`` package
  (relative path and bytes; ``__pycache__`` skipped), not only its ``*.py`` files;
* ``iclsim_version``, ``jax_version``, ``jaxlib_version``;
* ``libraries``: the versions of the other libraries that compute or store the numbers
  of a result (:data:`LIBRARIES`): optax (every optimiser, L-BFGS included), numpy
  (oracles, spectra, rotations, aggregates), scipy (the t quantiles of the language-model
  intervals), xarray (the labelled result and its reductions), h5py and h5netcdf (they
  write the stored file).  Flax is not among them: only ``iclsim.nn`` imports it, and no
  sweep does; matplotlib draws figures, which are not keyed;
* ``python``: the Python implementation and version;
* ``xla_flags``: the ``XLA_FLAGS`` environment variable (it can change fusion, the
  autotuner's kernel choice and thus the rounding of every result);
* ``jax_config``: the JAX configuration values that change random streams or precision
  (:data:`JAX_CONFIG`: the PRNG implementation, threefry partitioning, float64, the
  default matmul precision);
* ``platform``, ``device_kind``, ``x64``: the backend the run used.

Change one line of a model (or a library, or a flag) and the key changes, so a rerun of a
finished preset starts a fresh folder instead of reusing numbers the old code produced.
The folder layout is ``<output_dir>/<name>-<config hash>/<code hash>/``; the record of
what went into the key is ``provenance.json`` in that folder and the ``provenance``
attribute of the result, so two records side by side show *why* two keys differ.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path

__all__ = ["source_hash", "code_record", "code_hash", "library_version", "LIBRARIES",
           "JAX_CONFIG"]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent

#: Distributions (besides jax and jaxlib) whose version enters the code key: each one
#: computes or stores numbers of a result (see the module docstring for what each does).
LIBRARIES = ("optax", "numpy", "scipy", "xarray", "h5py", "h5netcdf")
#: JAX configuration values that change random streams or precision.
JAX_CONFIG = ("jax_default_prng_impl", "jax_threefry_partitionable", "jax_enable_x64",
              "jax_default_matmul_precision")


@functools.lru_cache(maxsize=8)
def source_hash(root: str | None = None) -> tuple[str, int]:
    """(sha256 hex, file count) over every file below ``root`` (the iclsim package),
    ``__pycache__`` folders skipped.

    Files are visited in sorted relative-path order; each contributes its relative
    path and its bytes, so renaming, adding or editing a file changes the hash.
    """
    base = Path(root) if root is not None else PACKAGE_ROOT
    digest = hashlib.sha256()
    files = sorted(p for p in base.rglob("*")
                   if p.is_file() and "__pycache__" not in p.relative_to(base).parts)
    for path in files:
        rel = path.relative_to(base).as_posix()
        digest.update(rel.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest(), len(files)


def library_version(name: str) -> str:
    """The installed version of the distribution ``name`` (``"absent"`` if not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _config_value(name: str):
    import jax

    value = getattr(jax.config, name, None)
    return value if isinstance(value, (bool, int, float, str, type(None))) else str(value)


def code_record() -> dict:
    """Everything that enters the code key (JSON-able)."""
    import jax
    import jaxlib

    import iclsim

    device = jax.devices()[0]
    source, n_files = source_hash()
    return {
        "iclsim_version": iclsim.__version__,
        "source_sha256": source,
        "source_files": n_files,
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "libraries": {name: library_version(name) for name in LIBRARIES},
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_config": {name: _config_value(name) for name in JAX_CONFIG},
        "platform": device.platform,
        "device_kind": getattr(device, "device_kind", device.platform),
        "x64": bool(jax.config.jax_enable_x64),
    }


def code_hash(record: dict | None = None) -> str:
    """12-hex-digit key of :func:`code_record`."""
    record = code_record() if record is None else record
    blob = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
