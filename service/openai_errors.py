"""OpenAI's error shape on `/v1/*`: `{"error": {"message", "type", "param", "code"}}`.

The app keeps one set of exception handlers (service.errors); `with_openai_errors` wraps each so that on a
`/v1/` path its answer is reshaped: same message and headers (`Retry-After`, `WWW-Authenticate`), `code` =
the service's `error_type`, `type` from the status, and 422 becomes 400 (OpenAI's status for a request
that parses but is invalid; its clients raise `BadRequestError` for it). Everywhere else nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request, Response
from litestar.exceptions import ValidationException
from litestar.types import ExceptionHandlersMap

from service.errors import ServiceError

OPENAI_PREFIX = "/v1/"


class OpenAIRequestError(ServiceError):
    """A request the OpenAI endpoints refuse, naming the field at fault (`param`). The status is the service's
    own (422 for an invalid request, as /predict; sent as 400 on the wire) so metrics read the same."""

    status_code = 422
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status_code: int = 422) -> None:
        super().__init__(message, error_type=code)
        self.param = param
        self.status_code = status_code


def error_type_of(status: int) -> str:
    """OpenAI's `type` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_error(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """The error body (also sent as a stream's last `data:` when a stream fails after it started)."""
    if status == 401:
        code = "invalid_api_key"  # what OpenAI's own API says, so clients' handling of it applies
    return {"error": {"message": message, "type": error_type_of(status), "param": param, "code": code}}


def _param(exc: Exception) -> str | None:
    if isinstance(exc, OpenAIRequestError):
        return exc.param
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        for entry in exc.extra:
            key = entry.get("key") if isinstance(entry, dict) else None
            if key and key != "data":
                return str(key)
    return None


def _reshape(response: Response, exc: Exception) -> Response:
    content = response.content if isinstance(response.content, dict) else {}
    status = 400 if response.status_code == 422 else response.status_code
    body = openai_error(status, str(content.get("error") or "error"), content.get("error_type"), _param(exc))
    return Response(body, status_code=status, headers=dict(response.headers or {}))


Handler = Callable[[Request[Any, Any, Any], Any], Response]


def _wrap(handler: Handler) -> Handler:
    def handle(request: Request[Any, Any, Any], exc: Any) -> Response:
        response = handler(request, exc)
        if str(request.scope.get("path", "")).startswith(OPENAI_PREFIX):
            return _reshape(response, exc)
        return response

    return handle


def with_openai_errors(handlers: ExceptionHandlersMap) -> ExceptionHandlersMap:
    """`handlers` with every handler answering in OpenAI's shape on `/v1/` paths (module docstring)."""
    return {key: _wrap(handler) for key, handler in handlers.items()}  # type: ignore[arg-type]
