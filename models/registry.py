"""Task name → predictor loader. Adding a task means adding one entry here (no if/elif factories)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from models.core.artifacts import ArtifactError, read_manifest
from models.core.predictor import Predictor, PredictorOptions
from models.generation.predictor import GenerationPredictor
from models.sentiment.onnx_predictor import OnnxSentimentPredictor
from models.sentiment.predictor import SentimentPredictor
from models.translation.predictor import TranslationPredictor

Loader = Callable[[Path, PredictorOptions], Predictor]

LOADERS: dict[str, Loader] = {
    SentimentPredictor.task: SentimentPredictor.load,
    TranslationPredictor.task: TranslationPredictor.load,
    GenerationPredictor.task: GenerationPredictor.load,
}
TASKS: tuple[str, ...] = tuple(LOADERS)
# Other backends than torch, by (task, backend) (PredictorOptions.backend).
BACKEND_LOADERS: dict[tuple[str, str], Loader] = {
    (OnnxSentimentPredictor.task, OnnxSentimentPredictor.backend): OnnxSentimentPredictor.load,
}
BACKENDS: tuple[str, ...] = ("torch", *sorted({backend for _, backend in BACKEND_LOADERS}))


def load_predictor(artifact_dir: Path, options: PredictorOptions) -> Predictor:
    """Load the artifact at `artifact_dir` with the loader of its manifest's task and `options.backend`.
    Raises ArtifactError (unknown task, or no such backend for the task)."""
    manifest = read_manifest(artifact_dir)
    loader = LOADERS.get(manifest.predictor_task)
    if loader is None:
        raise ArtifactError(f"{artifact_dir}: no predictor for task {manifest.task!r}; known: {sorted(LOADERS)}")
    if options.backend != "torch":
        loader = BACKEND_LOADERS.get((manifest.predictor_task, options.backend))
        if loader is None:
            raise ArtifactError(f"no {options.backend!r} backend for task {manifest.task!r}; "
                                f"available: {sorted(BACKEND_LOADERS)}")
    return loader(Path(artifact_dir), options)
