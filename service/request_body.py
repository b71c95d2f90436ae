"""The request class of the app: JSON bodies that cannot be decoded are the client's fault (400), always.

Litestar turns msgspec's syntax errors into a 400, but two failures of the decoder escape as plain
exceptions and would be answered 500: invalid UTF-8 inside a string (`UnicodeDecodeError`) and nesting
deeper than the interpreter's recursion limit (`RecursionError`, e.g. `[[[[…]]]]` 1,000 levels deep).
`JSONSafeRequest.json()` reports both as `ClientException` (400 `malformed_json` in `service.errors`).
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException


class JSONSafeRequest(Request[Any, Any, Any]):
    """`litestar.Request` whose `json()` raises `ClientException` for every undecodable body."""

    async def json(self) -> Any:
        """The decoded body; raises `ClientException` (400) for invalid UTF-8 or too-deep nesting."""
        try:
            return await super().json()
        except UnicodeDecodeError as exc:
            raise ClientException("body is not valid UTF-8") from exc
        except RecursionError as exc:
            raise ClientException("JSON nests too deeply") from exc
