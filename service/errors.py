"""Service exceptions and their mapping onto the one error body `{"error": str, "error_type": str}`.

| status | error_type                       | raised by                                                  |
|--------|----------------------------------|------------------------------------------------------------|
| 400    | malformed_json                   | body is not JSON (or empty)                                |
| 401    | unauthorized                     | API key configured and missing or wrong                    |
| 404    | not_found                        | unknown route or model name                                |
| 405    | method_not_allowed               | wrong HTTP method                                          |
| 413    | payload_too_large                | body over `max_payload_bytes`                              |
| 422    | validation_error / limit_exceeded / invalid_input / unknown_task / mc_samples_above_cap |  |
| 429    | queue_full (+ `Retry-After` s)   | the model's queue cannot take the request's items          |
| 500    | inference_error / internal_error | a batch failed / a bug; the body never carries a traceback |
| 503    | not_ready / draining / model_not_loaded / out_of_memory (an item too big even alone)          |
| 504    | timeout                          | queue wait + inference passed `request_timeout_s`          |
"""

from __future__ import annotations

import logging
import math
from typing import Any

from litestar import Request, Response
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from models.core.predictor import InputError

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error with a client-facing message, an HTTP status and an `error_type`."""

    status_code: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_type is not None:
            self.error_type = error_type

    def headers(self) -> dict[str, str]:
        return {}


class LimitError(ServiceError):
    """The request parses but breaks a limit: empty text, too many items, mc_samples above the cap…"""

    status_code = 422
    error_type = "limit_exceeded"


class UnknownTaskError(LimitError):
    error_type = "unknown_task"


class UnauthorizedError(ServiceError):
    status_code = 401
    error_type = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="nlp"'}


class QueueFullError(ServiceError):
    """The model's queue has no room; `retry_after_s` is the server's estimate of when it will."""

    status_code = 429
    error_type = "queue_full"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        # Retry-After takes whole seconds; never 0, which would invite an immediate retry storm.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class UnavailableError(ServiceError):
    """Not ready, draining, or the requested task's model is not loaded."""

    status_code = 503
    error_type = "not_ready"


class OutOfMemoryError(UnavailableError):
    """The device ran out of memory on this item even in a batch of one (the batch was split first)."""

    error_type = "out_of_memory"


class RequestTimeoutError(ServiceError):
    status_code = 504
    error_type = "timeout"


class InferenceError(ServiceError):
    """The batch holding this request failed; the message names no internals."""

    status_code = 500
    error_type = "inference_error"


def error_response(status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> Response:
    """The one error body, as a Litestar response."""
    return Response({"error": message, "error_type": error_type}, status_code=status, headers=headers or {})


def _service_error(_: Request, exc: ServiceError) -> Response:
    return error_response(exc.status_code, exc.message, exc.error_type, exc.headers())


def _input_error(_: Request, exc: InputError) -> Response:
    return error_response(422, str(exc), "invalid_input")


def _describe_validation(extra: Any) -> str:
    """Turn Litestar's validation details into one readable line (`field: message; …`)."""
    if not isinstance(extra, list) or not extra:
        return "request does not match the schema"
    parts = []
    for entry in extra:
        if isinstance(entry, dict):
            key = entry.get("key")
            parts.append(f"{key}: {entry.get('message')}" if key else str(entry.get("message")))
    return "; ".join(parts) or "request does not match the schema"


def _is_missing_body(exc: ValidationException) -> bool:
    extra = exc.extra if isinstance(exc.extra, list) else []
    return bool(extra) and all(isinstance(e, dict) and e.get("key") == "data" and e.get("source") == "body"
                               for e in extra)


def _http_exception(_: Request, exc: HTTPException) -> Response:
    """Litestar's own exceptions, reshaped into the error body with the statuses of docs/architecture.md §5."""
    if isinstance(exc, ValidationException):
        if _is_missing_body(exc):
            return error_response(400, "request body is empty; send a JSON object", "malformed_json")
        # Litestar answers schema failures with 400; a request that parses but is invalid is a 422 here.
        return error_response(422, _describe_validation(exc.extra), "validation_error")
    status = exc.status_code
    if status == 400 and isinstance(exc, ClientException):
        return error_response(400, f"malformed JSON: {exc.detail}", "malformed_json")
    kinds = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
             413: "payload_too_large", 429: "too_many_requests", 503: "unavailable"}
    if status >= 500:
        log.error("HTTP %d from the framework: %s", status, exc.detail)
        return error_response(status, "internal error", "internal_error")
    return error_response(status, str(exc.detail), kinds.get(status, "client_error"), dict(exc.headers or {}))


def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug: log the traceback for operators, tell the client nothing about internals.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error", "internal_error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ServiceError: _service_error,
    InputError: _input_error,
    HTTPException: _http_exception,
    Exception: _unexpected,
}
