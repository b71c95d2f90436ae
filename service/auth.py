"""Optional API-key guards: one key for `/predict` and `/models`, and separate ones for health and metrics.

- `require_api_key` guards inference and model details with `settings.api_key`.
- `require_health_key` guards `/health/*` with `settings.health_api_key`, `require_metrics_key` guards
  `/metrics` with `settings.metrics_api_key`. Unset (the default), probes and scrapers need no key;
  separate keys mean a scraper's or a probe's credential never grants inference.

A request must carry the key as `Authorization: Bearer <key>` or `X-API-Key: <key>`; otherwise it gets
401. The comparison is constant-time (`hmac.compare_digest`) so response timing does not leak how much of
a guess was right. The OpenAPI schema (`/schema`) stays open: it describes the API, it grants nothing.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from pydantic import SecretStr

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


def check_key(connection: ASGIConnection[Any, Any, Any, Any], secret: SecretStr | None) -> None:
    """Raise `UnauthorizedError` unless `secret` is None or the request carries it (constant-time compare)."""
    if secret is None:
        return
    supplied = _supplied_key(connection)
    expected = secret.get_secret_value().encode("utf-8")
    if supplied is None or not hmac.compare_digest(supplied.encode("utf-8"), expected):
        raise UnauthorizedError("missing or invalid API key")


# Litestar guards are async on purpose: a sync guard runs in a worker thread, a thread hop per request.
async def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of `/predict` and `/models` (no-op without `api_key`)."""
    settings: Settings = connection.app.state.settings
    check_key(connection, settings.api_key)


async def require_health_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of `/health/*` (no-op without `health_api_key`)."""
    settings: Settings = connection.app.state.settings
    check_key(connection, settings.health_api_key)


async def require_metrics_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of `/metrics` (no-op without `metrics_api_key`)."""
    settings: Settings = connection.app.state.settings
    check_key(connection, settings.metrics_api_key)
