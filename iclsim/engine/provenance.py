"""Provenance: which code made a result.

A sweep result is keyed by (config, code).  The *code key* is a hash of

* every ``*.py`` file of the installed ``iclsim`` package (relative path and bytes),
* the package version, the JAX and jaxlib versions,
* the backend the run used (platform, device kind) and whether float64 is on.

Change one line of a model and the key changes, so a rerun of a finished preset
starts a fresh folder instead of reusing numbers the old code produced.  The
folder layout is ``<output_dir>/<name>-<config hash>/<code hash>/``; the record of
what went into the key is ``provenance.json`` in that folder and in the result's
attributes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

__all__ = ["source_hash", "code_record", "code_hash"]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=8)
def source_hash(root: str | None = None) -> tuple[str, int]:
    """(sha256 hex, file count) over the ``*.py`` files below ``root`` (the iclsim package).

    Files are visited in sorted relative-path order; each contributes its relative
    path and its bytes, so renaming, adding or editing a file changes the hash.
    """
    base = Path(root) if root is not None else PACKAGE_ROOT
    digest = hashlib.sha256()
    files = sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts)
    for path in files:
        rel = path.relative_to(base).as_posix()
        digest.update(rel.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest(), len(files)


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
        "platform": device.platform,
        "device_kind": getattr(device, "device_kind", device.platform),
        "x64": bool(jax.config.jax_enable_x64),
    }


def code_hash(record: dict | None = None) -> str:
    """12-hex-digit key of :func:`code_record`."""
    record = code_record() if record is None else record
    blob = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
