"""Which models the service serves and where their artifacts are (docs/architecture.md §3, §6 "Runtime").

Contract:
- `model_names(settings, known_tasks)`: the names of `settings.models` plus `settings.tasks` (a task's default
  model is named after the task) when either is given, in that order; otherwise every directory under
  `artifacts_dir` holding a complete artifact, every pinned name, and every name a training job announced
  (`training_status`): the task-named models first in the known tasks' order, then the others sorted.
- `artifact_of(settings, name)`: the pinned version of `name`, or its newest complete one; ArtifactError when
  there is none. `task_of(artifact)`: the manifest's task, with the `classification` alias folded.
- `training_status(root, name)`: what `python -m training.ensure` wrote into `<root>/<name>/.training.json`
  while it trains that model (hidden, so listings skip it): {"state": "queued" | "training" | "failed", "task",
  "preset", "started_at", "error", "pid", "host"}, or None. A queued or training status whose process is gone
  on this host reads as failed (a killed job leaves its file behind).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.core.artifacts import (
    ArtifactError,
    canonical_task,
    list_artifacts,
    read_manifest,
    resolve_artifact,
)
from service.settings import Settings

TRAINING_STATUS = ".training.json"

def _complete(root: Path, name: str) -> bool:
    return bool(list_artifacts(root, name))


def model_names(settings: Settings, known_tasks: Sequence[str]) -> list[str]:
    """The models to serve (module docstring), without duplicates."""
    explicit = [*(settings.models or []), *(settings.tasks or [])]
    if explicit:
        return list(dict.fromkeys(explicit))
    root = Path(settings.artifacts_dir)
    found: set[str] = set(settings.versions)
    if root.is_dir():
        for path in root.iterdir():
            if path.is_dir() and not path.name.startswith(".") and (
                    _complete(root, path.name) or (path / TRAINING_STATUS).is_file()):
                found.add(path.name)
    first = [task for task in known_tasks if task in found]
    return first + sorted(found - set(first))


def artifact_of(settings: Settings, name: str) -> Path:
    """The artifact `name` should serve: its pinned version, else its newest complete one. Raises ArtifactError."""
    return resolve_artifact(settings.artifacts_dir, name, settings.versions.get(name))


def newest_version(settings: Settings, name: str) -> str | None:
    """The version id `artifact_of` would pick, or None when there is none (cheap: a directory listing)."""
    try:
        return artifact_of(settings, name).name
    except ArtifactError:
        return None


def task_of(artifact: Path) -> str:
    """The task in `artifact`'s manifest (aliases folded). Raises ArtifactError."""
    return canonical_task(read_manifest(artifact).task)


def _alive_here(status: dict[str, Any]) -> bool:
    """False only when the status was written on this host by a process that no longer exists."""
    pid, host = status.get("pid"), status.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def training_status(root: Path, name: str) -> dict[str, Any] | None:
    """The training job's status of model `name` (module docstring), or None when there is none."""
    path = Path(root) / name / TRAINING_STATUS
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict):
        return None
    if status.get("state") in ("queued", "training") and not _alive_here(status):
        return {**status, "state": "failed", "error": "the training process exited without a word (killed?)"}
    return status

