"""Out-of-memory on a batch: split it in halves and retry, down to single items.

Contract:
- `is_out_of_memory(exc)` recognises an allocation failure of any device without importing torch:
  `torch.OutOfMemoryError` (CUDA, also raised by some CPU paths), Python's `MemoryError`, and the
  `RuntimeError`s of torch's allocators ("out of memory", "can't allocate memory", "not enough memory").
- `predict_splitting(predict, items, requests)` runs on the inference thread. It returns one result per
  item, in order. On an out-of-memory failure it frees the allocator's cached blocks and retries each
  half; an item that runs out of memory on its own gets an `ItemOutOfMemory` marker in its place, so the
  rest of the batch still gets answers. Any other exception propagates (the batcher fails the batch).
- A retry never re-sends streamed text: each request's `text_sink` is wrapped (`OnceSink`) so that it
  receives every character of the item's output at most once across attempts. A retry decodes again from
  the start (same seed, so normally the same text); what it produces up to the length already sent is
  compared with what was sent and suppressed, and only text past it is forwarded. If the retry's text
  differs from what was sent (a sampled token flipped by the different padding of a smaller batch, or a
  shorter output), nothing more is forwarded for that item and its `OnceSink.faithful` turns False: the
  receiver holds text that is not the final text. A receiver to whom that matters passes its own
  `OnceSink` (it is used as is) and checks `faithful` once the item is answered: `POST /predict/stream`
  then fails the item with an `error` event instead of a `done` whose text contradicts the stream; for
  `POST /predict` the sink is only a clock and the retry's answer stands.
"""

from __future__ import annotations

import dataclasses
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
TextSink = Callable[[str], None]


class OnceSink:
    """Wraps an item's text sink for every attempt at the item: forwards each character at most once.

    `restart()` is called before each attempt; the attempt's pieces are matched, position by position,
    against the text already sent, and only what extends it is forwarded. After a mismatch the attempt
    forwards nothing more (see module docstring). Runs on the inference thread only."""

    def __init__(self, sink: TextSink) -> None:
        self._sink = sink
        self.sent = ""  # everything the wrapped sink has received
        self._position = 0  # characters produced by the current attempt
        self._diverged = False  # the current attempt's text contradicts `sent`

    def restart(self) -> None:
        self._position, self._diverged = 0, False

    @property
    def faithful(self) -> bool:
        """Whether the text sent is exactly the latest attempt's output: False once a retry diverged from it
        or finished short of it. Read after the item's answer arrived."""
        return not self._diverged and self._position == len(self.sent)

    def __call__(self, piece: str) -> None:
        start, self._position = self._position, self._position + len(piece)
        if self._diverged:
            return
        known = self.sent[start:self._position]  # what the receiver already has at these positions
        if piece[:len(known)] != known:
            self._diverged = True
            log.warning("a retried item's text differs from the text already streamed; streaming stops")
            return
        if fresh := piece[len(known):]:
            self.sent += fresh
            self._sink(fresh)


def _once(request: Any) -> Any:
    """`request` with its text sink (if any) wrapped in an `OnceSink`."""
    sink = getattr(request, "text_sink", None)
    if sink is None or isinstance(sink, OnceSink):
        return request
    return dataclasses.replace(request, text_sink=OnceSink(sink))


def predict_splitting(
    predict: Predict,
    items: Sequence[Any],
    requests: Sequence[Any],
    *,
    release: Callable[[], None] = release_cached_memory,
) -> list[Any]:
    """`predict(items, requests)`, halving the batch on out-of-memory (see module docstring)."""
    return _split(predict, items, [_once(request) for request in requests], release)


def _split(predict: Predict, items: Sequence[Any], requests: Sequence[Any], release: Callable[[], None]) -> list[Any]:
    for request in requests:
        if isinstance(getattr(request, "text_sink", None), OnceSink):
            request.text_sink.restart()
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
    return (_split(predict, items[:half], requests[:half], release)
            + _split(predict, items[half:], requests[half:], release))
