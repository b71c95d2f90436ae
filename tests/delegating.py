"""A predictor that delegates everything to a real one, for test servers that need to wrap `predict`
(hold a batch, announce it) while keeping the real model's preparation, limits and description."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

from models.core.predictor import MCRequest, Predictor, PreparedItem


class DelegatingPredictor:
    """Predictor protocol by delegation; subclasses override `predict` (and call `self.inner.predict`)."""

    task: ClassVar[str] = "sentiment"

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.name, self.version, self.default_mc_samples = inner.name, inner.version, inner.default_mc_samples

    def prepare(self, text: str, parameters: Mapping[str, Any]) -> PreparedItem:
        return self.inner.prepare(text, parameters)

    def batch_key(self, item: PreparedItem) -> Hashable:
        return self.inner.batch_key(item)

    def cost(self, item: PreparedItem, request: MCRequest) -> int:
        return self.inner.cost(item, request)

    def predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[Any]:
        return self.inner.predict(items, requests)

    def warmup(self) -> None:
        self.inner.warmup()  # the inner predictor's own forward, never gated

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()
