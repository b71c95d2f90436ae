"""Overload admission: a queue that could not be through within the request timeout refuses new work
with 429 at once, instead of queueing requests that would only time out after using the model."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from models.core.predictor import MCRequest, PreparedItem, SentimentPrediction
from service.batcher import Batcher
from service.errors import QueueFullError
from service.settings import BatchLimits
from tests.service.conftest import until, wait_event
from tests.service.fakes import FakePredictor

pytestmark = pytest.mark.anyio
DET = MCRequest(mc_samples=0, seed=0)


class OneSecondPerBatch(FakePredictor):
    """Each batch advances a fake clock by one second: the batcher measures 1 s per item at batch size 1."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[SentimentPrediction]:
        results = super().predict(items, requests)
        self.now += 1.0
        return results


def item(text: str) -> PreparedItem:
    return PreparedItem(text=text, input_ids=(1, 2), n_tokens=2)


async def test_requests_beyond_the_wait_budget_get_429_before_the_queue_is_full() -> None:
    fake = OneSecondPerBatch()
    limits = BatchLimits(max_batch_size=1, max_batch_tokens=10_000, max_wait_ms=0.0, max_queue=100)
    batcher = Batcher(fake, limits, clock=lambda: fake.now, wait_budget_s=3.0)
    batcher.start()
    try:
        await batcher.submit([item("calibrates")], [DET])  # measures 1 s per item
        fake.gate.clear()
        fake.started.clear()
        running = asyncio.ensure_future(batcher.submit([item("held")], [DET]))
        await wait_event(fake.started)
        queued = [asyncio.ensure_future(batcher.submit([item(f"q{i}")], [DET])) for i in range(2)]
        await until(lambda: batcher.queued_items == 2)  # the held batch's 1 s + 2 s queued: exactly the budget
        with pytest.raises(QueueFullError, match="over the 3 s budget") as refused:
            batcher.check_capacity(1)  # a third would wait ~4 s: refused although the queue holds 100
        assert refused.value.retry_after_s >= 1
        fake.gate.set()
        await asyncio.gather(running, *queued)
        batcher.check_capacity(1)  # drained: room again
    finally:
        fake.gate.set()
        await batcher.close()


async def test_without_a_budget_only_max_queue_limits_the_queue() -> None:
    fake = OneSecondPerBatch()
    limits = BatchLimits(max_batch_size=1, max_batch_tokens=10_000, max_wait_ms=0.0, max_queue=100)
    batcher = Batcher(fake, limits, clock=lambda: fake.now)
    batcher.start()
    try:
        await batcher.submit([item("calibrates")], [DET])
        fake.gate.clear()
        fake.started.clear()
        running = asyncio.ensure_future(batcher.submit([item("held")], [DET]))
        await wait_event(fake.started)
        queued = [asyncio.ensure_future(batcher.submit([item(f"q{i}")], [DET])) for i in range(10)]
        await until(lambda: batcher.queued_items == 10)
        batcher.check_capacity(1)
        fake.gate.set()
        await asyncio.gather(running, *queued)
    finally:
        fake.gate.set()
        await batcher.close()
