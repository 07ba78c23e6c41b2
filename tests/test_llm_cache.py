"""iclsim.llm.cache: sha256s remembered across processes, converted copies keyed by content,
verified against their manifest, listed and pruned by ``iclsim llm cache``; the result key
of the llm setting follows the bytes of the data and local model files.

Everything runs on small fake files in a temporary ``$ICLSIM_CACHE`` (no model is loaded),
except the last test (``slow``): a real round trip with smollm2-135m when it is fetched.
Expected digests are computed here with hashlib, independently of the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from iclsim.llm import cache, cli, data, models
from iclsim.llm.errors import LLMError


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A fresh cache folder; nothing remembered from other tests."""
    c = tmp_path / "cache"
    monkeypatch.setenv("ICLSIM_CACHE", str(c))
    monkeypatch.setattr(cache, "_MEMO", {})
    monkeypatch.setattr(cache, "_VERIFIED", set())
    return c


@pytest.fixture
def hashes(monkeypatch):
    """Counts the files actually read by the hashing function."""
    seen = []
    real = cache._sha256

    def counting(path, chunk=1 << 22):
        seen.append(Path(path).name)
        return real(path, chunk)

    monkeypatch.setattr(cache, "_sha256", counting)
    return seen


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


# ------------------------------------------------------------------------------ the sha256 index


def test_file_sha256_is_the_sha256(root, tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello" * 1000)
    assert cache.file_sha256(f) == _sha(b"hello" * 1000)


def test_index_is_remembered_across_processes(root, tmp_path, hashes, monkeypatch):
    monkeypatch.setattr(cache, "RACY_NS", -10**15)  # trust the just-written file
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert cache.file_sha256(f) == _sha(b"abc") and hashes == ["a.bin"]
    index = json.loads((root / cache.INDEX).read_text())
    assert index["files"][str(f.resolve())]["sha256"] == _sha(b"abc")
    monkeypatch.setattr(cache, "_MEMO", {})  # a new process: only the index file is left
    assert cache.file_sha256(f) == _sha(b"abc") and hashes == ["a.bin"]
    assert not list(root.glob(f".{cache.INDEX}.*"))  # atomic write: no temporary left


def test_a_corrupt_index_is_ignored_and_rebuilt(root, tmp_path, hashes, monkeypatch):
    monkeypatch.setattr(cache, "RACY_NS", -10**15)
    root.mkdir()
    (root / cache.INDEX).write_text("{not json")
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert cache.file_sha256(f) == _sha(b"abc")
    assert json.loads((root / cache.INDEX).read_text())["files"]
    (root / cache.INDEX).write_text('{"files": {"%s": {"sha256": 5}}}' % f.resolve())
    monkeypatch.setattr(cache, "_MEMO", {})
    assert cache.file_sha256(f) == _sha(b"abc") and hashes == ["a.bin", "a.bin"]


def test_same_size_and_mtime_other_bytes_is_rehashed(root, tmp_path, monkeypatch):
    """``cp -p`` of another file of the same size over a hashed one: a new sha256."""
    monkeypatch.setattr(cache, "RACY_NS", -10**15)
    f = tmp_path / "a.bin"
    f.write_bytes(b"A" * 64)
    os.utime(f, ns=(10**18, 10**18))
    assert cache.file_sha256(f) == _sha(b"A" * 64)
    other = tmp_path / "b.tmp"
    other.write_bytes(b"B" * 64)
    os.utime(other, ns=(10**18, 10**18))
    os.replace(other, f)  # same path, size and mtime; another inode and ctime
    assert cache.file_sha256(f) == _sha(b"B" * 64)


def test_a_file_rewritten_in_place_right_after_hashing_is_rehashed(root, tmp_path):
    """Within the same clock tick size, mtime, ctime and inode can all stay: a file that
    new is never remembered (RACY_NS), so a rewrite in place is always seen."""
    f = tmp_path / "a.bin"
    f.write_bytes(b"A" * 64)
    os.utime(f, ns=(10**18, 10**18))
    assert cache.file_sha256(f) == _sha(b"A" * 64)
    with open(f, "r+b") as fh:
        fh.write(b"B" * 64)
    os.utime(f, ns=(10**18, 10**18))
    assert cache.file_sha256(f) == _sha(b"B" * 64)
    assert not (Path(os.environ["ICLSIM_CACHE"]) / cache.INDEX).exists()


def test_cached_sha256_of_models_uses_the_index(root, tmp_path, hashes, monkeypatch):
    monkeypatch.setattr(cache, "RACY_NS", -10**15)
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 100)
    assert models.cached_sha256(f) == models.cached_sha256(f) == _sha(f.read_bytes())
    assert hashes == ["m.gguf"]


# ------------------------------------------------------------------------------ converted_folder


