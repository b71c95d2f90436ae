"""Pinned Debian packages: lookup, checksum, offline failure and one-time extraction (no network)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from models.core.artifacts import sha256_file
from training.core import fetch_deb
from training.core.fetch import FetchError
from training.core.fetch_deb import PinnedDeb, ensure_deb, ensure_deb_extracted, extract_deb, find_deb

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")


def _pin(sha256: str = "0" * 64) -> PinnedDeb:
    return PinnedDeb("r-cran-toy", "1.0-1", sha256, "usr/share/toy")


def _build_deb(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: r-cran-toy\nVersion: 1.0-1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: toy\n")
    (root / "usr" / "share" / "toy").mkdir(parents=True)
    (root / "usr" / "share" / "toy" / "data.txt").write_text("austen")
    deb = tmp_path / "cache" / "downloads" / "r-cran-toy_1.0-1_all.deb"
    deb.parent.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True, capture_output=True)
    return deb


def sha256_file_of(data: bytes, tmp_path: Path) -> str:
    probe = tmp_path / "probe.bin"
    probe.write_bytes(data)
    return sha256_file(probe)


def test_existing_deb_is_verified_not_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deb = tmp_path / "downloads" / "r-cran-toy_1.0-1_all.deb"
    deb.parent.mkdir()
    deb.write_bytes(b"deb bytes")
    (tmp_path / "downloads" / "r-cran-toy_1.0-2_all.deb").write_bytes(b"other version")
    monkeypatch.setattr(fetch_deb.subprocess, "run", lambda *a, **k: pytest.fail("must not download"))
    assert find_deb(_pin(), tmp_path / "downloads") == deb
    assert ensure_deb(_pin(sha256_file(deb)), tmp_path) == deb
    with pytest.raises(FetchError, match="does not match"):
        ensure_deb(_pin(), tmp_path)


def test_download_runs_apt_get_in_the_downloads_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def apt_get(cmd, cwd=None, **kwargs):
        calls.append((cmd, cwd))
        (Path(cwd) / "r-cran-toy_1.0-1_all.deb").write_bytes(b"fetched")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch_deb.subprocess, "run", apt_get)
    deb = ensure_deb(_pin(sha256_file_of(b"fetched", tmp_path)), tmp_path / "cache")
    assert deb.read_bytes() == b"fetched"
    assert calls == [(["apt-get", "download", "r-cran-toy=1.0-1"], tmp_path / "cache" / "downloads")]


def test_offline_or_missing_tool_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_deb.subprocess, "run", lambda cmd, **k: subprocess.CompletedProcess(
        cmd, 100, "", "E: Failed to fetch (network unreachable)"))
    with pytest.raises(FetchError, match="by hand.*network unreachable"):
        ensure_deb(_pin(), tmp_path)

    def missing(cmd, **kwargs):
        raise FileNotFoundError(cmd[0])

    monkeypatch.setattr(fetch_deb.subprocess, "run", missing)
    with pytest.raises(FetchError, match="apt-get is not available"):
        ensure_deb(_pin(), tmp_path)


@needs_dpkg
def test_extract_once_with_marker(tmp_path: Path) -> None:
    deb = _build_deb(tmp_path)
    deb_pin = _pin(sha256_file(deb))
    found, member = ensure_deb_extracted(deb_pin, tmp_path / "cache")
    assert found == deb and (member / "data.txt").read_text() == "austen"
    (member / "data.txt").write_text("changed")
    ensure_deb_extracted(deb_pin, tmp_path / "cache")  # complete: left alone
    assert (member / "data.txt").read_text() == "changed"
    with pytest.raises(FetchError, match="no folder"):
        ensure_deb_extracted(PinnedDeb(deb_pin.name, deb_pin.version, deb_pin.sha256, "usr/lib/nothing"),
                             tmp_path / "cache")


@needs_dpkg
def test_broken_deb_leaves_nothing_behind(tmp_path: Path) -> None:
    broken = tmp_path / "broken.deb"
    broken.write_bytes(b"!<arch>\nnot really a deb")
    dest = tmp_path / "out"
    with pytest.raises(FetchError, match="dpkg-deb -x"):
        extract_deb(broken, dest)
    assert not dest.exists() and not dest.with_name("out.partial").exists()
