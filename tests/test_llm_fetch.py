"""iclsim.llm.models / fetch / cli: the cache, verified assembly, resolve, without network.

The one network step, ``fetch._pip_download``, is replaced by a function that writes tiny
fake wheels (and a fake sdist for the data), so chunk order, sha256 checks, refusal of a
mismatch, idempotence and the error messages are all tested offline in well under a second.
Expected hashes are computed here with hashlib on the bytes the fake wrote, independently of
the code under test.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from iclsim.llm import cli, data, fetch, models
from iclsim.llm.cache import INDEX
from iclsim.llm.errors import LLMError

N_CHUNKS = 11  # part10 and part11 sort before part2 by name: assembly must follow package order


def _chunks() -> list[bytes]:
    return [bytes([i]) * (100 + 37 * i) + f"chunk{i}".encode() for i in range(N_CHUNKS)]


def _tiny(sha256: str | None = None) -> models.PackagedModel:
    blob = b"".join(_chunks())
    return models.PackagedModel(
        name="tiny", title="Tiny", family="Fake", kind="base", n_params=123,
        quantization="none", license="MIT",
        packages=tuple(f"tiny-model.part{i + 1}==1.0" for i in range(N_CHUNKS)),
        sha256=sha256 or hashlib.sha256(blob).hexdigest(), size=len(blob))


def _wheel(path: Path, pkg: str, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{pkg}/__init__.py", "")
        for name, content in members.items():
            z.writestr(name, content)
        z.writestr(f"{pkg}-1.0.dist-info/METADATA", "Name: x\n")


class FakePip:
    """Stands in for ``fetch._pip_download``: writes fake wheels / a fake sdist, counts calls."""

    def __init__(self, ground_truth: dict[str, bytes] | None = None):
        self.calls: list[tuple[list[str], bool]] = []
        self.ground_truth = ground_truth or {}

    def __call__(self, requirements, dest, *, sdist=False):
        self.calls.append((list(requirements), sdist))
        dest = Path(dest)
        if sdist:
            self._sdist(dest)
            return
        chunks = _chunks()
        # write in reverse so directory order says nothing about chunk order
        for req in reversed(requirements):
            dist, _, ver = req.partition("==")
            i = int(re.search(r"part(\d+)$", dist).group(1))
            pkg = re.sub(r"[-.]", "_", dist)
            _wheel(dest / f"{pkg}-{ver}-py3-none-any.whl", pkg,
                   {f"{pkg}/data/part{i:02d}.bin": chunks[i - 1]})

    def _sdist(self, dest: Path) -> None:
        inner = io.BytesIO()
        with tarfile.open(fileobj=inner, mode="w:gz") as t:
            for fn, content in self.ground_truth.items():
                info = tarfile.TarInfo(f"hutto_ICWSM_2014/{fn}")
                info.size = len(content)
                t.addfile(info, io.BytesIO(content))
        outer = dest / "vaderSentiment-3.3.2.tar.gz"
        with tarfile.open(outer, mode="w:gz") as t:
            blob = inner.getvalue()
            info = tarfile.TarInfo("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
            info.size = len(blob)
            t.addfile(info, io.BytesIO(blob))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ICLSIM_CACHE", str(root))
    return root


@pytest.fixture
def pip(monkeypatch):
    fake = FakePip()
    monkeypatch.setattr(fetch, "_pip_download", fake)
    return fake


@pytest.fixture
def tiny(monkeypatch):
    m = _tiny()
    monkeypatch.setitem(models.PACKAGED, "tiny", m)
    return m


def _files(root: Path) -> list[Path]:
    """Files under ``root`` (the sha256 index, remembered hashes, is not a download)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != INDEX) \
        if root.exists() else []


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


# --------------------------------------------------------------------------- cache location

def test_cache_dir_honours_iclsim_cache(cache):
    assert models.cache_dir() == cache
    assert models.model_file("smollm2-135m") == cache / "models" / "smollm2-135m.gguf"
    assert data.data_dir().parent.parent == cache


def test_cache_dir_default_is_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("ICLSIM_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / ".cache" / "iclsim"
    monkeypatch.setenv("ICLSIM_CACHE", "")  # empty counts as unset
    assert models.cache_dir() == tmp_path / ".cache" / "iclsim"


def test_packaged_table_is_consistent():
    assert list(models.PACKAGED) == ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b",
                                     "qwen2.5-coder-1.5b"]
    for name, m in models.PACKAGED.items():
        assert m.name == name and m.kind in ("base", "instruct")
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256)
        assert m.size > 0 and m.n_params > 0
        assert all(re.fullmatch(r"[A-Za-z0-9.-]+==[0-9.]+", p) for p in m.packages)
    # the params ordering is the size ordering (a model larger on disk has more parameters)
    sizes = [m.size for m in models.PACKAGED.values()]
    params = [m.n_params for m in models.PACKAGED.values()]
    assert sizes == sorted(sizes) and params == sorted(params)


# --------------------------------------------------------------------------- fetch_model

