"""Progress lines of long phases: when they are logged and what they say (fake clock, nothing sleeps)."""

from __future__ import annotations

import logging

import pytest

from training.core.progress import ProgressLog, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_format_duration() -> None:
    assert format_duration(4.4) == "4 s"
    assert format_duration(200) == "3 min 20 s"
    assert format_duration(3900) == "1 h 05 min"
    assert format_duration(float("nan")) == format_duration(-1) == "?"


def test_lines_at_each_tenth_with_rate_and_time_left(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="training.core.progress"):
        progress = ProgressLog("evaluation test/mc_full", 100, unit="reviews", clock=clock)
        for _ in range(25):
            clock.now += 2.0  # 4 reviews per batch, 2 reviews/s
            progress.update(4)
        progress.close()  # already closed by reaching the end: no second closing line
    assert len(progress.lines) == 10 and caplog.messages == progress.lines
    assert progress.lines[0] == "evaluation test/mc_full: 12/100 reviews (12 %), 2.0 reviews/s, 44 s left"
    assert progress.lines[-1] == "evaluation test/mc_full: 100/100 reviews (100 %), 2.0 reviews/s, done in 50 s"


def test_a_slow_phase_still_logs_between_marks_and_close_reports_an_early_stop() -> None:
    clock = Clock()
    progress = ProgressLog("decode", 1000, every=0.5, min_interval_s=60.0, clock=clock)
    for _ in range(3):
        clock.now += 61.0
        progress.update(1)
    assert len(progress.lines) == 3 and all(line.endswith("left") for line in progress.lines)
    with progress:
        pass  # the context manager closes it
    assert progress.lines[-1].startswith("decode: 3/1000 items (0 %)") and "done in 3 min 3 s" in progress.lines[-1]


def test_a_jump_past_several_marks_logs_once_and_bad_arguments_raise() -> None:
    clock = Clock()
    progress = ProgressLog("x", 10, clock=clock)
    clock.now = 1.0
    progress.update(5)
    clock.now = 1.5
    progress.update(1)  # 60 % is the next mark after the jump to 50 %
    assert len(progress.lines) == 2
    with pytest.raises(ValueError):
        ProgressLog("x", -1)
    with pytest.raises(ValueError):
        ProgressLog("x", 10, every=0.0)


def test_heartbeat_says_a_slow_phase_is_alive_and_stops_at_close() -> None:
    import time as real_time

    progress = ProgressLog("slow phase", 3, heartbeat_s=0.05)
    deadline = real_time.monotonic() + 5.0
    while not progress.lines and real_time.monotonic() < deadline:
        real_time.sleep(0.01)
    assert progress.lines and "still working, 0/3 items done" in progress.lines[0]
    progress.update(3)
    assert progress.lines[-1].startswith("slow phase: 3/3 items") and "done in" in progress.lines[-1]
    count = len(progress.lines)
    real_time.sleep(0.2)
    assert len(progress.lines) == count  # the thread stops with the phase
