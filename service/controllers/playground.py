"""The playground page: `GET /` (service/static/index.html) and its scripts and styles under `/static/`.

Plain files of the package, no build step; the page loads nothing from anywhere but this server (its
Content-Security-Policy says so to the browser too) and calls the same API as any client, with the API
key the user types into it. Left out of the OpenAPI schema: it is a page, not an API.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router, get
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Everything from this origin only; blob: for the report figures, fetched with the API key then shown.
CSP = ("default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache"}


@get("/", include_in_schema=False, media_type="text/html")
async def playground_page() -> Response[bytes]:
    """The page (read per request: it is small, and an edited file shows on reload)."""
    return Response((STATIC_DIR / "index.html").read_bytes(), media_type="text/html",
                    headers=_HEADERS)


def playground_routes() -> list[object]:
    """The page and its static files, ready for `Litestar(route_handlers=...)`."""
    static: Router = create_static_files_router(path="/static", directories=[STATIC_DIR], name="playground-static",
                                                include_in_schema=False)
    return [playground_page, static]