def test_converted_key_follows_the_sha256_and_the_libraries():
    a = cache.converted_key("0" * 64, {"transformers": "5.0", "torch": "2.0"})
    assert a == cache.converted_key("0" * 64, {"transformers": "5.0", "torch": "2.0"})
    assert a != cache.converted_key("1" * 64, {"transformers": "5.0", "torch": "2.0"})
    assert a != cache.converted_key("0" * 64, {"transformers": "5.1", "torch": "2.0"})
    assert a != cache.converted_key("0" * 64, {"transformers": "5.0", "torch": "2.1"})


def test_converted_folder_is_keyed_by_content(root, tmp_path, monkeypatch):
    """Two GGUF files of equal size and mtime but different bytes get different copies; the
    same bytes at another path share one; a packaged model's known sha256 is not re-hashed."""
    backend = pytest.importorskip("iclsim.llm.backend")
    a, b, c = (tmp_path / d / "m.gguf" for d in ("a", "b", "c"))
    for path, byte in ((a, b"x"), (b, b"y"), (c, b"x")):
        path.parent.mkdir()
        path.write_bytes(byte * 100)
        os.utime(path, ns=(10**18, 10**18))
    fa, fb, fc = (backend.converted_folder(p) for p in (a, b, c))
    assert fa.parent == root / "converted" and fa.name.startswith("m-")
    assert fa != fb and fa == fc
    key = cache.converted_key(_sha(b"x" * 100))
    assert fa.name == f"m-{key}"

    def no_hashing(*args, **kwargs):
        raise AssertionError("a known sha256 must not be recomputed")

    monkeypatch.setattr(cache, "_sha256", no_hashing)
    assert backend.converted_folder(b, _sha(b"x" * 100)) == fa
    monkeypatch.setenv("ICLSIM_CONVERTED", "0")
    assert backend.converted_folder(a) is None


# ------------------------------------------------------------------------------ verification


def fake_copy(root: Path, name: str = "m-0123456789abcdef", *, source: Path | None = None,
              source_bytes: bytes = b"GGUF source", libraries: dict | None = None) -> Path:
    """A converted copy made by hand: two files, their manifest, a source GGUF file."""
    folder = root / "converted" / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    if source is None:
        source = root.parent / f"{name}.gguf"
        source.write_bytes(source_bytes)
    cache.write_manifest(folder, source=source, source_sha256=_sha(source_bytes))
    if libraries is not None:
        m = json.loads((folder / cache.MANIFEST).read_text())
        m["libraries"] = libraries
        (folder / cache.MANIFEST).write_text(json.dumps(m))
    return folder


def test_an_intact_copy_verifies_and_touches_last_used(root):
    folder = fake_copy(root)
    m = json.loads((folder / cache.MANIFEST).read_text())
    assert m["files"]["model.safetensors"] == {
        "size": 10240, "sha256": _sha(bytes(range(256)) * 40)}
    assert set(m["files"]) == {"model.safetensors", "config.json"}
    assert m["source"]["sha256"] == _sha(b"GGUF source") and m["libraries"]
    os.utime(folder / cache.MANIFEST, (1, 1))
    cache.verify_converted(folder)
    assert (folder / cache.MANIFEST).stat().st_mtime > time.time() - 60


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "extra", "manifest"])
def test_a_corrupted_copy_is_one_line_error(root, damage):
    folder = fake_copy(root)
    weights = folder / "model.safetensors"
    if damage == "flip":
        blob = bytearray(weights.read_bytes())
        blob[5000] ^= 1
        weights.write_bytes(bytes(blob))
    elif damage == "truncate":
        with open(weights, "r+b") as f:
            f.truncate(100)
    elif damage == "delete":
        weights.unlink()
    elif damage == "extra":
        (folder / "stray.bin").write_bytes(b"?")
    else:
        (folder / cache.MANIFEST).write_text("{")
    with pytest.raises(LLMError) as exc:
        cache.verify_converted(folder)
    msg = _one_line(exc)
    assert str(folder) in msg and "iclsim llm cache --prune" in msg
    expect = {"flip": "model.safetensors has sha256", "truncate":
              "model.safetensors has 100 bytes, expected 10240", "delete":
              "model.safetensors is missing", "extra": "stray.bin is not in the manifest",
              "manifest": "manifest"}[damage]
    assert expect in msg
    # marked, so the listing shows it and --prune removes it
    (listed,) = cache.list_copies()
    assert listed.state.startswith("CORRUPT") and listed.removable
    assert [c.folder for c in cache.prune()] == [folder] and not folder.exists()


def test_verification_happens_once_per_process(root, hashes):
    folder = fake_copy(root)
    hashes.clear()
    cache.verify_converted(folder)
    cache.verify_converted(folder)
    assert sorted(hashes) == ["config.json", "model.safetensors"]


