"""`python -m training.calibrate`: wrap an already fine-tuned checkpoint into an artifact without training."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def validate_calibration(config: Any, validate_job: Callable[[], None]) -> None:
    """Check a calibration config: --base-model and --validation-file are required, --train-file is optional
    (the job's own check wants one under --data file, so the validation file stands in while it runs)."""
    if not config.base_model or not config.validation_file:
        raise ValueError("calibration needs --base-model PATH and --validation-file FILE")
    given = config.train_file
    config.train_file = given or config.validation_file
    try:
        validate_job()
    finally:
        config.train_file = given
