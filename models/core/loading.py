"""Load a verified artifact's model and tokenizer (the first step of every predictor's `load`), and check a user's
checkpoint directory (`--base-model`) before any job or calibration loads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from models.core.artifacts import MODEL_DIR, ArtifactError, Manifest, verify_artifact


def load_verified(artifact_dir: Path, task: str, model_class: Any) -> tuple[Manifest, Any, PreTrainedTokenizerBase]:
    """Verify `artifact_dir` (checksums, no pickle), check it holds `task`, and load its model with
    `model_class.from_pretrained` (safetensors only) and its tokenizer. Raises ArtifactError."""
    manifest = verify_artifact(artifact_dir)
    if manifest.predictor_task != task:
        raise ArtifactError(f"{artifact_dir}: task {manifest.task!r} is not {task!r}")
    model_dir = Path(artifact_dir) / MODEL_DIR
    try:
        # A verified local directory, never a Hub id: local_files_only makes that a guarantee, so bandit's
        # B615 (Hub download without a pinned revision) is a false positive here.
        model = model_class.from_pretrained(model_dir, use_safetensors=True, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)  # nosec B615
    except (OSError, ValueError, SafetensorError) as exc:  # SafetensorError: a truncated or garbled weights file
        raise ArtifactError(f"{artifact_dir}: cannot load model: {exc}") from exc
    return manifest, model, tokenizer


def checkpoint_dir(path: Path | str, allow_gguf: bool = False) -> Path:
    """`path` if it is a local checkpoint directory with a config and safetensors weights; CheckpointError naming
    what is missing otherwise (a pickle-only checkpoint is refused: loading pickle can run code). `allow_gguf`: a
    .gguf file is accepted as it is (generation converts it)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf" and allow_gguf:
        return path
    if not path.is_dir():
        raise CheckpointError(f"--base-model {path}: no such directory (a local Hugging Face checkpoint directory: "
                              "config.json, *.safetensors and the tokenizer files)")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"--base-model {path}: no config.json; not a Hugging Face checkpoint directory")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"})
        hint = f" (found only {', '.join(pickled)}: pickle is refused; convert it to safetensors)" if pickled else ""
        raise CheckpointError(f"--base-model {path}: no .safetensors weights{hint}")
    return path


class CheckpointError(ValueError):
    """A `--base-model` checkpoint that cannot be used; the message names the directory and the problem."""
