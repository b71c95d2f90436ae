"""Progress lines for long phases that run outside the training loop (evaluation, calibration, decoding).

A log without a terminal (pipes, container logs, `tee`) shows no progress bar, so a phase of several minutes
would be silent. `ProgressLog(phase, total)` logs lines like the training loop's:

    evaluation test/mc_full: 120/600 items (20 %), 2.4 items/s, 3 min 20 s left

- `update(n)` counts n more items done; a line is logged when the done count crosses the next `every`
  fraction of the total (default 10 %), or when `min_interval_s` has passed since the last line (default
  60 s, so a slow phase still shows it is alive), and always at the end. Rates and the time left come from
  the phase so far (items / elapsed seconds).
- `close()` logs the closing line ("done in …") once, if the end was not reached (e.g. a phase that stopped
  early); using the object as a context manager calls it.
- `heartbeat_s` (off by default) starts a daemon thread that logs "still working" when no line came for that
  many seconds, for phases whose single steps (one batch of stochastic decodes) can take minutes.
- `clock` is injectable (tests use a fake one); nothing sleeps on the caller's thread.
`format_duration(seconds)` is the human form used in these lines and by the training loop's estimate.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """'45 s', '3 min 20 s', '1 h 05 min'; '?' for a negative or non-finite value."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class ProgressLog:
    """See module docstring."""

    def __init__(self, phase: str, total: int, *, unit: str = "items", every: float = 0.1,
                 min_interval_s: float = 60.0, logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.perf_counter, heartbeat_s: float | None = None) -> None:
        if total < 0 or not 0.0 < every <= 1.0:
            raise ValueError(f"need total >= 0 and every in (0, 1], got {total}, {every}")
        self.phase, self.total, self.unit = phase, total, unit
        self.every, self.min_interval_s = every, min_interval_s
        self.logger, self.clock = logger or log, clock
        self.done = 0
        self.started = self.last_logged = clock()
        self._next_mark = 1
        self._closed = False
        self.lines: list[str] = []  # what was logged, for tests and reports
        self._stop = threading.Event()
        if heartbeat_s:
            threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True, name=f"progress {phase}").start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            now = self.clock()
            if not self._closed and now - self.last_logged >= interval:
                self.last_logged = now
                line = (f"{self.phase}: still working, {self.done}/{self.total} {self.unit} done, "
                        f"{format_duration(now - self.started)} so far")
                self.lines.append(line)
                self.logger.info("%s", line)

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """n more items done; logs when a mark or the interval is reached (module docstring)."""
        self.done += n
        now = self.clock()
        finished = self.done >= self.total
        crossed = self.total > 0 and self.done >= self._mark(self._next_mark)
        if crossed:
            while self._mark(self._next_mark) <= self.done:
                self._next_mark += 1
        if finished:
            self._emit(now, final=True)
        elif crossed or now - self.last_logged >= self.min_interval_s:
            self._emit(now, final=False)

    def _mark(self, index: int) -> float:
        # less a rounding margin: 6 × 0.1 × 10 is 6.000000000000001 in floating point
        return index * self.every * self.total - 1e-9

    def close(self) -> None:
        """Log the closing line if the end was never reached (module docstring)."""
        self._stop.set()
        if not self._closed:
            self._emit(self.clock(), final=True)

    def _emit(self, now: float, final: bool) -> None:
        if self._closed:
            return
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else math.nan
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        head = f"{self.phase}: {self.done}/{self.total} {self.unit}{share}, {rate:.1f} {self.unit}/s"
        if final:
            line = f"{head}, done in {format_duration(elapsed)}"
            self._closed = True
            self._stop.set()
        else:
            left = (self.total - self.done) / rate if rate > 0 else math.nan
            line = f"{head}, {format_duration(left)} left"
        self.last_logged = now
        self.lines.append(line)
        self.logger.info("%s", line)
