"""An in-memory sentiment Predictor with controllable timing and failures, for service tests.

- Labels come from the words: "good"/"great"/"loved" push positive, "bad"/"dull"/"boring" negative,
  so ordering tests can tell predictions apart.
- MC samples are drawn from `random.Random(f"{text}|{T}|{seed}")` and the uncertainty is computed with
  the real formulas, so the same (text, T, seed) reproduces exactly and a different seed does not.
- `gate`: when cleared, `predict` blocks until it is set (released); `started` is set as each batch
  begins. Both are `threading.Event`s because `predict` runs on the service's worker thread.
- A text containing "FAIL" makes its whole batch raise; "CRASH" in `prepare` raises a RuntimeError (a bug).
- `prepared` records every text tokenised, `batches` the texts of every executed batch, `threads`
  the thread ids predict ran on.
"""

from __future__ import annotations

import math
import random
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

LABELS = ("negative", "positive")
_POSITIVE = {"good", "great", "loved", "wonderful"}
_NEGATIVE = {"bad", "dull", "boring", "terrible"}


def _entropy(probs: Sequence[float]) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


class FakePredictor:
    """Implements models.core.predictor.Predictor for the "sentiment" task."""

    task: ClassVar[str] = "sentiment"

    def __init__(self, *, version: str = "fake-1", default_mc_samples: int = 10, max_tokens: int = 50,
                 abstain_entropy: float = 0.6, gate_timeout_s: float = 30.0) -> None:
        self.name = "sentiment"
        self.version = version
        self.default_mc_samples = default_mc_samples
        self.max_tokens = max_tokens
        self.abstain_entropy = abstain_entropy
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

    # --- helpers -------------------------------------------------------------------------------------
    def _logit(self, text: str) -> float:
        words = {w.strip(".,!").lower() for w in text.split()}
        return 2.0 * len(words & _POSITIVE) - 2.0 * len(words & _NEGATIVE) + 0.1

    def _one(self, item: PreparedItem, request: MCRequest) -> SentimentPrediction:
        logit = self._logit(item.text)
        if request.mc_samples == 0:
            samples = [logit]
        else:
            rng = random.Random(f"{item.text}|{request.mc_samples}|{request.seed}")
            samples = [logit + rng.gauss(0.0, 1.0) for _ in range(request.mc_samples)]
        probs = [(1 / (1 + math.exp(s)), 1 / (1 + math.exp(-s))) for s in samples]
        mean = [sum(p[i] for p in probs) / len(probs) for i in range(2)]
        top = 0 if mean[0] >= mean[1] else 1
        uncertainty = None
        abstain = False
        if request.mc_samples > 0:
            total = _entropy(mean)
            expected = sum(_entropy(p) for p in probs) / len(probs)
            votes = sum(1 for p in probs if (0 if p[0] >= p[1] else 1) != top)
            mu = mean[top]
            std = math.sqrt(sum((p[top] - mu) ** 2 for p in probs) / len(probs))
            uncertainty = ClassificationUncertainty(total, expected, max(total - expected, 0.0), votes / len(probs), std)
            abstain = total > self.abstain_entropy
        return SentimentPrediction(
            label=LABELS[top], confidence=mean[top], probabilities=dict(zip(LABELS, mean, strict=True)),
            uncertainty=uncertainty, abstain=abstain, input_tokens=item.n_tokens, truncated=False,
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
