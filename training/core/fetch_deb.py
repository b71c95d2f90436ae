"""Pinned Debian packages, fetched once into the same ignored cache as the PyPI archives (DATA.md).

Contract:
- `ensure_deb(pin, cache_dir)` returns `<cache>/downloads/<name>_<version>_<arch>.deb`; it runs
  `apt-get download NAME=VERSION` in that folder (no root needed) only when the file is not there yet,
  and checks its sha256 against the pin (a mismatch is an error, never silently used).
- `extract_deb(deb, dest)` unpacks the package's data tree with `dpkg-deb -x` once into `dest`
  (staged in a `.partial` sibling, a `.complete` marker written last, then renamed into place).
- Every failure raises `FetchError` with a message that says what to do.
Packages are only downloaded and unpacked, never installed.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from models.core.artifacts import sha256_file
from training.core.fetch import DOWNLOADS, EXTRACTED, FetchError, build_once


@dataclass(frozen=True)
class PinnedDeb:
    """A Debian package pinned by exact version and the sha256 of its .deb; `member` is the folder read."""

    name: str
    version: str
    sha256: str
    member: str

    def record(self, deb: Path) -> dict[str, str]:
        """The data-source record for a manifest: name, version, member, archive file and its sha256."""
        return {"name": self.name, "version": self.version, "member": self.member,
                "archive": deb.name, "sha256": sha256_file(deb)}


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:  # no apt/dpkg on this machine (not Debian-like)
        raise FetchError(f"{cmd[0]} is not available ({exc}); fetch the .deb on a Debian/Ubuntu machine") from exc


def find_deb(pin: PinnedDeb, downloads: Path) -> Path | None:
    """The .deb of `pin` already in `downloads` (any architecture), if any."""
    if not downloads.is_dir():
        return None
    found = sorted(downloads.glob(f"{pin.name}_{pin.version}_*.deb"))
    return found[0] if found else None


def ensure_deb(pin: PinnedDeb, cache_dir: Path | str) -> Path:
    """Path of the verified .deb of `pin` under `<cache_dir>/downloads/`, downloading it if needed."""
    downloads = Path(cache_dir) / DOWNLOADS
    deb = find_deb(pin, downloads)
    if deb is None:
        downloads.mkdir(parents=True, exist_ok=True)
        proc = _run(["apt-get", "download", f"{pin.name}={pin.version}"], cwd=downloads)
        deb = find_deb(pin, downloads)
        if proc.returncode != 0 or deb is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise FetchError(
                f"could not download {pin.name}={pin.version} with apt-get (offline, or no Debian sources?). "
                f"Put {pin.name}_{pin.version}_all.deb into {downloads}/ by hand. apt-get said: {' | '.join(tail)}"
            )
    actual = sha256_file(deb)
    if actual != pin.sha256:
        raise FetchError(f"{deb}: sha256 {actual} does not match the pinned {pin.sha256} for "
                         f"{pin.name}={pin.version}; delete the file to re-download it")
    return deb


def extract_deb(deb: Path, dest: Path) -> Path:
    """Unpack the data tree of `deb` into `dest` once (see module docstring); returns `dest`."""

    def fill(staging: Path) -> str:
        proc = _run(["dpkg-deb", "-x", str(deb), str(staging)])
        if proc.returncode != 0:
            raise FetchError(f"dpkg-deb -x {deb} failed: {proc.stderr.strip()}; delete the .deb to re-download it")
        return deb.name

    return build_once(dest, fill)


def ensure_deb_extracted(pin: PinnedDeb, cache_dir: Path | str) -> tuple[Path, Path]:
    """Fetch `pin` and unpack it into `<cache>/extracted/<name>-<version>/`; returns (deb, `member` folder)."""
    deb = ensure_deb(pin, cache_dir)
    root = extract_deb(deb, Path(cache_dir) / EXTRACTED / f"{pin.name}-{pin.version}")
    member = root / pin.member
    if not member.is_dir():
        raise FetchError(f"{deb}: no folder {pin.member!r} in the package; delete {root} and the .deb to refetch")
    return deb, member
