"""Dynamic batching for one model: a bounded queue of prepared items drained by one or more workers.

Contract:
- `check_capacity(n)` (service/admission.Admission, which this class inherits) is called before tokenising
  and refuses with 429 / 422 / 503 what the queue cannot take in the wait budget.
- `submit(items, requests)` queues the items (a client list counts item by item) and returns their
  predictions in order. Cancelling the awaiting task (timeout, client gone) cancels its items' futures,
  and cancelled items are dropped before their batch runs.
- The worker forms batches from the oldest item (FIFO fairness) plus the queued items with an equal
  `predictor.batch_key` and the closest token length (less padding), up to `max_batch_size` items and
  `max_batch_tokens` summed `predictor.cost` (an item over the budget on its own still runs, alone;
  the policy lives in service/batch_selection.py). It waits at most `max_wait_ms` after the oldest item
  arrived for the batch to fill; items that queued while the previous batch ran go at once.
- Up to `workers` batches run at once, each on an executor thread with `threads` torch threads (1 batch unless
  the runtime has more inference workers and the predictor allows it: `concurrent_batches`); on a
  2-core CPU, two batches on one torch thread each beat one batch on two threads, whose every op waits at a
  barrier for a thread the event loop or the client has just taken (docs/architecture.md, "Batching").
- `predictor.predict` runs on an executor thread, never on the event loop. An exception fails that
  batch's futures only (`InferenceError`, 500); the worker carries on with the next batch. Out of memory
  is the exception: the batch is halved and retried (`service.oom`), and only an item that runs out of
  memory alone fails (`OutOfMemoryError`, 503).
- `close(timeout)` stops intake, lets queued and running items finish for up to `timeout` seconds, then
  fails what is left with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol

from models.core.predictor import MCRequest, Predictor, PreparedItem
from service import devices
from service.admission import Admission, BatchTimeModel
from service.batch_selection import Entry, fills_batch, take_batch
from service.errors import InferenceError, OutOfMemoryError, UnavailableError
from service.oom import ItemOutOfMemory, predict_splitting
from service.settings import BatchLimits

log = logging.getLogger(__name__)


class BatchObserver(Protocol):
    """Receives one call per executed batch (implemented by `ServiceMetrics`)."""

    def observe_batch(self, labels: tuple[str, str], size: int, queue_waits_s: list[float],
                      inference_s: float) -> None: ...


class Batcher(Admission):
    """The queue and worker of one model (see module docstring)."""

    def __init__(
        self,
        predictor: Predictor,
        limits: BatchLimits,
        *,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait_budget_s: float | None = None,
        labels: tuple[str, str] | None = None,
        workers: int = 1,
        threads: int | None = None,
    ) -> None:
        self.predictor = predictor
        self.task: str = predictor.task
        # (task, model name) of the metrics this batcher reports; the model's name when it is not the task's.
        self.labels = labels or (self.task, getattr(predictor, "name", self.task))
        self.limits = limits
        self.workers = max(1, workers)
        # torch intra-op threads of each of its batches (None: leave the executor thread's count alone)
        self.threads = threads
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"nlp-{self.task}")
        self._observer = observer
        self._clock = clock
        self._pending: list[Entry] = []
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._crashed = False
        # Busy seconds per batch as a function of its cost: the queue-wait and Retry-After estimate. Busy
        # time runs from the later of the previous batch's end and the batch's oldest arrival, so it counts
        # the event loop's own work between batches (HTTP, JSON) and not idle gaps.
        self.batch_time = BatchTimeModel()
        self._last_finished = float("-inf")
        # The batches on the executor now, by id: (summed cost, start, items). What is left of them is part of
        # every queued item's wait, so admission counts it.
        self._inflight: dict[int, tuple[int, float, int]] = {}
        # Smoothed cost of a submitted item: the guess for items not yet tokenised at admission.
        self._item_cost = 0.0
        self._wait_budget_s = wait_budget_s

    # --- state ---------------------------------------------------------------------------------------
    @property
    def queued_items(self) -> int:
        """Items waiting (not yet in a running batch); abandoned items are removed at once."""
        return len(self._pending)

    @property
    def running_items(self) -> int:
        return sum(items for _, _, items in self._inflight.values())

    @property
    def alive(self) -> bool:
        """Started and its worker still running (a closed or crashed batcher serves nothing)."""
        return self._worker is not None and not self._worker.done() and not self._closing

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker on the running loop (idempotent)."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.task}")
            self._worker.add_done_callback(self._worker_done)

    def _worker_done(self, worker: asyncio.Task[None]) -> None:
        # The worker only ends on close; if a bug kills it, nothing would ever answer the queue, so fail
        # what is queued and refuse new work instead of letting every request wait for its timeout.
        if worker.cancelled() or worker.exception() is None:
            return
        log.error("batcher %s worker died", self.task, exc_info=worker.exception())
        self._crash()

    def _crash(self) -> None:
        self._closing = self._crashed = True
        self._fail_pending(lambda: InferenceError(f"{self.task} batcher stopped unexpectedly"))

    async def close(self, timeout: float = 0.0) -> None:
        """Refuse new items, let queued/running ones finish within `timeout` s, fail the rest with 503."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            done, _ = await asyncio.wait({self._worker}, timeout=timeout)
            if not done:
                self._worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._worker
        self._fail_pending(lambda: UnavailableError("server is shutting down", error_type="draining"))
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # --- intake (check_capacity, queue_seconds, retry_after_s: service/admission.Admission) ------------
    async def submit(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[Any]:
        """Queue `items` (with their MC requests) and return one prediction per item, in order."""
        if len(items) != len(requests):
            raise ValueError("items and requests differ in length")
        self.check_capacity(len(items))
        if self._worker is None:
            raise UnavailableError(f"{self.task} batcher not started", error_type="model_not_loaded")
        loop = asyncio.get_running_loop()
        now = self._clock()
        entries = [
            Entry(item, req, self.predictor.batch_key(item), self.predictor.cost(item, req), loop.create_future(), now)
            for item, req in zip(items, requests, strict=True)
        ]
        mean_cost = sum(entry.cost for entry in entries) / max(len(entries), 1)
        self._item_cost = mean_cost if self._item_cost == 0 else 0.8 * self._item_cost + 0.2 * mean_cost
        self._pending.extend(entries)
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(entry.future for entry in entries)))
        finally:
            # Timeout, disconnect or a sibling item's failure: whatever has not run yet is dropped now,
            # so abandoned items stop holding queue capacity while a long batch runs.
            for entry in entries:
                if not entry.future.done():
                    entry.future.cancel()
            if any(entry.future.cancelled() for entry in entries):
                self._drop_cancelled()

    # --- worker --------------------------------------------------------------------------------------
    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.workers)
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None:  # a bug outside predict's own handling
                log.error("batcher %s batch task died", self.task, exc_info=task.exception())
                self._crash()

        try:
            while True:
                self._drop_cancelled()
                if not self._pending:
                    if self._closing:
                        break
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await slots.acquire()  # a free worker first: items that queue meanwhile join this batch
                await self._fill_window()
                batch = self._select()
                if not batch:
                    slots.release()
                elif self.workers == 1:  # awaited in place: one worker keeps the single-batch behaviour exactly
                    try:
                        await self._execute(batch)
                    finally:
                        slots.release()
                else:
                    task = asyncio.get_running_loop().create_task(self._execute(batch))
                    running.add(task)
                    task.add_done_callback(finished)
            await asyncio.gather(*running)  # closing: let the running batches finish
        finally:
            for task in list(running):  # the worker cancelled (close past its timeout): their items get 503
                task.cancel()

    def _drop_cancelled(self) -> None:
        if any(entry.future.done() for entry in self._pending):
            self._pending = [entry for entry in self._pending if not entry.future.done()]

    async def _fill_window(self) -> None:
        """Wait until the oldest item has waited `max_wait_ms`, or its batch is full, or we are closing; at once
        when the queue is empty."""
        if not self._pending:  # every item was abandoned while the worker waited for a free slot
            return
        deadline = self._pending[0].enqueued + self.limits.max_wait_ms / 1000.0
        # Re-check emptiness after every await: abandoned requests remove their items meanwhile.
        while self._pending and not self._closing and not fills_batch(self._pending, self.limits):
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return
            self._drop_cancelled()

    def _select(self) -> list[Entry]:
        """Take the next batch off the queue (service/batch_selection.py)."""
        self._drop_cancelled()
        if not self._pending:
            return []
        chosen, self._pending = take_batch(self._pending, self.limits)
        return chosen

    async def _execute(self, batch: list[Entry]) -> None:
        live = [entry for entry in batch if not entry.future.done()]
        if not live:
            return
        started = self._clock()
        waits = [started - entry.enqueued for entry in live]
        self._inflight[id(batch)] = (sum(entry.cost for entry in live), started, len(live))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, partial(
                self._predict, [e.item for e in live], [e.request for e in live]))
            if len(results) != len(live):
                raise RuntimeError(f"predictor returned {len(results)} predictions for {len(live)} items")
        except asyncio.CancelledError:
            self._fail(live, lambda: UnavailableError("server is shutting down", error_type="draining"))
            raise
        except Exception as exc:
            log.exception("%s batch of %d items failed", self.task, len(live))

            def error(cause: BaseException = exc) -> Exception:
                failure = InferenceError(f"inference failed for this batch ({type(cause).__name__})")
                failure.__cause__ = cause
                return failure

            self._fail(live, error)
        else:
            for entry, result in zip(live, results, strict=True):
                if entry.future.done():
                    continue
                if isinstance(result, ItemOutOfMemory):
                    entry.future.set_exception(OutOfMemoryError(
                        f"{self.task}: out of memory on this input even alone; send a shorter text or fewer "
                        "MC samples"))
                else:
                    entry.future.set_result(result)
        finally:
            del self._inflight[id(batch)]
            finished = self._clock()
            elapsed = finished - started
            # One worker: busy since the previous batch ended (the loop's work between batches counts). Several:
            # each batch's own time, since they overlap (queue_seconds divides by the workers).
            busy_since = max(self._last_finished, min(entry.enqueued for entry in live)) if self.workers == 1 \
                else started
            self._last_finished = finished
            self.batch_time.observe(sum(entry.cost for entry in live), finished - busy_since)
            if self._observer is not None:
                self._observer.observe_batch(self.labels, len(live), waits, elapsed)

    def _predict(self, items: list[PreparedItem], requests: list[MCRequest]) -> list[Any]:
        """One batch on the executor thread, on this model's share of the torch threads."""
        if self.threads is not None:
            devices.use_threads(self.threads)
        return predict_splitting(self.predictor.predict, items, requests)

    @staticmethod
    def _fail(entries: list[Entry], make_error: Callable[[], Exception]) -> None:
        # A fresh exception per future: one instance raised in many tasks would share a mutating traceback.
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(make_error())

    def _fail_pending(self, make_error: Callable[[], Exception]) -> None:
        pending, self._pending = self._pending, []
        self._fail(pending, make_error)
