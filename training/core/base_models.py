"""The record of a user's `--base-model` checkpoint for the manifest's `data.sources` (where a model came from).

`base_record(path, model, **facts)`: {"role": "base_model", "path", "model_class", "weights": {file: sha256}, ...}
for a checkpoint directory or a single file (GGUF), so an artifact names the exact weights it started from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def base_record(path: Path | str, model: Any, **facts: Any) -> dict[str, Any]:
    """See module docstring; `facts` are added as they are (the MC path, what happened to the head, ...)."""
    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    return {"role": "base_model", "name": "your checkpoint", "path": str(path), "model_class": type(model).__name__,
            "weights": {f.name: _sha256(f) for f in files}, **facts}