def test_fetch_assembles_chunks_in_package_order_and_verifies(cache, pip, tiny):
    path = fetch.fetch_model("tiny", log=lambda m: None)
    assert path == cache / "models" / "tiny.gguf"
    assert path.read_bytes() == b"".join(_chunks())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == tiny.sha256
    assert pip.calls == [(list(tiny.packages), False)]
    assert _files(cache) == [path]  # downloads and temporary files are gone


def test_fetch_is_idempotent(cache, pip, tiny):
    fetch.fetch_model("tiny", log=lambda m: None)
    logs = []
    fetch.fetch_model("tiny", log=logs.append)
    assert len(pip.calls) == 1  # the second call downloads nothing
    assert "already in the cache" in logs[0]


def test_fetch_replaces_a_corrupt_cache_file(cache, pip, tiny):
    target = models.model_file("tiny")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x" * tiny.size)
    fetch.fetch_model("tiny", log=lambda m: None)
    assert len(pip.calls) == 1
    assert target.read_bytes() == b"".join(_chunks())


def test_fetch_refuses_a_sha256_mismatch_and_leaves_nothing(cache, pip, monkeypatch):
    monkeypatch.setitem(models.PACKAGED, "tiny", _tiny(sha256="0" * 64))
    with pytest.raises(LLMError) as exc:
        fetch.fetch_model("tiny", log=lambda m: None)
    msg = _one_line(exc)
    assert "tiny" in msg and "0" * 64 in msg
    assert hashlib.sha256(b"".join(_chunks())).hexdigest() in msg  # the actual hash
    assert _files(cache) == []
    assert not list(cache.glob(".download-*"))


def test_fetch_unknown_name(cache, pip):
    with pytest.raises(LLMError) as exc:
        fetch.fetch_model("gpt-5", log=lambda m: None)
    assert "smollm2-135m" in _one_line(exc) and pip.calls == []


def test_pip_download_command_and_error(monkeypatch, tmp_path):
    seen = {}

    class Proc:
        returncode = 1
        stdout = ""
        stderr = ("WARNING: Location 'file:///x' is ignored\n"
                  "ERROR: No matching distribution found for nope==1\n")

    def run(cmd, **kw):
        seen["cmd"] = cmd
        return Proc()

    monkeypatch.setattr(fetch.subprocess, "run", run)
    with pytest.raises(LLMError) as exc:
        fetch._pip_download(["nope==1"], tmp_path)
    assert "No matching distribution found for nope==1" in _one_line(exc)
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert cmd[cmd.index("--only-binary") + 1] == ":all:"
    assert cmd[cmd.index("-d") + 1] == str(tmp_path) and cmd[-1] == "nope==1"
    with pytest.raises(LLMError):
        fetch._pip_download(["nope==1"], tmp_path, sdist=True)
    assert seen["cmd"][seen["cmd"].index("--no-binary") + 1] == ":all:"


# --------------------------------------------------------------------------- resolve

def test_resolve_a_fetched_model(cache, pip, tiny):
    fetch.fetch_model("tiny", log=lambda m: None)
    src = models.resolve("tiny")
    assert src == models.ModelSource("tiny", cache / "models", "tiny.gguf", "base", 123, "Fake")


def test_resolve_detects_a_partial_file(cache, pip, tiny):
    path = fetch.fetch_model("tiny", log=lambda m: None)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(LLMError) as exc:
        models.resolve("tiny")
    msg = _one_line(exc)
    assert str(path) in msg and tiny.sha256 in msg and "rerun iclsim llm fetch tiny" in msg
    models.resolve("tiny", verify=False)  # verify=False trusts the file


def test_resolve_detects_a_corrupt_file_of_the_right_size(cache, pip, tiny):
    path = fetch.fetch_model("tiny", log=lambda m: None)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(LLMError) as exc:
        models.resolve("tiny")
    msg = _one_line(exc)
    assert str(path) in msg and tiny.sha256 in msg and hashlib.sha256(blob).hexdigest() in msg
    assert "rerun iclsim llm fetch tiny" in msg


def test_resolve_not_fetched(cache):
    with pytest.raises(LLMError) as exc:
        models.resolve("smollm2-135m")
    msg = _one_line(exc)
    assert "not in the cache" in msg and str(cache / "models") in msg
    assert msg.endswith("run: iclsim llm fetch smollm2-135m")


def test_resolve_unknown_name_lists_the_packaged_models(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LLMError) as exc:
        models.resolve("llama-70b")
    msg = _one_line(exc)
    assert "'llama-70b'" in msg and all(n in msg for n in models.PACKAGED)


def test_resolve_a_gguf_path(tmp_path):
    f = tmp_path / "some" / "model.Q4.gguf"
    f.parent.mkdir()
    f.write_bytes(b"GGUF")
    src = models.resolve(str(f))
    assert (src.folder, src.gguf_file, src.kind, src.n_params) == (f.parent, "model.Q4.gguf", "unknown", None)
    assert src.name == str(f)


