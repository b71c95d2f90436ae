"""An in-memory sentiment Predictor for service tests that need control a real model cannot give: timing,
failures and gating. What the service does with a request is tested against the real tiny models
(tests/service/test_predict_api.py, test_real_*.py); tests using this fake assert the service's behaviour
(statuses, what ran, in which batches and order), never the fake's numbers, which are placeholders.

- Tokens are the whitespace-separated words (`input_tokens` = their count): items of different lengths
  are told apart by it. Every prediction is the same "positive" placeholder; T > 0 adds a placeholder
  uncertainty (so the uncertainty metrics move), T = 0 has none.
- `gate`: when cleared, `predict` blocks until it is set (released); `started` is set as each batch
  begins. Both are `threading.Event`s because `predict` runs on the service's worker thread.
- A text containing "FAIL" makes its whole batch raise; "CRASH" in `prepare` raises a RuntimeError (a bug).
  Any `parameters`, or more than `max_tokens` words, are refused with InputError (422).
- `prepared` records every text tokenised, `batches` the texts of every executed batch, `requests` their
  MC requests, `threads` the thread ids predict ran on.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from models.core.predictor import (
    ClassificationUncertainty,
    InputError,
    MCRequest,
    PredictorOptions,
    PreparedItem,
    SentimentPrediction,
)

PLACEHOLDER_UNCERTAINTY = ClassificationUncertainty(predictive_entropy=0.5, expected_entropy=0.4,
                                                    mutual_information=0.1, variation_ratio=0.0,
                                                    probability_std=0.1)


class FakePredictor:
    """Implements models.core.predictor.Predictor for the "sentiment" task."""

    task: ClassVar[str] = "sentiment"

    def __init__(self, *, version: str = "fake-1", default_mc_samples: int = 10, max_tokens: int = 50,
                 gate_timeout_s: float = 30.0) -> None:
        self.name = "sentiment"
        self.version = version
        self.default_mc_samples = default_mc_samples
        self.max_tokens = max_tokens
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.gate_timeout_s = gate_timeout_s
        self.prepared: list[str] = []
        self.batches: list[list[str]] = []
        self.requests: list[list[MCRequest]] = []
        self.threads: list[int] = []
        self.warmed = False
        self.options: PredictorOptions | None = None

    # --- protocol ------------------------------------------------------------------------------------
    def prepare(self, text: str, parameters: Mapping[str, Any]) -> PreparedItem:
        self.prepared.append(text)
        if parameters:
            raise InputError(f"sentiment takes no parameters, got {sorted(parameters)}")
        if "CRASH" in text:
            raise RuntimeError("a bug in prepare (secret internal detail)")
        words = text.split()
        if len(words) > self.max_tokens:
            raise InputError(f"{len(words)} tokens exceed the limit of {self.max_tokens}")
        ids = tuple(zlib.crc32(w.encode()) % 1000 for w in words)
        return PreparedItem(text=text, input_ids=ids, n_tokens=len(ids))

    def batch_key(self, item: PreparedItem) -> Hashable:
        return item.parameters.get("key") if item.parameters else None

    def cost(self, item: PreparedItem, request: MCRequest) -> int:
        return item.n_tokens * max(1, request.mc_samples)

    def predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[SentimentPrediction]:
        self.batches.append([item.text for item in items])
        self.requests.append(list(requests))
        self.threads.append(threading.get_ident())
        self.started.set()
        if not self.gate.wait(self.gate_timeout_s):
            raise TimeoutError("test gate never opened")
        if any("FAIL" in item.text for item in items):
            raise RuntimeError("batch exploded (secret internal detail)")
        return [self._one(item, request) for item, request in zip(items, requests, strict=True)]

    def warmup(self) -> None:
        self.warmed = True

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "fake": True, "max_input_tokens": self.max_tokens}

    # --- helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def _one(item: PreparedItem, request: MCRequest) -> SentimentPrediction:
        mc = request.mc_samples > 0
        return SentimentPrediction(
            label="positive", confidence=0.75, probabilities={"negative": 0.25, "positive": 0.75},
            uncertainty=PLACEHOLDER_UNCERTAINTY if mc else None, abstain=False, input_tokens=item.n_tokens,
            truncated=False,
        )


class FakeLoader:
    """A `Runtime` loader returning `predictor`; `release` (a threading.Event) can hold loading back,
    and `error` makes it fail like a corrupt artifact would."""

    def __init__(self, predictor: FakePredictor | None = None, *, error: Exception | None = None) -> None:
        self.predictor = predictor or FakePredictor()
        self.error = error
        self.release = threading.Event()
        self.release.set()
        self.calls: list[tuple[Path, PredictorOptions]] = []

    def __call__(self, artifact_dir: Path, options: PredictorOptions) -> FakePredictor:
        self.calls.append((artifact_dir, options))
        if not self.release.wait(30):
            raise TimeoutError("test never released the loader")
        if self.error is not None:
            raise self.error
        self.predictor.options = options
        return self.predictor
