"""Loading an artifact's saved OOD detector (models/core/ood.py says what the files hold)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from models.core.artifacts import ArtifactError, Manifest
from models.core.ood import CONFIG_FILE, STATS_FILE, OODDetector


def load_detector(artifact_dir: Path, manifest: Manifest) -> OODDetector | None:
    """The detector saved in a verified artifact, None when it has none. Raises ArtifactError when the OOD files
    are malformed, half present, or not covered by the manifest's checksums."""
    artifact_dir = Path(artifact_dir)
    present = [name for name in (CONFIG_FILE, STATS_FILE) if (artifact_dir / name).exists()]
    if not present:
        return None
    where = f"{artifact_dir}: OOD statistics"
    if len(present) != 2:
        raise ArtifactError(f"{where}: {present} without its pair ({CONFIG_FILE} and {STATS_FILE} go together)")
    unlisted = [name for name in present if name not in manifest.files]
    if unlisted:
        raise ArtifactError(f"{where}: {unlisted} not in the manifest's checksums")
    try:
        config = json.loads((artifact_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(artifact_dir / STATS_FILE))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError) as exc:
        raise ArtifactError(f"{where}: unreadable: {exc}") from exc
    if not isinstance(config, dict):
        raise ArtifactError(f"{where}: {CONFIG_FILE} is not a JSON object")
    try:
        detector = OODDetector(method=config.get("method"), layer=config.get("layer"),
                               threshold=config.get("threshold"), tensors=dict(tensors),
                               pooling=config.get("pooling", "mean"), k=config.get("k", 1),
                               info=config.get("info") or {}, length_coef=config.get("length_coef", 0.0),
                               bigram=config.get("bigram") or {}, hybrid=config.get("hybrid") or {},
                               trigram=config.get("trigram") or {})
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{where}: {exc}") from exc
    if config.get("feature_dim", detector.feature_dim) != detector.feature_dim:
        raise ArtifactError(f"{where}: feature_dim {config.get('feature_dim')} but tensors of {detector.feature_dim}")
    return detector
