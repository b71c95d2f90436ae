"""What every predictor's `warmup` must do, checked through the predictions it makes."""

from __future__ import annotations

from typing import Any

import pytest

from models.core.predictor import MCRequest, PreparedItem


def checked_warmup(predictor: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[PreparedItem, list[Any]]:
    """Run `predictor.warmup()` recording its `predict` calls, and check the shared contract: ONE batch of one
    item twice, deterministic (T = 0) then MC at the default T; the first without uncertainty, the second
    with; and nothing left behind: the same batch predicted afterwards gives the same predictions (eval mode
    kept, no mask or sampling state carried over). Returns the item and the warm-up's two predictions."""
    calls: list[tuple[list[PreparedItem], list[MCRequest], list[Any]]] = []
    real = predictor.predict

    def recording(items: list[PreparedItem], requests: list[MCRequest]) -> list[Any]:
        out = real(items, requests)
        calls.append((list(items), list(requests), out))
        return out

    with monkeypatch.context() as patch:
        patch.setattr(predictor, "predict", recording)
        assert predictor.warmup() is None
    assert len(calls) == 1, f"warm-up ran {len(calls)} batches"
    (items, requests, out) = calls[0]
    assert len(items) == 2 and items[0] == items[1] and len(out) == 2
    assert [r.mc_samples for r in requests] == [0, predictor.default_mc_samples]
    assert out[0].uncertainty is None and out[1].uncertainty is not None
    assert not predictor.model.training
    assert predictor.predict(items, requests) == out
    return items[0], out
