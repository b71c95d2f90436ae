"""Server process for the real-uvicorn fault tests: `python -m service`'s `run()` with a gated real predictor.

The tiny sentiment predictor is wrapped so the test can hold batches: a thread reads commands from stdin,
`hold` closes the gate and `open` opens it (open at start). Every batch prints `BATCH <json list of its
texts>` before it runs, and `HELD <n>` when it waits at a closed gate, so the test knows exactly which
texts ran and when work is in flight (events across processes, not sleeps). Settings come from `NLP_*`
variables as for `python -m service`.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.core.predictor import MCRequest, PredictorOptions, PreparedItem
from models.registry import TASKS, load_predictor
from service.__main__ import configure_logging, run
from service.runtime import Runtime
from service.settings import Settings
from tests.delegating import DelegatingPredictor

GATE = threading.Event()
GATE.set()
_OUT = threading.Lock()


def emit(line: str) -> None:
    """One whole line on stdout. `print` from two threads can interleave ("BATCH [...]ACK hold"), which
    would hide the ACK from the test, so every line is written in one call under a lock."""
    with _OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def read_commands() -> None:
    for line in sys.stdin:
        command = line.strip()
        if command == "hold":
            GATE.clear()
        elif command == "open":
            GATE.set()
        emit(f"ACK {command}")
    GATE.set()  # stdin closed: never leave a batch stuck


class GatedPredictor(DelegatingPredictor):
    """Delegates to a real predictor; `predict` reports its texts and waits while the gate is closed."""

    def predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[Any]:
        emit(f"BATCH {json.dumps([item.text for item in items])}")
        if not GATE.is_set():
            emit(f"HELD {len(items)}")
            GATE.wait()
        return self.inner.predict(items, requests)


def gated_loader(artifact_dir: Path, options: PredictorOptions) -> GatedPredictor:
    return GatedPredictor(load_predictor(artifact_dir, options))


if __name__ == "__main__":
    threading.Thread(target=read_commands, daemon=True, name="gate-commands").start()
    settings = Settings()
    configure_logging(settings.log_level)
    run(settings, Runtime(settings, loader=gated_loader, known_tasks=TASKS))
