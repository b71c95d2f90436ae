"""Which queued items form the next batch: the batcher's selection policy, free of asyncio and threads.

Contract (the batcher calls both with its pending list, oldest first; items whose future is done, i.e.
abandoned, are skipped):
- `fills_batch(pending, limits)`: whether the oldest item's group (equal `key`) already fills a batch,
  by item count (`max_batch_size`) or by summed cost (`max_batch_tokens`), so waiting longer gains nothing.
- `take_batch(pending, limits)`: the oldest item (FIFO fairness) plus the same-key items of the closest
  token length (less padding; ties go to the earlier arrival), up to `max_batch_size` items and
  `max_batch_tokens` summed cost (an item over the budget on its own still runs, alone). Returns the
  batch and the items left pending, in their original order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from models.core.predictor import MCRequest, PreparedItem
from service.settings import BatchLimits


@dataclass(eq=False)
class Entry:
    """One queued item and the future its request awaits."""

    item: PreparedItem
    request: MCRequest
    key: Hashable
    cost: int
    future: asyncio.Future[Any]
    enqueued: float


def fills_batch(pending: Sequence[Entry], limits: BatchLimits) -> bool:
    """Whether the oldest item's group already fills a batch (see module docstring)."""
    key = pending[0].key
    count = cost = 0
    for entry in pending:
        if entry.key == key and not entry.future.done():
            count += 1
            cost += entry.cost
            if count >= limits.max_batch_size or cost >= limits.max_batch_tokens:
                return True
    return False


def take_batch(pending: Sequence[Entry], limits: BatchLimits) -> tuple[list[Entry], list[Entry]]:
    """(batch, still pending) for a non-empty `pending` of live items (see module docstring)."""
    anchor = pending[0]
    length = anchor.item.n_tokens
    same_key = [entry for entry in pending[1:] if entry.key == anchor.key]
    same_key.sort(key=lambda entry: (abs(entry.item.n_tokens - length), entry.enqueued))
    chosen, budget = [anchor], anchor.cost
    for entry in same_key:
        if len(chosen) >= limits.max_batch_size:
            break
        if budget + entry.cost > limits.max_batch_tokens:
            continue  # a shorter item further down may still fit
        chosen.append(entry)
        budget += entry.cost
    taken = set(map(id, chosen))
    return chosen, [entry for entry in pending if id(entry) not in taken]
