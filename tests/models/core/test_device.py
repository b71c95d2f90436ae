"""Training precision: bf16 autocast only where the device computes bf16 fast, float32 otherwise."""

from __future__ import annotations

import logging

import pytest
import torch

from models.core import device as devices


def _autocast_on(requested: bool) -> bool:
    with devices.training_autocast(requested, torch.device("cpu")):
        return torch.is_autocast_cpu_enabled() and torch.get_autocast_cpu_dtype() == torch.bfloat16


def test_not_requested_is_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    assert not _autocast_on(False)


def test_requested_on_a_fast_cpu_autocasts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    assert _autocast_on(True)
    assert not torch.is_autocast_cpu_enabled()  # and leaves it off afterwards


def test_requested_on_a_slow_cpu_trains_float32_with_one_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(devices, "_WARNED", [])
    with caplog.at_level(logging.WARNING, logger=devices.__name__):
        assert not _autocast_on(True)
        assert not _autocast_on(True)
    assert sum("no fast bf16" in r.getMessage() for r in caplog.records) == 1
