"""Server process for the SIGTERM test: `python -m service`'s `run()` with a stdin-gated real predictor.

Each batch prints `BATCH <n>` to stdout and then waits for one line on stdin before running, so the
test decides exactly when in-flight work may finish (an event across processes, not a sleep).
Settings come from `NLP_*` variables as for `python -m service`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.core.predictor import MCRequest, PredictorOptions, PreparedItem
from models.registry import TASKS, load_predictor
from service.__main__ import configure_logging, run
from service.runtime import Runtime
from service.settings import Settings
from tests.delegating import DelegatingPredictor


class StdinGatedPredictor(DelegatingPredictor):
    """Delegates to a real predictor; `predict` announces itself and waits for a stdin line."""

    def predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[Any]:
        print(f"BATCH {len(items)}", flush=True)
        if not sys.stdin.readline():
            raise RuntimeError("test closed the gate")
        return self.inner.predict(items, requests)


def gated_loader(artifact_dir: Path, options: PredictorOptions) -> StdinGatedPredictor:
    return StdinGatedPredictor(load_predictor(artifact_dir, options))


if __name__ == "__main__":
    settings = Settings()
    configure_logging(settings.log_level)
    run(settings, Runtime(settings, loader=gated_loader, known_tasks=TASKS))
