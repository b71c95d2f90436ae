"""Artifact directories: `<root>/<name>/<version>/` with a manifest written last (`name` is the model's name;
a task's default model is named after its task, and manifests without a name are read as that).

Layout of a complete artifact:
    model/            save_pretrained output (safetensors only) and the tokenizer
    reports/          metrics.json, reliability diagram, training curves
    manifest.json     written last; its presence means the artifact is complete

Writing goes to a hidden staging sibling (`.staging-<version>`), which is renamed into place only after
the manifest is on disk, so a crash leaves no directory a loader would pick up. Loading verifies the
schema version, the sha256 of every file, and that no pickle-format weights are present.
Errors are always `ArtifactError` with a message naming the artifact and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_DIR = "model"
REPORTS_DIR = "reports"
# Weight formats that unpickle arbitrary code on load; an artifact holding one is refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# A manifest's `task` is the model's kind; the sentiment predictor serves every classification model, so the
# kind `classification` (what jobs write) and the older `sentiment` both name it.
TASK_ALIASES = {"classification": "sentiment"}
MANIFEST_TASKS = {"sentiment": "classification"}


def canonical_task(task: str) -> str:
    """The predictor task of a manifest or request task name (`classification` → `sentiment`)."""
    return TASK_ALIASES.get(task, task)


def manifest_task(task: str) -> str:
    """What a job writes as its manifest's `task` for predictor task `task` (`sentiment` → `classification`)."""
    return MANIFEST_TASKS.get(task, task)


class ArtifactError(RuntimeError):
    """An artifact is missing, incomplete, corrupt, unsafe or not usable for MC dropout."""


@dataclass
class Manifest:
    """Self-description of one artifact (docs/architecture.md §3). Sections are plain JSON dicts.

    - `dropout`: {"rate": float, "sites": {"hidden": p, "attention": p, "head": p},
      "mc_sites": [...live at MC time by default], "mc_last_k": int, "num_layers": int}
    - `calibration`: {"temperature": float, "mc_samples": T it was fitted at,
      "abstain": {"measure": str, "threshold": float, "target_risk": float, "coverage": float}}
    - `data`: {"sources": [{"name", "version", "sha256", "member"}], "splits": {"train": n, ...}}
    - `preprocessing`: what serving must repeat exactly (sentiment: {"max_length", "head_tokens"})
    """

    task: str
    version: str
    model_class: str
    # The model's name, its directory under the artifacts root; None (manifests written before names): the task's.
    name: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION
    labels: list[str] | None = None
    libraries: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    training_config: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    dropout: dict[str, Any] = field(default_factory=dict)
    default_mc_samples: int = 20
    calibration: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """The model's name: `name`, or the task's default model (named after the task) when the manifest has none."""
        return self.name or canonical_task(self.task)

    @property
    def predictor_task(self) -> str:
        """The task of the predictor that serves this artifact (`task` with aliases folded)."""
        return canonical_task(self.task)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: Path | str = "?") -> Manifest:
        if not isinstance(raw, dict):
            raise ArtifactError(f"{where}: manifest is not a JSON object")
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise ArtifactError(
                f"{where}: manifest schema_version {raw.get('schema_version')!r}, expected {SCHEMA_VERSION}"
            )
        known = set(cls.__dataclass_fields__)
        missing = {"task", "version", "model_class"} - raw.keys()
        if missing:
            raise ArtifactError(f"{where}: manifest lacks {sorted(missing)}")
        return cls(**{k: v for k, v in raw.items() if k in known})


VERSION_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]+")


