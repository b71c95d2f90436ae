"""Task name → predictor loader. Adding a task means adding one entry here (no if/elif factories)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from models.core.artifacts import ArtifactError, read_manifest
from models.core.predictor import Predictor, PredictorOptions
from models.generation.predictor import GenerationPredictor
from models.sentiment.predictor import SentimentPredictor
from models.translation.predictor import TranslationPredictor

Loader = Callable[[Path, PredictorOptions], Predictor]

LOADERS: dict[str, Loader] = {
    SentimentPredictor.task: SentimentPredictor.load,
    TranslationPredictor.task: TranslationPredictor.load,
    GenerationPredictor.task: GenerationPredictor.load,
}
TASKS: tuple[str, ...] = tuple(LOADERS)


def load_predictor(artifact_dir: Path, options: PredictorOptions) -> Predictor:
    """Load the artifact at `artifact_dir` with the loader of its manifest's task. Raises ArtifactError."""
    manifest = read_manifest(artifact_dir)
    loader = LOADERS.get(manifest.task)
    if loader is None:
        raise ArtifactError(f"{artifact_dir}: no predictor for task {manifest.task!r}; known: {sorted(LOADERS)}")
    return loader(Path(artifact_dir), options)