def test_resolve_a_hugging_face_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    src = models.resolve(str(tmp_path))
    assert (src.folder, src.gguf_file, src.kind) == (tmp_path, None, "unknown")


@pytest.mark.parametrize("what", ["empty folder", "other file"])
def test_resolve_other_paths_are_refused(tmp_path, what):
    p = tmp_path / "x"
    if what == "empty folder":
        p.mkdir()
    else:
        p.write_text("hello")
    with pytest.raises(LLMError) as exc:
        models.resolve(str(p))
    assert str(p) in _one_line(exc) and "config.json" in str(exc.value)


def test_cached_models_lists_what_is_there(cache, pip, tiny):
    assert models.cached_models() == []
    path = fetch.fetch_model("tiny", log=lambda m: None)
    assert ("tiny", path, tiny.size) in models.cached_models()


# --------------------------------------------------------------------------- fetch_data

def _fake_ground_truth() -> dict[str, bytes]:
    return {fn: f"1\t2.5\t{task} is great\r\n2\t-3.0\t{task} is awful".encode()
            for task, (fn, _) in data.DATA_FILES.items()}


@pytest.fixture
def fake_data(monkeypatch, pip):
    files = _fake_ground_truth()
    for task, (fn, _) in list(data.DATA_FILES.items()):
        monkeypatch.setitem(data.DATA_FILES, task, (fn, hashlib.sha256(files[fn]).hexdigest()))
    pip.ground_truth = files
    return files


def test_fetch_data_extracts_the_four_files_and_is_idempotent(cache, pip, fake_data):
    folder = fetch.fetch_data(log=lambda m: None)
    assert folder == data.data_dir()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == fake_data
    assert pip.calls == [(["vaderSentiment==3.3.2"], True)]
    assert _files(cache) == sorted(folder / fn for fn in fake_data)
    fetch.fetch_data(log=lambda m: None)
    assert len(pip.calls) == 1


def test_fetch_data_refuses_a_mismatch(cache, pip, fake_data, monkeypatch):
    fn, _ = data.DATA_FILES["tweets"]
    monkeypatch.setitem(data.DATA_FILES, "tweets", (fn, "f" * 64))
    with pytest.raises(LLMError) as exc:
        fetch.fetch_data(log=lambda m: None)
    assert fn in _one_line(exc) and "f" * 64 in str(exc.value)
    assert _files(cache) == []


def test_fetch_data_missing_file_in_the_sdist(cache, pip, fake_data):
    del pip.ground_truth["tweets_GroundTruth.txt"]
    with pytest.raises(LLMError) as exc:
        fetch.fetch_data(log=lambda m: None)
    assert "tweets_GroundTruth.txt" in _one_line(exc)
    assert _files(cache) == []


# --------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iclsim")
    cli.add_subcommands(p.add_subparsers(dest="command", required=True))
    return p


def test_cli_fetch_models_and_data(cache, pip, tiny, fake_data, capsys):
    args = _parser().parse_args(["llm", "fetch", "tiny", "data", "tiny"])
    assert args.func(args) == 0
    assert models.model_file("tiny").read_bytes() == b"".join(_chunks())
    assert [c[1] for c in pip.calls] == [False, True]  # tiny once, then data
    assert "sha256 verified" in capsys.readouterr().out


def test_cli_fetch_all_expands_to_data_and_every_model(monkeypatch):
    assert cli._fetch_targets(["all", "smollm2-135m"]) == ["data", *models.PACKAGED]


def test_cli_fetch_unknown_name_is_an_llm_error(cache, pip):
    args = _parser().parse_args(["llm", "fetch", "data", "bogus"])
    with pytest.raises(LLMError) as exc:
        args.func(args)
    msg = _one_line(exc)
    assert "'bogus'" in msg and "all" in msg and "smollm2-135m" in msg
    assert pip.calls == []  # validated before anything is downloaded


def test_cli_models_table(cache, pip, tiny, capsys):
    fetch.fetch_model("tiny", log=lambda m: None)
    partial = models.model_file("smollm2-135m")
    partial.write_bytes(b"abc")
    args = _parser().parse_args(["llm", "models"])
    assert args.func(args) == 0
    rows = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines() if ln.strip()}
    # columns: name family kind params quant size fetched path (family and size hold a space)
    assert rows["tiny"][-2] == "yes" and rows["smollm2-135m"][-2] == "partial"
    assert rows["gemma3-270m"][-2] == "no"
    assert rows["tiny"][-1] == str(models.model_file("tiny"))
    assert "1.54B" in rows["qwen2.5-coder-1.5b"] and "494M" in rows["qwen2.5-coder-0.5b"]
    assert "fetch data" in rows["data"][-1] or "no" in rows["data"]


# --------------------------------------------------------------------------- the real cache

@pytest.mark.parametrize("name", list(models.PACKAGED))
def test_real_cache_files_have_the_packaged_size(name):
    path = models.model_file(name)
    if not path.is_file():
        pytest.skip(f"{name} not fetched into {path.parent} (run: iclsim llm fetch {name})")
    assert path.stat().st_size == models.PACKAGED[name].size
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
