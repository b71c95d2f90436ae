"""A new artifact version of an existing one with OOD statistics added (artifacts are immutable and hashed).

`write_with_ood(artifact_dir, output_root, detector, report)` copies the model and reports of a verified artifact,
adds `ood/` (models/core/ood.py) and `reports/ood.json`, and writes it as a new version through
`models.core.artifacts.write_artifact` (staging directory, sha256 of every file, manifest last). The manifest is the
old one with a new version and creation time, `metrics["ood"]` = the report and `data["ood"]` = where the OOD sets
came from plus the version it was derived from. The old artifact is left as it was.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.core.artifacts import MODEL_DIR, REPORTS_DIR, Manifest, new_version_id, verify_artifact, write_artifact
from models.core.ood import OODDetector

REPORT_FILE = "ood.json"


def ood_manifest(manifest: Manifest, report: dict[str, Any], derived_from: str | None = None) -> Manifest:
    """`manifest` with the OOD report in `metrics` and its data record in `data` (a new version when derived)."""
    data = {**manifest.data, "ood": {**report.get("fitted_on", {}),
                                     **({"derived_from": derived_from} if derived_from else {})}}
    changes: dict[str, Any] = {"metrics": {**manifest.metrics, "ood": report}, "data": data}
    if derived_from:
        changes.update(version=new_version_id(after=manifest.version),
                       created_at=datetime.now(UTC).isoformat(timespec="seconds"), files={})
    return dataclasses.replace(manifest, **changes)


def write_ood_files(staging: Path, detector: OODDetector, report: dict[str, Any]) -> None:
    """`ood/` and `reports/ood.json` into an artifact's staging directory."""
    detector.save(staging)
    (staging / REPORTS_DIR).mkdir(parents=True, exist_ok=True)
    (staging / REPORTS_DIR / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")


def write_with_ood(artifact_dir: Path, output_root: Path, detector: OODDetector, report: dict[str, Any]) -> Path:
    """See module docstring; returns the new artifact's directory. Raises ArtifactError if the source is corrupt."""
    artifact_dir = Path(artifact_dir)
    old = verify_artifact(artifact_dir)
    manifest = ood_manifest(old, report, derived_from=old.version)

    def files(staging: Path) -> None:
        shutil.copytree(artifact_dir / MODEL_DIR, staging / MODEL_DIR)
        if (artifact_dir / REPORTS_DIR).is_dir():
            shutil.copytree(artifact_dir / REPORTS_DIR, staging / REPORTS_DIR)
        write_ood_files(staging, detector, report)

    return write_artifact(Path(output_root), manifest, files)
