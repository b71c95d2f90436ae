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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable

from service.settings import BatchLimits


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
