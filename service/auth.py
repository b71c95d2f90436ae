"""Optional API-key guard for `/predict` and `/models` (health, metrics and the schema stay open).

When `settings.api_key` is set, a request must carry it as `Authorization: Bearer <key>` or
`X-API-Key: <key>`; otherwise it gets 401. The comparison is constant-time (`hmac.compare_digest`)
so response timing does not leak how much of a guess was right.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.errors import UnauthorizedError
from service.settings import Settings


def _supplied_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("x-api-key")
    if header:
        return header.strip()
    scheme, _, token = (connection.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Litestar guard: raise `UnauthorizedError` unless the configured key was supplied (no-op without one).

    Async on purpose: Litestar runs a sync guard in a worker thread, a thread hop on every request."""
    settings: Settings = connection.app.state.settings
    if settings.api_key is None:
        return
    supplied = _supplied_key(connection)
    expected = settings.api_key.get_secret_value().encode("utf-8")
    if supplied is None or not hmac.compare_digest(supplied.encode("utf-8"), expected):
        raise UnauthorizedError("missing or invalid API key")
