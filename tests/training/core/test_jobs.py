"""What every job shares at its start and its end (training/core/jobs.py); the jobs' end-to-end tests cover
`write_job` on real artifacts."""

import random
from pathlib import Path

import torch
from torch import nn

from training.core.config import TrainConfig
from training.core.jobs import JobStart, job_manifest, start_job


def test_start_job_seeds_and_names_the_checkpoint_directory(tmp_path: Path) -> None:
    config = TrainConfig(seed=5)
    start = start_job(config, "sentiment", "tiny", tmp_path, "cpu")
    assert start == JobStart(torch.device("cpu"), tmp_path / "checkpoints" / "sentiment-tiny")
    drawn = (random.random(), torch.rand(3))
    device, checkpoints = start_job(config, "sentiment", "tiny", tmp_path, "auto")  # unpacks as a pair
    again = (random.random(), torch.rand(3))
    assert drawn[0] == again[0] and torch.equal(drawn[1], again[1])  # both generators re-seeded from config.seed
    assert device == torch.device("cuda" if torch.cuda.is_available() else "cpu") and checkpoints == start.checkpoints
    mine = start_job(TrainConfig(checkpoint_dir=str(tmp_path / "mine")), "generation", "quick", tmp_path, "cpu")
    assert mine.checkpoints == tmp_path / "mine"


def test_job_manifest_fills_the_shared_fields() -> None:
    config = TrainConfig(lr=0.01)
    manifest = job_manifest("translation", "tiny", config, nn.Linear(2, 2), default_mc_samples=7,
                            metrics={"bleu": 1.0})
    assert manifest.task == "translation" and manifest.model_class == "Linear"
    assert manifest.training_config == {"preset": "tiny", **config.to_dict()} and manifest.training_config["lr"] == 0.01
    assert {"torch", "transformers"} <= set(manifest.libraries) and manifest.version
    assert manifest.default_mc_samples == 7 and manifest.metrics == {"bleu": 1.0}


def test_a_named_model_gets_its_own_checkpoints_and_manifest_name(tmp_path: Path) -> None:
    config = TrainConfig(name="support-tickets")
    assert start_job(config, "sentiment", "tiny", tmp_path, "cpu").checkpoints == (
        tmp_path / "checkpoints" / "support-tickets-tiny")
    assert job_manifest("sentiment", "tiny", config, nn.Linear(2, 2)).name == "support-tickets"
    default = job_manifest("sentiment", "tiny", TrainConfig(), nn.Linear(2, 2))
    assert default.name == default.model_name == "sentiment"  # the task's default model is named after the task
