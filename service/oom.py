"""Out-of-memory on a batch: split it in halves and retry, down to single items.

Contract:
- `is_out_of_memory(exc)` recognises an allocation failure of any device without importing torch:
  `torch.OutOfMemoryError` (CUDA, also raised by some CPU paths), Python's `MemoryError`, and the
  `RuntimeError`s of torch's allocators ("out of memory", "can't allocate memory", "not enough memory").
- `predict_splitting(predict, items, requests)` runs on the inference thread. It returns one result per
  item, in order. On an out-of-memory failure it frees the allocator's cached blocks and retries each
  half; an item that runs out of memory on its own gets an `ItemOutOfMemory` marker in its place, so the
  rest of the batch still gets answers. Any other exception propagates (the batcher fails the batch).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate")


@dataclass(frozen=True)
class ItemOutOfMemory:
    """Stands in for the result of an item that ran out of memory in a batch of one."""

    detail: str


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is a device or host allocation failure (see module docstring)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in _OOM_MESSAGES)


def release_cached_memory() -> None:
    """Return the CUDA caching allocator's free blocks, so a smaller retry can use them (no-op on CPU)."""
    torch = sys.modules.get("torch")  # never import torch here: a CPU-only or fake predictor has no need
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


Predict = Callable[[Sequence[Any], Sequence[Any]], list[Any]]


def predict_splitting(
    predict: Predict,
    items: Sequence[Any],
    requests: Sequence[Any],
    *,
    release: Callable[[], None] = release_cached_memory,
) -> list[Any]:
    """`predict(items, requests)`, halving the batch on out-of-memory (see module docstring)."""
    try:
        return predict(items, requests)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        detail = f"{type(exc).__name__}: {str(exc)[:200]}"
    # Retry outside the except block: the live exception's traceback holds the failed batch's tensors.
    release()
    if len(items) == 1:
        log.error("out of memory on a single item; it cannot be split further")
        return [ItemOutOfMemory(detail)]
    half = len(items) // 2
    log.warning("out of memory on a batch of %d items; retrying as %d + %d", len(items), half, len(items) - half)
    return (predict_splitting(predict, items[:half], requests[:half], release=release)
            + predict_splitting(predict, items[half:], requests[half:], release=release))
