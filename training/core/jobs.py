"""The start and the end that every task's training job (training/<task>/job.py) shares.

- `start_job(config, task, preset, cache_dir, device)`: seeds Python's and torch's generators from
  `config.seed`, sets torch's CPU threads when `config.num_threads` is given, resolves `device` as the
  service does ("auto" → CUDA when visible) and names the checkpoint directory: `config.checkpoint_dir`,
  else `<cache_dir>/checkpoints/<name>-<preset>` (name: `config.name`, else the task's). Returns
  JobStart(device, checkpoints).
- `job_manifest(task, preset, config, model, **sections)`: a Manifest with the fields every job fills the
  same way (the model's `name`, new version id, model class, library versions, `training_config` = preset +
  every field);
  `sections` are the task's own (data, preprocessing, dropout, calibration, metrics, ...).
- `write_job(output_dir, manifest, model, save_model, history, metric, plots)`: moves the trained model to
  the CPU and writes the artifact with its reports (training.core.reports.write_job_artifact).
What lies between (data and model under `main_process_first`, training, evaluation, and rank 0 running
the end through `distributed.artifact_on_main`) is each task's own.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from models.core.artifacts import Manifest, library_versions, manifest_task, new_version_id
from models.core.device import resolve_device
from training.core import reports
from training.core.config import TrainConfig


class JobStart(NamedTuple):
    """Where a job trains: its torch device and its checkpoint directory (unpacks as a pair)."""

    device: torch.device
    checkpoints: Path


def start_job(config: TrainConfig, task: str, preset: str, cache_dir: Path, device: str) -> JobStart:
    """Seed, threads, device and checkpoint directory (see module docstring)."""
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    checkpoints = Path(config.checkpoint_dir or cache_dir / "checkpoints" / f"{config.name or task}-{preset}")
    return JobStart(torch.device(resolve_device(device)), checkpoints)


def job_manifest(task: str, preset: str, config: TrainConfig, model: nn.Module, **sections: Any) -> Manifest:
    """The artifact's manifest (models.core.artifacts.Manifest) with the shared fields filled in."""
    return Manifest(task=manifest_task(task), name=config.name or task, version=new_version_id(),
                    model_class=type(model).__name__,
                    libraries=library_versions(), training_config={"preset": preset, **config.to_dict()},
                    **sections)


def write_job(output_dir: Path, manifest: Manifest, model: nn.Module, save_model: Callable[[Path], None],
              history: Mapping[str, Any], metric: str, plots: Callable[[Path], None] | None = None) -> Path:
    """Write the artifact of the trained `model` (rank 0 only); returns its directory. `save_model(staging)`
    saves model and tokenizer; the reports get the training curves of `metric` and what `plots` draws."""
    model.cpu()  # evaluation is done: the weights are saved from CPU memory whatever device trained them
    return reports.write_job_artifact(output_dir, manifest, save_model, history, metric, plots)
