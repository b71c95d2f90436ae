"""Batcher unit tests with the fake predictor; timing is controlled with the predictor's gate event."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.core.predictor import MCRequest, PreparedItem
from service.batcher import Batcher
from service.errors import InferenceError, LimitError, QueueFullError, UnavailableError
from service.settings import BatchLimits
from tests.service.conftest import until, wait_event
from tests.service.fakes import FakePredictor

pytestmark = pytest.mark.anyio

DET = MCRequest(mc_samples=0, seed=0)


def limits(**kw: float) -> BatchLimits:
    base = {"max_batch_size": 4, "max_batch_tokens": 10_000, "max_wait_ms": 0.0, "max_queue": 64}
    return BatchLimits(**{**base, **kw})


def item(text: str, *, key: str | None = None) -> PreparedItem:
    return PreparedItem(text=text, input_ids=tuple(range(len(text.split()))), n_tokens=len(text.split()),
                        parameters={"key": key} if key else {})


class Observer:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.waits: list[float] = []

    def observe_batch(self, labels: tuple[str, str], size: int, queue_waits_s: list[float],
                      inference_s: float) -> None:
        assert labels == ("sentiment", "sentiment") and inference_s >= 0  # (task, model name)
        self.sizes.append(size)
        self.waits.extend(queue_waits_s)


async def started_batcher(fake: FakePredictor, **kw: float) -> tuple[Batcher, Observer]:
    observer = Observer()
    batcher = Batcher(fake, limits(**kw), observer=observer)
    batcher.start()
    return batcher, observer


async def block_first_batch(batcher: Batcher, fake: FakePredictor) -> asyncio.Task[list[object]]:
    """Submit one item and wait until its batch is running and held at the gate."""
    fake.gate.clear()
    first = asyncio.create_task(batcher.submit([item("first blocker")], [DET]))
    await wait_event(fake.started)
    return first


async def test_items_queued_during_a_batch_are_batched_together_up_to_max_batch_size() -> None:
    fake = FakePredictor()
    batcher, observer = await started_batcher(fake, max_batch_size=4)
    first = await block_first_batch(batcher, fake)
    later = [asyncio.create_task(batcher.submit([item(f"text number {i}")], [DET])) for i in range(9)]
    await until(lambda: batcher.queued_items == 9)
    fake.gate.set()
    results = await asyncio.gather(first, *later)
    assert [len(batch) for batch in fake.batches] == [1, 4, 4, 1]
    assert observer.sizes == [1, 4, 4, 1]
    assert len(observer.waits) == 10 and all(w >= 0 for w in observer.waits)
    assert [r[0].input_tokens for r in results[1:]] == [3] * 9
    await batcher.close()


async def test_a_client_list_counts_item_by_item_and_keeps_its_order() -> None:
    fake = FakePredictor()
    batcher, _ = await started_batcher(fake, max_batch_size=4)
    texts = [" ".join(["word"] * n) for n in (5, 1, 4, 2, 6, 3)]  # told apart by their lengths
    predictions = await batcher.submit([item(t) for t in texts], [DET] * 6)
    assert [len(b) for b in fake.batches] == [4, 2]
    # Batched by closest length, not by position, yet answered in the list's order.
    assert [sorted(len(t.split()) for t in batch) for batch in fake.batches] == [[3, 4, 5, 6], [1, 2]]
    assert [p.input_tokens for p in predictions] == [5, 1, 4, 2, 6, 3]
    await batcher.close()


async def test_token_budget_splits_batches_but_an_oversized_item_still_runs_alone() -> None:
    fake = FakePredictor()
    batcher, _ = await started_batcher(fake, max_batch_size=32, max_batch_tokens=10)
    texts = ["one two three four five six"] * 3 + [" ".join(["w"] * 12)]
    await batcher.submit([item(t) for t in texts], [DET] * 4)
    # cost = tokens × max(1, T): 6 + 6 > 10 so each 6-token item goes alone; the 12-token one too.
    assert [len(b) for b in fake.batches] == [1, 1, 1, 1]
    await batcher.close()


async def test_mc_samples_count_against_the_token_budget() -> None:
    fake = FakePredictor()
    batcher, _ = await started_batcher(fake, max_batch_size=32, max_batch_tokens=40)
    await batcher.submit([item("a b")] * 4, [MCRequest(10, 1)] * 4)  # cost 20 each → two per batch
    assert [len(b) for b in fake.batches] == [2, 2]
    await batcher.close()


async def test_similar_lengths_are_grouped_and_keys_never_mix() -> None:
    fake = FakePredictor()
    batcher, _ = await started_batcher(fake, max_batch_size=2)
    first = await block_first_batch(batcher, fake)
    short, long_ = "s " * 2, "l " * 30
    queued = [item(short + "a"), item(long_ + "b"), item(short + "c"), item(long_ + "d"),
              item("x y", key="other"), item("z w", key="other")]
    tasks = [asyncio.create_task(batcher.submit([q], [DET])) for q in queued]
    await until(lambda: batcher.queued_items == 6)
    fake.gate.set()
    await asyncio.gather(first, *tasks)
    batches = [sorted(b) for b in fake.batches[1:]]
    assert batches == [sorted([short + "a", short + "c"]), sorted([long_ + "b", long_ + "d"]), ["x y", "z w"]]
    await batcher.close()


async def test_a_full_batch_does_not_wait_for_the_window() -> None:
    fake = FakePredictor()
    # A 60 s window would time the test out if the batcher waited for it.
    batcher, _ = await started_batcher(fake, max_batch_size=3, max_wait_ms=60_000)
    results = await asyncio.wait_for(batcher.submit([item("a"), item("b"), item("c")], [DET] * 3), timeout=10)
    assert len(results) == 3 and fake.batches == [["a", "b", "c"]]
    await batcher.close()


async def test_predict_runs_off_the_event_loop_thread() -> None:
    fake = FakePredictor()
    batcher, _ = await started_batcher(fake)
    await batcher.submit([item("hello")], [DET])
    assert fake.threads and fake.threads[0] != threading.get_ident()
    await batcher.close()


async def test_a_failing_batch_fails_only_its_own_items() -> None:
    fake = FakePredictor()
    batcher, _ = await started_batcher(fake, max_batch_size=2)
    first = await block_first_batch(batcher, fake)
    doomed = [asyncio.create_task(batcher.submit([item(t)], [DET])) for t in ("FAIL one", "two")]
    await until(lambda: batcher.queued_items == 2)
    survivor = asyncio.create_task(batcher.submit([item("three")], [DET]))
    await until(lambda: batcher.queued_items == 3)
    fake.gate.set()
    await first
    for task in doomed:
        with pytest.raises(InferenceError) as info:
            await task
        assert "secret" not in str(info.value)
    assert (await survivor)[0].input_tokens == 1
    assert (await batcher.submit([item("after the failure")], [DET]))[0].input_tokens == 3
    await batcher.close()


async def test_cancelled_requests_are_dropped_before_their_batch_runs() -> None:
    fake = FakePredictor()
    batcher, _ = await started_batcher(fake)
    first = await block_first_batch(batcher, fake)
    gone = asyncio.create_task(batcher.submit([item("client went away"), item("and this too")], [DET] * 2))
    kept = asyncio.create_task(batcher.submit([item("still here")], [DET]))
    await until(lambda: batcher.queued_items == 3)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert batcher.queued_items == 1  # the abandoned items no longer hold queue capacity
    fake.gate.set()
    await first
    await kept
    ran = [t for batch in fake.batches for t in batch]
    assert "still here" in ran and "client went away" not in ran and "and this too" not in ran
    await batcher.close()


async def test_capacity_is_checked_in_items_with_a_retry_after_estimate() -> None:
    fake = FakePredictor()
    batcher, _ = await started_batcher(fake, max_queue=3)
    first = await block_first_batch(batcher, fake)
    waiting = asyncio.create_task(batcher.submit([item("a"), item("b")], [DET] * 2))
    await until(lambda: batcher.queued_items == 2)
    batcher.check_capacity(1)  # 2 + 1 fits exactly
    with pytest.raises(QueueFullError) as info:
        batcher.check_capacity(2)
    assert info.value.retry_after_s >= 1 and int(info.value.headers()["Retry-After"]) >= 1
    with pytest.raises(QueueFullError):
        await batcher.submit([item("c"), item("d")], [DET] * 2)
    with pytest.raises(LimitError):
        batcher.check_capacity(4)  # could never fit, whatever the load
    fake.gate.set()
    await asyncio.gather(first, waiting)
    await batcher.close()


async def test_close_finishes_queued_work_then_refuses_new_items() -> None:
    fake = FakePredictor()
    batcher, _ = await started_batcher(fake)
    first = await block_first_batch(batcher, fake)
    queued = asyncio.create_task(batcher.submit([item("queued before close")], [DET]))
    await until(lambda: batcher.queued_items == 1)
    closing = asyncio.create_task(batcher.close(timeout=10))
    await until(lambda: batcher._closing)
    with pytest.raises(UnavailableError):
        await batcher.submit([item("too late")], [DET])
    fake.gate.set()
    await closing
    assert (await first)[0].input_tokens == 2 and (await queued)[0].input_tokens == 3


async def test_close_past_its_timeout_fails_the_leftovers_with_503() -> None:
    fake = FakePredictor()
    batcher, _ = await started_batcher(fake)
    first = await block_first_batch(batcher, fake)
    queued = asyncio.create_task(batcher.submit([item("never runs")], [DET]))
    await until(lambda: batcher.queued_items == 1)
    await batcher.close(timeout=0)
    for task in (first, queued):
        with pytest.raises(UnavailableError):
            await task
    fake.gate.set()


async def test_a_dead_worker_fails_its_queue_and_refuses_new_work(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePredictor()
    batcher, _ = await started_batcher(fake)

    def broken() -> list[object]:
        raise RuntimeError("a bug in batch selection")

    monkeypatch.setattr(batcher, "_select", broken)
    with pytest.raises(InferenceError):
        await batcher.submit([item("queued when the worker dies")], [DET])
    with pytest.raises(UnavailableError):
        await batcher.submit([item("afterwards")], [DET])
    assert fake.batches == []
    await batcher.close()


async def test_two_workers_run_two_batches_at_once_and_a_failure_stays_in_its_batch() -> None:
    fake = FakePredictor()
    fake.gate.clear()
    batcher = Batcher(fake, limits(max_batch_size=1), workers=2)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit([item(t)], [DET])) for t in ("one", "FAIL two", "three four")]
    await until(lambda: len(fake.batches) == 2)  # both workers hold a batch at the closed gate
    assert batcher.running_items == 2 and batcher.queued_items == 1
    assert len(set(fake.threads)) == 2  # on two executor threads
    fake.gate.set()
    assert (await tasks[0])[0].input_tokens == 1
    with pytest.raises(InferenceError):
        await tasks[1]
    assert (await tasks[2])[0].input_tokens == 2
    assert batcher.running_items == 0
    await batcher.close()


async def test_a_request_abandoned_while_every_worker_is_busy_leaves_the_worker_serving() -> None:
    # The worker waits for a free slot with one item queued; its client gives up meanwhile, so the queue is empty
    # when the slot frees. The worker must go back to waiting, not die (then every later request got 503).
    fake = FakePredictor()
    fake.gate.clear()
    batcher = Batcher(fake, limits(max_batch_size=1), workers=2)
    batcher.start()
    busy = [asyncio.create_task(batcher.submit([item(t)], [DET])) for t in ("one", "two words")]
    await until(lambda: len(fake.batches) == 2)  # both slots held at the closed gate
    abandoned = asyncio.create_task(batcher.submit([item("gone")], [DET]))
    await until(lambda: batcher.queued_items == 1)
    abandoned.cancel()  # a disconnect: submit's cleanup drops the item from the queue
    await until(lambda: batcher.queued_items == 0)
    fake.gate.set()
    await asyncio.gather(*busy)
    later = await asyncio.wait_for(batcher.submit([item("after three words")], [DET]), timeout=10)
    assert later[0].input_tokens == 3 and batcher.alive
    await batcher.close()


async def test_one_worker_runs_one_batch_at_a_time() -> None:
    fake = FakePredictor()
    batcher, _ = await started_batcher(fake, max_batch_size=1)
    first = await block_first_batch(batcher, fake)
    second = asyncio.create_task(batcher.submit([item("second")], [DET]))
    await until(lambda: batcher.queued_items == 1)
    await asyncio.sleep(0.05)  # time for a second batch to start, were it allowed
    assert len(fake.batches) == 1 and batcher.running_items == 1
    fake.gate.set()
    await first, await second
    await batcher.close()


async def test_each_batch_runs_on_its_models_share_of_the_torch_threads() -> None:
    class Counting(FakePredictor):
        def predict(self, items, requests):  # type: ignore[no-untyped-def]
            self.seen_threads.append(torch.get_num_threads())
            return super().predict(items, requests)

    before = torch.get_num_threads()
    executor = ThreadPoolExecutor(max_workers=1)  # one inference thread serving two models, as the runtime's
    try:
        for threads in (1, 2, 1):  # e.g. a concurrent model's share, then a one-worker model's whole count
            fake = Counting()
            fake.seen_threads = []
            batcher = Batcher(fake, limits(), executor=executor, threads=threads)
            batcher.start()
            await batcher.submit([item("one")], [DET])
            await batcher.close()
            assert fake.seen_threads == [threads]
    finally:
        executor.submit(torch.set_num_threads, before).result()  # later threads inherit the last count
        executor.shutdown()


async def test_close_with_two_workers_finishes_both_running_batches_or_fails_them_past_the_timeout() -> None:
    for timeout, finishes in ((10.0, True), (0.0, False)):
        fake = FakePredictor()
        fake.gate.clear()
        batcher = Batcher(fake, limits(max_batch_size=1), workers=2)
        batcher.start()
        tasks = [asyncio.create_task(batcher.submit([item(t)], [DET])) for t in ("one", "two")]
        await until(lambda fake=fake: len(fake.batches) == 2)
        closing = asyncio.create_task(batcher.close(timeout=timeout))
        await until(lambda batcher=batcher: batcher._closing)
        if finishes:
            fake.gate.set()
        await closing
        for task in tasks:
            if finishes:
                assert (await task)[0].input_tokens == 1
            else:
                with pytest.raises(UnavailableError):
                    await task
        fake.gate.set()


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 40), st.sampled_from([None, "a", "b"]), st.integers(0, 3)),
                     min_size=1, max_size=30),
    max_batch_size=st.integers(1, 8),
    max_batch_tokens=st.integers(1, 120),
)
def test_batches_respect_limits_and_keys_and_answer_everyone_in_order(
    lengths: list[tuple[int, str | None, int]], max_batch_size: int, max_batch_tokens: int
) -> None:
    async def scenario() -> None:
        fake = FakePredictor()
        batcher, _ = await started_batcher(fake, max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens,
                                           max_queue=64)
        first = await block_first_batch(batcher, fake)
        queued = [item(" ".join([f"w{i}"] * n), key=key) for i, (n, key, _) in enumerate(lengths)]
        requests = [MCRequest(t, i) for i, (_, _, t) in enumerate(lengths)]
        tasks = [asyncio.create_task(batcher.submit([q], [r])) for q, r in zip(queued, requests, strict=True)]
        await until(lambda: batcher.queued_items == len(queued))
        fake.gate.set()
        await first
        results = [(await task)[0] for task in tasks]
        assert [r.input_tokens for r in results] == [n for n, _, _ in lengths]
        by_text = {q.text: (q, r) for q, r in zip(queued, requests, strict=True)}
        ran = [t for batch in fake.batches[1:] for t in batch]
        assert sorted(ran) == sorted(by_text)  # everyone ran exactly once
        for batch in fake.batches[1:]:
            assert len(batch) <= max_batch_size
            assert len({by_text[t][0].parameters.get("key") for t in batch}) == 1
            cost = sum(fake.cost(*by_text[t]) for t in batch)
            assert cost <= max_batch_tokens or len(batch) == 1
        await batcher.close()

    asyncio.run(scenario())
