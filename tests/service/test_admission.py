"""Admission from batched throughput (service/admission.py, `Batcher.check_capacity`): the queue-wait
estimate is the batches the queue forms × the measured time per batch. Batch times are injected through
a fake clock that each batch advances by `a + b × cost`, so nothing here depends on real timing."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import pytest

from models.core.predictor import MCRequest, PreparedItem, SentimentPrediction
from service.admission import BatchTimeModel, pack
from service.batcher import Batcher
from service.errors import QueueFullError
from service.settings import BatchLimits
from tests.service.conftest import until, wait_event
from tests.service.fakes import FakePredictor

pytestmark = pytest.mark.anyio
DET = MCRequest(mc_samples=0, seed=0)
BUDGET_S = 10.0


class TimedBatches(FakePredictor):
    """Each batch advances a fake clock by `per_batch + per_cost × summed cost` seconds."""

    def __init__(self, per_batch: float, per_cost: float) -> None:
        super().__init__()
        self.now = 0.0
        self.per_batch, self.per_cost = per_batch, per_cost

    def predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[SentimentPrediction]:
        results = super().predict(items, requests)
        self.now += self.per_batch + self.per_cost * sum(map(self.cost, items, requests))
        return results


def item(text: str) -> PreparedItem:
    return PreparedItem(text=text, input_ids=(1, 2), n_tokens=2)  # cost 2 at T = 0


def limits(**kw: int) -> BatchLimits:
    return BatchLimits(**{"max_batch_size": 8, "max_batch_tokens": 10_000, "max_wait_ms": 0.0, "max_queue": 256,
                          **kw})


async def calibrated(fake: TimedBatches) -> Batcher:
    """A started batcher that has measured a single-item batch and a full batch of 8."""
    batcher = Batcher(fake, limits(), clock=lambda: fake.now, wait_budget_s=BUDGET_S)
    batcher.start()
    await batcher.submit([item("one")], [DET])
    await batcher.submit([item(f"full {i}") for i in range(8)], [DET] * 8)
    return batcher


async def burst(batcher: Batcher, n: int) -> tuple[list[asyncio.Future[list[object]]], list[QueueFullError]]:
    """`n` one-item requests arriving at once, admitted or refused as the controller does it."""
    admitted: list[asyncio.Future[list[object]]] = []
    refused: list[QueueFullError] = []
    for i in range(n):
        try:
            batcher.check_capacity(1)
        except QueueFullError as exc:
            refused.append(exc)
            continue
        admitted.append(asyncio.ensure_future(batcher.submit([item(f"burst {i}")], [DET])))
        await until(lambda: batcher.queued_items == len(admitted))
    return admitted, refused


async def hold_worker(batcher: Batcher, fake: TimedBatches) -> asyncio.Future[list[object]]:
    """Keep the worker busy at the gate, so a burst queues up behind one running batch."""
    fake.gate.clear()
    fake.started.clear()
    running = asyncio.ensure_future(batcher.submit([item("running")], [DET]))
    await wait_event(fake.started)
    return running


# --- the model -------------------------------------------------------------------------------------------
def test_the_fit_recovers_per_batch_and_per_cost_time() -> None:
    model = BatchTimeModel()
    for cost in (2, 16, 2, 16, 8):
        model.observe(cost, 1.0 + 0.01 * cost)
    a, b = model.coefficients()
    assert a == pytest.approx(1.0) and b == pytest.approx(0.01)
    assert model.seconds(16) == pytest.approx(1.16)


def test_cold_start_predicts_nothing_and_one_batch_size_splits_by_the_prior() -> None:
    model = BatchTimeModel(overhead_share=0.5)
    assert not model.ready and model.drain_seconds([16, 16]) == 0.0
    model.observe(2, 1.0)  # only single-item batches seen: the slope is unknown
    assert model.coefficients() == pytest.approx((0.5, 0.25))
    assert model.seconds(2) == pytest.approx(1.0)
    # A batch of 8 such items: below running them apart (8 s), above "batching is free" (1 s).
    assert 1.0 < model.seconds(16) < 8.0


def test_past_the_largest_measured_cost_the_slope_is_at_least_the_prior() -> None:
    model = BatchTimeModel(overhead_share=0.5)
    for cost in (10, 20) * 5:
        model.observe(cost, 1.0)  # flat so far: b = 0
    assert model.coefficients()[1] == pytest.approx(0.0)
    assert model.seconds(20) == pytest.approx(1.0)
    assert model.seconds(200) > 1.0 + 180 / 40  # prior slope ≥ 0.5 × 1 s / 20 (mean cost ≤ 20)


def test_the_estimate_follows_a_change_in_batch_time() -> None:
    model = BatchTimeModel(decay=0.8)
    for _ in range(20):
        model.observe(2, 1.0)
        model.observe(16, 1.14)
    before = model.seconds(16)
    for _ in range(10):  # the model got three times slower (another tenant, thermal throttling...)
        model.observe(2, 3.0)
        model.observe(16, 3.42)
    assert before == pytest.approx(1.14)
    assert model.seconds(16) > 0.95 * 3.42


def test_pack_forms_batches_by_key_count_and_token_budget() -> None:
    budget = limits(max_batch_size=3, max_batch_tokens=10)
    assert pack([("a", 2)] * 7, budget) == [6, 6, 2]
    assert pack([("a", 4), ("b", 4), ("a", 4), ("a", 4)], budget) == [8, 4, 4]  # b never joins a's batch
    assert pack([("a", 30), ("a", 1), ("a", 1)], budget) == [30, 2]  # over budget alone: a batch of its own


# --- the batcher ---------------------------------------------------------------------------------------------
async def test_a_burst_the_batches_clear_within_the_budget_is_admitted_in_full() -> None:
    fake = TimedBatches(per_batch=1.0, per_cost=0.01)  # batch of 1: 1.02 s; batch of 8: 1.16 s
    batcher = await calibrated(fake)
    try:
        running = await hold_worker(batcher, fake)
        admitted, refused = await burst(batcher, 48)
        # 48 items = 6 batches of 8 ≈ 7 s, inside the 10 s budget; per item at batch size 1 it was ~49 s.
        assert not refused and len(admitted) == 48
        # what is left of the running one-item batch (1.02 s, the fake clock stands still) + the 6 queued batches
        assert batcher.queue_seconds() == pytest.approx(1.02 + 6 * 1.16)
        fake.gate.set()
        await asyncio.gather(running, *admitted)
        assert max(map(len, fake.batches[-6:])) == 8
    finally:
        fake.gate.set()
        await batcher.close()


async def test_a_burst_several_times_larger_is_partly_refused_with_a_retry_after_from_the_estimate() -> None:
    fake = TimedBatches(per_batch=1.0, per_cost=0.01)
    batcher = await calibrated(fake)
    try:
        running = await hold_worker(batcher, fake)
        admitted, refused = await burst(batcher, 192)  # 24 batches ≈ 28 s of work
        # Admitted while the rest of the running batch (1.02 s) + the queue + the new item fit in 10 s: 6 batches
        # of 8 (6.96 s) and one more item, whose own batch (1.02 s) would then pass the budget.
        assert 48 <= len(admitted) <= 56 and len(admitted) + len(refused) == 192
        assert batcher.queue_seconds(1) > BUDGET_S
        last = refused[-1]
        assert last.status_code == 429 and "over the 10 s budget" in str(last)
        assert last.retry_after_s == pytest.approx(max(1.0, batcher.queue_seconds(1) - BUDGET_S))
        assert last.headers()["Retry-After"] == str(max(1, math.ceil(last.retry_after_s)))
        with pytest.raises(QueueFullError) as big:
            batcher.check_capacity(40)  # 5 more batches: ~15 s in all, so ~5 s until it would fit
        assert big.value.retry_after_s == pytest.approx(batcher.queue_seconds(40) - BUDGET_S)
        assert 4.0 < big.value.retry_after_s < 6.0
        started = fake.now
        fake.gate.set()
        await asyncio.gather(running, *admitted)  # everything admitted is served...
        # ...within the budget, the batch that was running included: no admitted request outlives the timeout.
        assert fake.now - started <= BUDGET_S
        batcher.check_capacity(1)
    finally:
        fake.gate.set()
        await batcher.close()


async def test_when_batches_slow_down_the_same_burst_is_no_longer_admitted_in_full() -> None:
    fake = TimedBatches(per_batch=1.0, per_cost=0.01)
    batcher = await calibrated(fake)
    try:
        fake.per_batch = 3.0  # three times slower per batch from now on
        for _ in range(6):
            await batcher.submit([item("one")], [DET])
            await batcher.submit([item(f"full {i}") for i in range(8)], [DET] * 8)
        running = await hold_worker(batcher, fake)
        admitted, refused = await burst(batcher, 48)  # now 6 × ~3.2 s ≈ 19 s > 10 s
        assert refused and len(admitted) < 32
        fake.gate.set()
        await asyncio.gather(running, *admitted)
    finally:
        fake.gate.set()
        await batcher.close()
