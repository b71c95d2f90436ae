"""Accounting of one API request: in flight for the drain, and its outcome in the request metrics.

`accounted(runtime, labels, started)` wraps a request's handling: it counts the request as in flight
(`Runtime.track_request`, for the drain) and, however the block ends, records its status and duration in
`nlp_requests_total` / `nlp_request_duration_seconds` and a refusal's reason in `nlp_rejected_requests_total`,
under the (task, model) labels of `request_labels` (service/routing.py: `unknown` for what is not served).
Shared by `/predict`, `/predict/stream` and `/v1`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from models.core.predictor import InputError
from service import routing
from service.errors import ServiceError
from service.metrics import Labels
from service.runtime import Runtime
from service.schemas import PredictRequest

# error_type → the `reason` label of nlp_rejected_requests_total (a fixed, small set).
_REJECT_REASONS = {"queue_full": "queue_full", "draining": "draining", "not_ready": "not_ready",
                   "model_not_loaded": "not_ready", "timeout": "timeout", "client_disconnected": "disconnected"}


@dataclass
class Outcome:
    """The HTTP status a request ended with (500 until the handler says otherwise). `handed_off`: the
    request lives on elsewhere (a stream), which records its own outcome, so this block records nothing."""

    status: int = 500
    handed_off: bool = False


def request_labels(runtime: Runtime, data: PredictRequest) -> Labels:
    """The metric labels of `data` (service/routing.py: `unknown` for what is not served)."""
    return routing.labels(runtime, data.model, data.task)


@contextmanager
def accounted(runtime: Runtime, labels: Labels, started: float) -> Iterator[Outcome]:
    """Count the request as in flight (for the drain) and, however it ends, record its status, duration
    and rejection reason under `labels`. The body sets `outcome.status` on success; errors are mapped and
    re-raised."""
    outcome = Outcome()
    with runtime.track_request():
        try:
            yield outcome
        except ServiceError as exc:
            outcome.status = exc.status_code
            reason = _REJECT_REASONS.get(exc.error_type, "invalid" if outcome.status == 422 else None)
            if reason is not None:
                runtime.metrics.observe_rejection(labels, reason)
            raise
        except InputError:
            outcome.status = 422
            runtime.metrics.observe_rejection(labels, "invalid")
            raise
        finally:
            if not outcome.handed_off:
                runtime.metrics.observe_request(labels, outcome.status, time.perf_counter() - started)
