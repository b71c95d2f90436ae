"""The admission estimate: how long a model's queue takes to drain, from the batches it will form.

Contract:
- `BatchTimeModel.observe(cost, seconds)` records one executed batch (its summed `predictor.cost` and the
  busy seconds it took); `seconds(cost)` predicts a batch's time as `a + b × cost`. The line is an
  exponentially weighted least-squares fit (an observation `k` batches old weighs `decay**k`, so a change
  in batch time takes over within a few batches), kept between the two safe bounds "a batch costs no less
  than a cheaper one" (`b ≥ 0`) and "a batch costs no more than its items run apart" (`a ≥ 0`). When the
  observed costs are too alike to show a slope (e.g. only single-item batches so far), `overhead_share`
  of the mean batch time is taken as the per-batch part `a`. Past the largest cost of the last 64 batches
  the line is not trusted to stay flat: each further unit of cost adds at least that prior share of the
  mean time per unit (so a burst after only small batches is neither refused at the per-item rate, the
  old estimate's mistake, nor admitted as if batching were free). `ready` is False until one batch ran.
- `pack(items, limits)` → the summed cost of each batch that `(key, cost)` items in queue order form:
  each key's items fill batches in order up to `max_batch_size` items and `max_batch_tokens` cost (an item
  over the budget alone is a batch of its own). It never packs tighter than `take_batch`, which may also
  skip an item that does not fit, so it errs towards more batches.
- A queue's drain time is then `sum(seconds(cost) for each batch)`: each batch pays the per-batch time
  once, however many items share it, plus the per-cost time for what it holds.
- `Admission` is the batcher's intake side (service/batcher.Batcher inherits it), over the batcher's queue,
  its running batches and this model. `check_capacity(n)` is called *before* tokenising: it raises
  `QueueFullError` (429, with a Retry-After estimate) when `n` more items would not fit in `max_queue`, or when
  the queue with them would take longer than `wait_budget_s` to drain (`queue_seconds`: what is left of the
  running batches plus the batches the queue forms × the measured time per batch, divided by the workers that
  drain them side by side; under overload a FIFO queue longer than the request timeout makes every request time
  out after using the model); `LimitError` (422) when `n` could never fit, and `UnavailableError` (503) once
  the batcher is closing. Before any batch has run there is no measurement, so only `max_queue` bounds the
  queue; a lone request (empty queue) is always let in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING

from service.errors import LimitError, QueueFullError, UnavailableError
from service.settings import BatchLimits

if TYPE_CHECKING:
    from service.batch_selection import Entry

_NEW_ITEMS = object()  # the batch key of not-yet-tokenised items in the admission estimate


class BatchTimeModel:
    """Seconds per batch as a function of its cost (see module docstring)."""

    # overhead_share 0.7: each item past a measured batch adds 0.3 of a lone item's time. Measured marginal cost of
    # an item in a batch, as a share of its time alone: generation ≈ 0.25 (quick artifact, 12 new tokens, T = 4:
    # 0.5 refused a 48-request burst that drained in 0.37 of the budget, bench/burst.py), sentiment ≈ 0.4 (batch 32
    # = 2.4× the throughput of batch 1); the fit replaces the prior after a few batches either way.
    def __init__(self, *, decay: float = 0.8, overhead_share: float = 0.7) -> None:
        if not 0.0 < decay < 1.0 or not 0.0 <= overhead_share <= 1.0:
            raise ValueError("decay must be in (0, 1) and overhead_share in [0, 1]")
        self.decay = decay
        self.overhead_share = overhead_share
        # Decayed sums of 1, x, y, x², xy over the observed batches (x = cost, y = seconds).
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        # Costs of the last batches, whose weight in the fit still counts (0.8**64 ≈ 6e-7).
        self._recent: deque[float] = deque(maxlen=64)
        self._largest = 0.0  # the largest of them: how far the fit has been measured

    @property
    def ready(self) -> bool:
        return self._w > 0.0

    def observe(self, cost: float, seconds: float) -> None:
        """Record one executed batch; the fit moves by a weight of `1 - decay` towards it."""
        x, y = max(float(cost), 1.0), max(float(seconds), 0.0)
        d = self.decay
        self._w = d * self._w + 1.0
        self._x = d * self._x + x
        self._y = d * self._y + y
        self._xx = d * self._xx + x * x
        self._xy = d * self._xy + x * y
        self._recent.append(x)
        self._largest = max(self._recent)

    def coefficients(self) -> tuple[float, float]:
        """(a, b) of `seconds = a + b × cost`; (0, 0) before any observation."""
        if not self.ready:
            return 0.0, 0.0
        mean_x, mean_y = self._x / self._w, self._y / self._w
        var_x = self._xx / self._w - mean_x * mean_x
        if var_x <= (0.05 * mean_x) ** 2:  # costs within ~5 % of each other: the slope is noise
            slope = (1.0 - self.overhead_share) * mean_y / mean_x
        else:
            slope = (self._xy / self._w - mean_x * mean_y) / var_x
        # The line passes through the means; clamping the slope to [0, mean_y / mean_x] keeps a, b ≥ 0.
        slope = min(max(slope, 0.0), mean_y / mean_x)
        return mean_y - slope * mean_x, slope

    def seconds(self, cost: float) -> float:
        """Predicted seconds of one batch of summed cost `cost` (0 before any observation)."""
        if not self.ready:
            return 0.0
        a, b = self.coefficients()
        if cost <= self._largest:
            return a + b * cost
        # Beyond what was measured, the slope is at least the prior's (see module docstring).
        prior = (1.0 - self.overhead_share) * self._y / self._x
        return a + b * self._largest + max(b, prior) * (cost - self._largest)

    def drain_seconds(self, batch_costs: Iterable[float]) -> float:
        """Predicted seconds to run batches of these summed costs one after another."""
        return sum(self.seconds(cost) for cost in batch_costs)


def pack(items: Iterable[tuple[Hashable, int]], limits: BatchLimits) -> list[int]:
    """The summed cost of each batch that `(key, cost)` items in queue order form (see module docstring)."""
    open_batch: dict[Hashable, int] = {}  # key → index of its batch still being filled
    counts: list[int] = []
    costs: list[int] = []
    for key, cost in items:
        index = open_batch.get(key)
        if index is None or counts[index] >= limits.max_batch_size or costs[index] + cost > limits.max_batch_tokens:
            index = open_batch[key] = len(costs)
            counts.append(0)
            costs.append(0)
        counts[index] += 1
        costs[index] += cost
    return costs


class Admission:
    """The intake checks of a batcher, over the state it keeps (set by `service.batcher.Batcher.__init__`)."""

    task: str
    limits: BatchLimits
    workers: int
    batch_time: BatchTimeModel
    _pending: list[Entry]
    _inflight: dict[int, tuple[int, float, int]]  # running batches: (summed cost, start, items)
    _item_cost: float
    _wait_budget_s: float | None
    _closing: bool
    _crashed: bool
    _clock: Callable[[], float]

    def queue_seconds(self, n_items: int = 0) -> float:
        """Estimated seconds to finish the running batches and drain the queue plus `n_items` more (0 before any
        batch was measured)."""
        # New items are not tokenised yet: they count at the usual item cost, in batches of their own
        # (they may well join a queued batch; counting them apart errs towards refusing).
        extra = [(_NEW_ITEMS, max(1, round(self._item_cost)))] * n_items
        now = self._clock()
        in_flight = max((max(0.0, self.batch_time.seconds(cost) - (now - started))
                         for cost, started, _ in self._inflight.values()), default=0.0)
        # With several workers the queued batches drain side by side; each batch's time was measured while
        # the others ran, so dividing by the workers is the throughput the server showed.
        return in_flight + self.batch_time.drain_seconds(
            pack([(e.key, e.cost) for e in self._pending] + extra, self.limits)) / self.workers

    def retry_after_s(self, n_items: int) -> float:
        """Seconds until roughly `n_items` more would be admitted: the drain time over the budget, or
        the drain time of the items over `max_queue`."""
        queued = len(self._pending) + n_items
        drain = self.queue_seconds(n_items)
        over_queue = drain * max(0, queued - self.limits.max_queue) / max(queued, 1)
        over_budget = drain - self._wait_budget_s if self._wait_budget_s is not None else 0.0
        return max(1.0, over_queue, over_budget)

    def check_capacity(self, n_items: int) -> None:
        """Raise unless `n_items` more items can be queued now (cheap; call before tokenising)."""
        if self._crashed:
            raise UnavailableError(f"{self.task} batcher stopped; see the server log", error_type="model_not_loaded")
        if self._closing:
            raise UnavailableError("server is draining; retry on another replica", error_type="draining")
        if n_items > self.limits.max_queue:
            raise LimitError(f"{n_items} items exceed this model's queue of {self.limits.max_queue}; split the request")
        budget = self._wait_budget_s
        if len(self._pending) + n_items > self.limits.max_queue:
            why = f"queue is full ({len(self._pending)}/{self.limits.max_queue} items)"
        elif self._pending and budget is not None and (drain := self.queue_seconds(n_items)) > budget:
            why = f"queue would take ~{drain:.1f} s, over the {budget:g} s budget"
        else:
            return
        raise QueueFullError(f"{self.task} {why}", retry_after_s=self.retry_after_s(n_items))
