"""Calibrate a fine-tuned MarianMT checkpoint without training (`python -m training.calibrate --task translation`):
the user's validation pairs are split (a held-out report part unless `--test-file`), then training/translation/
job.finish chooses last-k, τ and the abstain rule on the rest through the serving predictor, reports on the
held-out part (OOD probes made of its sentences) and writes the artifact."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.translation.model import load_pretrained_marian
from training.calibrate import validate_calibration
from training.core.datafiles import file_record, holdout_split
from training.core.jobs import start_job
from training.core.splits import partition
from training.translation.config import TranslationConfig
from training.translation.data import TranslationData, read_pairs
from training.translation.job import finish, fit_to_positions

log = logging.getLogger(__name__)
TASK = "translation"
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"data": "file", "test_limit": None, "eval_subset": 0, "ood": True},  # OOD needs --train-file
    "tiny": {"data": "file", "test_limit": None, "eval_subset": 0, "mc_samples": 4, "probes_per_kind": 8,
             "sampling_samples": 0, "max_new_tokens": 24, "eval_batch_size": 16, "eval_dtype": "float32",
             "progress": False, "num_threads": 1},
}


@dataclass
class CalibrateConfig(TranslationConfig):
    """Calibrate an already fine-tuned MarianMT checkpoint (--base-model) on your validation pairs, without training."""

    def validate(self) -> None:
        validate_calibration(self, super().validate)


def load_data(config: CalibrateConfig) -> TranslationData:
    """validation (the choices), test (`--test-file`, else held out of the validation file) and train
    (`--train-file`, for the record; else empty)."""
    val_path = Path(str(config.validation_file))
    pairs, lines = read_pairs(val_path, config.source_column, config.target_column)
    if config.test_file:
        validation, test = pairs, read_pairs(Path(config.test_file), config.source_column, config.target_column)[0]
    else:
        index = holdout_split(None, {"test": config.test_fraction}, config.split_seed, val_path, lines)
        validation, test = [pairs[i] for i in index["train"]], [pairs[i] for i in index["test"]]
    train = read_pairs(Path(config.train_file), config.source_column, config.target_column)[0] \
        if config.train_file else []
    splits = {"train": train, "validation": validation, "test": test}
    files = [file_record(Path(p), name, Path(p).suffix.lstrip("."), n) for name, p, n in (
        ("validation", config.validation_file, len(pairs)), ("test", config.test_file, len(test)),
        ("train", config.train_file, len(train))) if p]
    return TranslationData(splits=splits, source={"name": "your files", "files": files,
                                                  "splits": {k: len(v) for k, v in splits.items()}})


def run(config: CalibrateConfig, preset: str, output_dir: Path, cache_dir: Path) -> Path:
    """Load, check, calibrate, report and write (module docstring); returns the artifact directory."""
    device, _ = start_job(config, TASK, preset, cache_dir, config.device)
    model, tokenizer = load_pretrained_marian(str(config.base_model))  # its own rates; none at all: CheckpointError
    fit_to_positions(config, int(model.config.max_position_embeddings))
    data = load_data(config)
    val, test = data.splits["validation"], data.splits["test"]
    calibration = partition("validation", [0] * len(val), {"calibration": None}, config.split_seed + 1)
    parts = {"validation_calibration": calibration.of("calibration", val), "validation_periodic": [],
             "test": list(test), "probe_pool": list(test)}
    history: dict[str, Any] = {"losses": [], "lrs": [], "evals": [], "summary": {
        "steps": 0, "train_pairs": 0, "eval_pairs": 0, "note": "calibrated without training"}}
    model.to(device)
    log.info("calibrating %s on %d validation pairs, reporting on %d", type(model).__name__, len(val), len(test))
    return finish(config, preset, output_dir, model, tokenizer, data, parts, history, device, cache_dir)