def new_version_id(now: datetime | None = None, after: str | None = None) -> str:
    """Sortable, unique version id: UTC timestamp plus a short random suffix. With `after` (the version a new
    one derives from) the id sorts after it even within the same second, since the newest id is served."""
    now = now or datetime.now(UTC)
    if after is not None:
        floor = datetime.strptime(after.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        now = max(now, floor + timedelta(seconds=1))
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the weights and tokenisation."""
    import tokenizers
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


def write_artifact(root: Path, manifest: Manifest, write_files: Callable[[Path], None]) -> Path:
    """Create `<root>/<name>/<version>/` (name: `manifest.model_name`) atomically and return its path.

    `write_files(staging_dir)` writes the model, tokenizer and reports; then every file is hashed into
    `manifest.files`, the manifest is written (temp file + rename), and the staging directory is renamed
    into place, under a version id that sorts after every existing one of that name (the newest is served).
    On any exception the staging directory is removed and the error re-raised.
    """
    task_dir = Path(root) / manifest.model_name
    final = task_dir / manifest.version
    if final.exists():
        raise ArtifactError(f"{final}: already exists")
    staging = task_dir / f".staging-{manifest.version}"
    staging.mkdir(parents=True, exist_ok=False)
    try:
        write_files(staging)
        unsafe = [p for p in _files_under(staging) if p.suffix in PICKLE_SUFFIXES]
        if unsafe:
            raise ArtifactError(f"refusing to write pickle-format files: {[p.name for p in unsafe]}")
        manifest.files = {p.relative_to(staging).as_posix(): sha256_file(p) for p in _files_under(staging)}
        # The newest id is served: one written within the same second as an earlier one must still sort after it.
        newest = max((p.name for p in list_artifacts(root, manifest.model_name)), default=None)
        if newest is not None and newest >= manifest.version and VERSION_ID.fullmatch(newest):
            manifest.version = new_version_id(after=newest)
            final = task_dir / manifest.version
        tmp = staging / f"{MANIFEST_NAME}.tmp"
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(manifest.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, staging / MANIFEST_NAME)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def read_manifest(artifact_dir: Path) -> Manifest:
    """Parse the manifest without checking files (cheap; for listings). Raises ArtifactError."""
    path = Path(artifact_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{artifact_dir}: no {MANIFEST_NAME} (incomplete or half-written artifact)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{artifact_dir}: unreadable manifest: {exc}") from exc
    return Manifest.from_dict(raw, where=artifact_dir)


def verify_artifact(artifact_dir: Path) -> Manifest:
    """Read the manifest and check every listed file's sha256, and that nothing unsafe or unlisted
    sits beside them. Raises ArtifactError naming the first problem found."""
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    if not manifest.files:
        raise ArtifactError(f"{artifact_dir}: manifest lists no files")
    for rel, expected in manifest.files.items():
        path = artifact_dir / rel
        if not path.is_file():
            raise ArtifactError(f"{artifact_dir}: missing file {rel}")
        if sha256_file(path) != expected:
            raise ArtifactError(f"{artifact_dir}: checksum mismatch for {rel} (corrupt or modified)")
    present = {p.relative_to(artifact_dir).as_posix() for p in _files_under(artifact_dir)}
    unsafe = sorted(p for p in present if Path(p).suffix in PICKLE_SUFFIXES)
    if unsafe:
        raise ArtifactError(f"{artifact_dir}: pickle-format files are never loaded: {unsafe}")
    if not (artifact_dir / MODEL_DIR).is_dir():
        raise ArtifactError(f"{artifact_dir}: no {MODEL_DIR}/ directory")
    return manifest


def list_artifacts(root: Path, task: str) -> list[Path]:
    """Complete artifact directories of `task` (manifest present), oldest first by version id."""
    task_dir = Path(root) / task
    if not task_dir.is_dir():
        return []
    return sorted(
        p for p in task_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()
    )


def resolve_artifact(root: Path, task: str, version: str | None = None) -> Path:
    """The pinned `version` of `task`, or its newest complete artifact. Raises ArtifactError."""
    if version:
        path = Path(root) / task / version
        if not (path / MANIFEST_NAME).is_file():
            raise ArtifactError(f"{path}: pinned version not found or incomplete")
        return path
    found = list_artifacts(root, task)
    if not found:
        raise ArtifactError(f"no complete {task} artifact under {Path(root) / task}")
    return found[-1]
