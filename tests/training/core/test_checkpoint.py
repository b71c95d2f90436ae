"""Resuming across a config change (training/core/checkpoint.py): a field added after the checkpoint was written
counts as unchanged at its default; any other difference is refused."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from torch import nn

from training.core.checkpoint import Checkpointer
from training.core.config import TrainConfig


@dataclass
class Newer(TrainConfig):
    text_column: str = field(default="text")


def test_a_field_added_later_resumes_at_its_default_only(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    Checkpointer(tmp_path, TrainConfig()).save_last(model, {"step": 3})
    saved = tmp_path / "last" / "config.json"
    assert "text_column" not in json.loads(saved.read_text())
    assert Checkpointer(tmp_path, Newer()).load_last(model)["step"] == 3
    with pytest.raises(ValueError, match=r"different config: \['text_column'\]"):
        Checkpointer(tmp_path, Newer(text_column="body")).load_last(model)
