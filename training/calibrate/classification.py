"""Calibrate a fine-tuned sequence classifier without training (`python -m training.calibrate --task
classification`): the checkpoint's own labels and head are kept, the user's validation file is read and split
(stratified: a held-out report part unless `--test-file`; the rest into disjoint `selection` and `calibration`
parts, training/sentiment/data.plan_subsets), then training/sentiment/job.finish chooses last-k, τ + the confidence
map and the abstain rule, reports on the held-out part and writes the artifact."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer

from models.core.loading import CheckpointError, checkpoint_dir
from models.sentiment.encoders import family_of
from models.sentiment.model import load_pretrained_classifier
from training.calibrate import validate_calibration
from training.core.base_models import base_record
from training.core.datafiles import DataFileError, file_record, holdout_split
from training.core.jobs import start_job
from training.core.splits import ClassificationData, TextSplit
from training.sentiment.config import SentimentConfig
from training.sentiment.data import SubsetSizes, plan_subsets, read_labelled
from training.sentiment.job import finish

log = logging.getLogger(__name__)
TASK = "sentiment"  # the classification task's predictor (models/sentiment)
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"data": "file", "ood": True},  # OOD needs --train-file (training/core/ood_job.py)
    "tiny": {"data": "file", "mc_samples": 5, "calibration_folds": 3, "max_length": 48,
             "head_tokens": 12, "eval_dtype": "float32", "progress": False, "num_threads": 1},
}


@dataclass
class CalibrateConfig(SentimentConfig):
    """Calibrate an already fine-tuned classifier (--base-model) on your validation file, without training."""

    def validate(self) -> None:
        validate_calibration(self, super().validate)


def _labelled(path: Path, config: CalibrateConfig, ids: dict[str, int]) -> tuple[list[str], list[int], list[int]]:
    texts, labels, lines = read_labelled(path, config.text_column, config.label_column)
    for label, line in zip(labels, lines, strict=True):
        if label not in ids:
            raise DataFileError(path, f"unknown label {label!r}: the checkpoint's labels are {', '.join(ids)}", line)
    return texts, [ids[label] for label in labels], lines


def load_data(config: CalibrateConfig, labels: tuple[str, ...]) -> ClassificationData:
    """validation (the choices), test (the report: `--test-file`, else held out of the validation file, stratified)
    and train (`--train-file`, the data the model was fine-tuned on, read only for the record; else empty)."""
    ids = {label: i for i, label in enumerate(labels)}
    val_path = Path(str(config.validation_file))
    texts, y, lines = _labelled(val_path, config, ids)
    if config.test_file:
        test = TextSplit(*_labelled(Path(config.test_file), config, ids)[:2])
        validation = TextSplit(texts, y)
    else:
        index = holdout_split(y, {"test": config.test_fraction}, config.split_seed, val_path, lines)
        validation = TextSplit([texts[i] for i in index["train"]], [y[i] for i in index["train"]])
        test = TextSplit([texts[i] for i in index["test"]], [y[i] for i in index["test"]])
    train = TextSplit(*_labelled(Path(config.train_file), config, ids)[:2]) if config.train_file else TextSplit([], [])
    given = [(name, Path(p), rows) for name, p, rows in (
        ("validation", config.validation_file, len(texts)), ("test", config.test_file, len(test)),
        ("train", config.train_file, len(train))) if p]
    splits = {"train": train, "validation": validation, "test": test}
    source = {"name": "your files", "files": [file_record(p, name, p.suffix.lstrip("."), rows)
                                              for name, p, rows in given],
              "splits": {name: len(split) for name, split in splits.items()},
              "test_held_out_of_validation": None if config.test_file else config.test_fraction}
    return ClassificationData(splits=splits, label_names=labels, source=source)


def subset_sizes(config: CalibrateConfig, n: int) -> SubsetSizes:
    """No early stopping (nothing is trained): 40 % of validation chooses last-k and the abstain rule, the rest fits
    τ and the map. DataFileError when the calibration part cannot hold the cross-validation folds."""
    selection = config.selection_size if config.selection_size and config.selection_size < n // 2 else (2 * n) // 5
    if n - selection < 2 * config.calibration_folds:
        raise DataFileError(Path(str(config.validation_file)), f"too few validation examples ({n}) for calibration "
                            f"with {config.calibration_folds}-fold cross-validation; add examples or lower "
                            "--calibration-folds")
    return SubsetSizes(0, selection, None, config.selection_modes_limit, config.headline_test_limit, config.test_limit)


def run(config: CalibrateConfig, preset: str, output_dir: Path, cache_dir: Path) -> Path:
    """Load, check, calibrate, report and write (module docstring); returns the artifact directory."""
    device, _ = start_job(config, TASK, preset, cache_dir, config.device)
    path = checkpoint_dir(str(config.base_model))
    checkpoint = AutoConfig.from_pretrained(path, local_files_only=True)  # nosec B615 - a local directory
    labels = tuple(str(checkpoint.id2label[i]) for i in range(checkpoint.num_labels))
    model = load_pretrained_classifier(path, labels)  # same labels: the head is kept; no dropout: CheckpointError
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)  # nosec B615 - a local directory
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None or tokenizer.pad_token_id is None:
        raise CheckpointError(f"--base-model {path}: its tokenizer has no cls, sep or pad token")
    data = load_data(config, labels)
    subsets = plan_subsets(data, subset_sizes(config, len(data.splits["validation"])), config.split_seed + 1)
    family = family_of(model)
    if family is None:
        log.warning("%s has no fast MC path: served by the generic path (correct, slower)", type(model).__name__)
    encoder = base_record(path, model, mc_path=family.name if family else "generic", trained_here=False)
    history: dict[str, Any] = {"losses": [], "lrs": [], "evals": [], "summary": {
        "steps": 0, "train_examples": 0, "eval_examples": 0, "note": "calibrated without training"}}
    model.to(device)
    log.info("calibrating %s (%s) on %s", type(model).__name__, ", ".join(labels), subsets.record())
    return finish(config, preset, output_dir, model, tokenizer, data, subsets, encoder, history, device, cache_dir)