def test_load_refuses_a_corrupted_copy_before_reading_it(root, tmp_path):
    """``backend.load`` of a GGUF file whose copy is corrupt: the one-line error, no parse."""
    backend = pytest.importorskip("iclsim.llm.backend")
    gguf = tmp_path / "local" / "m.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"not really a GGUF file")
    folder = backend.converted_folder(gguf)
    fake_copy(root, folder.name, source=gguf, source_bytes=gguf.read_bytes())
    with open(folder / "model.safetensors", "r+b") as f:
        f.seek(77)
        f.write(b"\xff")
    src = SimpleNamespace(name=str(gguf), folder=gguf.parent, gguf_file=gguf.name,
                          kind="unknown", n_params=None, family="")
    with pytest.raises(LLMError) as exc:
        backend.load(src)
    assert "model.safetensors has sha256" in _one_line(exc)


# ------------------------------------------------------------------------------ listing, pruning


def _installed() -> dict:
    return cache.library_versions()


def test_listing_and_prune(root, tmp_path, monkeypatch, capsys):
    ok = fake_copy(root, "ok-1111111111111111", libraries=_installed())
    gone = fake_copy(root, "gone-2222222222222222", libraries=_installed())
    (tmp_path / "gone-2222222222222222.gguf").unlink()
    changed = fake_copy(root, "changed-3333333333333333", libraries=_installed())
    (tmp_path / "changed-3333333333333333.gguf").write_bytes(b"other bytes")
    libs = fake_copy(root, "libs-4444444444444444",
                     libraries={**_installed(), "torch": "0.0.1"})
    old = root / "converted" / "old-5555555555555555"  # the first format: versions only
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"w")
    (old / cache.MANIFEST).write_text('{"transformers": "1", "torch": "2"}')
    incomplete = root / "converted" / "incomplete-6666666666666666"
    incomplete.mkdir()
    (incomplete / "model.safetensors").write_bytes(b"w")
    leftover = root / "converted" / ".ok-1111111111111111.abc"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")
    os.utime(leftover, (time.time() - 2 * cache.TEMP_GRACE_S,) * 2)
    running = root / "converted" / ".ok-1111111111111111.def"
    running.mkdir()

    states = {c.folder.name: c.state for c in cache.list_copies()}
    assert states["ok-1111111111111111"] == "ok"
    assert states["gone-2222222222222222"] == "STALE: source file gone"
    assert states["changed-3333333333333333"] == "STALE: source file changed"
    assert states["libs-4444444444444444"].startswith("STALE: made with torch 0.0.1")
    assert states["old-5555555555555555"].startswith("STALE: made by older")
    assert states["incomplete-6666666666666666"].startswith("INCOMPLETE")
    assert states[leftover.name].startswith("INCOMPLETE")
    assert states[running.name].startswith("IN PROGRESS")

    from iclsim import cli as top

    assert top.main(["llm", "cache"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("ok-1111111111111111"))
    assert str(tmp_path / "ok-1111111111111111.gguf") in row and _sha(b"GGUF source")[:12] in row
    assert _installed()["transformers"] in row and row.rstrip().endswith("ok")
    assert "8 in " in out and "stale, incomplete or corrupt: 6" in out and "--prune" in out

    assert top.main(["llm", "cache", "--prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 6 folder(s)" in out and old.exists() and leftover.exists()

    assert top.main(["llm", "cache", "--prune"]) == 0
    assert "removed 6 folder(s)" in capsys.readouterr().out
    left = sorted(p.name for p in (root / "converted").iterdir())
    assert left == sorted([ok.name, running.name])
    assert not any(p.exists() for p in (gone, changed, libs, old, incomplete, leftover))

    assert top.main(["llm", "cache", "--all"]) == 0
    assert not list((root / "converted").iterdir())
    assert top.main(["llm", "cache"]) == 0
    assert "no converted copies" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--bogus"], ["--prune=1"], ["--dry-run"], ["extra"]])
def test_cache_bad_flags_are_one_line_exit_2(root, argv, capsys):
    from iclsim import cli as top

    with pytest.raises(SystemExit) as exc:
        rc = top.main(["llm", "cache", *argv])
        raise SystemExit(rc)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iclsim: error: llm cache:"), err


def test_cache_table_without_copies(root):
    assert cli.cache_table().startswith("no converted copies in")


# ------------------------------------------------------------------------------ the result key


@pytest.fixture
def fake_data(root, monkeypatch):
    """Four small data files in the temporary cache, pinned (DATA_FILES monkeypatched)."""
    folder = data.data_dir()
    folder.mkdir(parents=True)
    for task, (fn, _) in list(data.DATA_FILES.items()):
        blob = f"1\t2.5\t{task} is great\r\n".encode()
        (folder / fn).write_bytes(blob)
        monkeypatch.setitem(data.DATA_FILES, task, (fn, _sha(blob)))
    return folder


def _provenance(tasks=("movies", "tweets"), model=None):
    pytest.importorskip("torch")
    from iclsim.engine.config import parse
    from iclsim.llm import sweep

    cfg = parse(sweep.LLMSweepConfig, {"setting": "llm", "axes": {
        "task": list(tasks), "model": [model or sweep.TINY_MODEL]}})
    return sweep.LLM.provenance(cfg)


def test_provenance_records_the_sha256_of_each_data_file_read(fake_data):
    fn = data.DATA_FILES["movies"][0]
    got = _provenance()["data"]
    assert got == {fn: "sha256:" + _sha((fake_data / fn).read_bytes()),
                   data.DATA_FILES["tweets"][0]: "sha256:" + data.DATA_FILES["tweets"][1]}


def test_provenance_follows_the_bytes_and_refuses_a_file_off_its_pin(fake_data, monkeypatch):
    fn = data.DATA_FILES["movies"][0]
    before = _provenance()["data"]
    blob = b"1\t-2.5\tmovies is awful\r\n"
    (fake_data / fn).write_bytes(blob)
    with pytest.raises(LLMError) as exc:
        _provenance()
    msg = _one_line(exc)
    assert msg == (f"data file {fake_data / fn} changed since fetch: sha256 {_sha(blob)}, "
                   f"expected {data.DATA_FILES['movies'][1]}; rerun iclsim llm fetch data")
    monkeypatch.setitem(data.DATA_FILES, "movies", (fn, _sha(blob)))  # pinned anew
    after = _provenance()["data"]
    assert after != before and after[fn] == "sha256:" + _sha(blob)


def test_provenance_unpinned_test_data(fake_data):
    fn = data.DATA_FILES["movies"][0]
    (fake_data / fn).write_bytes(b"1\t-2.5\tchanged\r\n")
    (fake_data / data.UNPINNED).touch()
    got = _provenance()["data"]
    assert got["unpinned"] is True and got[fn] == "sha256:" + _sha(b"1\t-2.5\tchanged\r\n")


def test_provenance_missing_data_is_one_line(root):
    with pytest.raises(LLMError) as exc:
        _provenance()
    assert "iclsim llm fetch data" in _one_line(exc)


def test_provenance_of_a_local_model_follows_its_bytes(fake_data, tmp_path):
    gguf = tmp_path / "local.gguf"
    gguf.write_bytes(b"GGUF one")
    os.utime(gguf, ns=(10**18, 10**18))
    first = _provenance(model=str(gguf))["models"][str(gguf)]
    assert first == "sha256:" + _sha(b"GGUF one")
    gguf.write_bytes(b"GGUF two")  # same size, same mtime
    os.utime(gguf, ns=(10**18, 10**18))
    assert _provenance(model=str(gguf))["models"][str(gguf)] == "sha256:" + _sha(b"GGUF two")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"w")
    assert _provenance(model=str(hf))["models"][str(hf)] == {
        "config.json": "sha256:" + _sha(b"{}"), "model.safetensors": "sha256:" + _sha(b"w")}


# ------------------------------------------------------------------------------ the real model


@pytest.mark.slow
def test_real_smollm2_round_trip(tmp_path, monkeypatch):
    """First load converts (GGUF parse) and writes the manifest; a second load in a "new
    process" verifies the copy and reads it; the scores are equal."""
    backend = pytest.importorskip("iclsim.llm.backend")
    real = models.model_file("smollm2-135m")
    if not real.is_file():
        pytest.skip("smollm2-135m not fetched (iclsim llm fetch smollm2-135m)")
    c = tmp_path / "cache"
    (c / "models").mkdir(parents=True)
    os.symlink(real, c / "models" / real.name)
    monkeypatch.setenv("ICLSIM_CACHE", str(c))
    monkeypatch.setattr(cache, "_VERIFIED", set())
    monkeypatch.setattr(backend, "_LOADED", {})
    src = models.resolve("smollm2-135m")
    first = backend.load(src)
    texts = ["Review: a fine film\nSentiment:", "Review: dull and slow\nSentiment:"]
    want = [first.model(**first.tokenizer(t, return_tensors="pt")).logits[0, -1] for t in texts]
    (folder,) = (c / "converted").iterdir()
    assert (folder / cache.MANIFEST).exists()
    backend._LOADED.clear()
    cache._VERIFIED.clear()
    t0 = time.perf_counter()
    second = backend.load(src)
    assert time.perf_counter() - t0 < 60 and str(folder) in str(second.model.name_or_path)
    got = [second.model(**second.tokenizer(t, return_tensors="pt")).logits[0, -1] for t in texts]
    for w, g in zip(want, got):
        assert bool((w == g).all())
    assert [c.state for c in cache.list_copies()] == ["ok"]
