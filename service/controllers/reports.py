"""`GET /models/{name}/reports` and `GET /models/{name}/reports/{file}`: the training reports of the artifact
a model was loaded from (reliability diagram, risk-coverage, training curves, metrics.json).

Only files that the artifact's `reports/` directory lists are served: the requested name is looked up in
that listing (never joined onto a path), symbolic links and subdirectories are skipped, and only known
report types are listed (PNG, JPEG, JSON, text, CSV), each sent with its own type and `nosniff`. Behind the
same API key as `/models`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from pydantic import BaseModel, Field

from service import routing
from service.auth import require_api_key
from service.runtime import ModelSlot, Runtime

MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".json": "application/json",
               ".txt": "text/plain; charset=utf-8", ".csv": "text/csv; charset=utf-8"}
_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'",
            "Cache-Control": "private, max-age=300"}


class ReportFile(BaseModel):
    name: str = Field(description="File name; fetch it at `GET /models/{name}/reports/{file}`.")
    media_type: str
    bytes: int = Field(description="Size, bytes.")


class ReportList(BaseModel):
    model: str
    version: str | None = Field(description="Artifact version the reports belong to.")
    files: list[ReportFile] = Field(description="Report files, sorted by name; empty when the artifact has none.")


def _slot(runtime: Runtime, name: str) -> ModelSlot:
    slot = routing.by_name(runtime, name)
    if slot is None:
        raise NotFoundException(f"no model named {name!r}; see GET /models")
    return slot


def _listing(slot: ModelSlot) -> dict[str, Path]:
    """Servable report files of the slot's artifact, by name (module docstring)."""
    if slot.artifact is None:
        return {}
    directory = slot.artifact / "reports"
    if not directory.is_dir() or directory.is_symlink():
        return {}
    return {entry.name: entry for entry in sorted(directory.iterdir())
            if entry.suffix.lower() in MEDIA_TYPES and entry.is_file() and not entry.is_symlink()}


class ReportsController(Controller):
    path = "/models/{name:str}/reports"
    guards = [require_api_key]
    tags = ["models"]

    @get(summary="The training reports of a model's artifact.")
    async def list_reports(self, name: FromPath[str], state: State) -> ReportList:
        slot = _slot(state.runtime, name)
        files = await asyncio.to_thread(lambda: [
            ReportFile(name=n, media_type=MEDIA_TYPES[p.suffix.lower()], bytes=p.stat().st_size)
            for n, p in _listing(slot).items()])
        return ReportList(model=name, version=slot.version, files=files)

    @get("/{file:str}", summary="One report file (PNG figure or JSON), as listed by the reports listing.",
         media_type="application/octet-stream")
    async def report(self, name: FromPath[str], file: FromPath[str], state: State) -> Response[bytes]:
        slot = _slot(state.runtime, name)
        path = (await asyncio.to_thread(_listing, slot)).get(file)
        if path is None:
            raise NotFoundException(f"no report {file!r} for {name}; see GET /models/{name}/reports")
        content = await asyncio.to_thread(path.read_bytes)
        return Response(content, media_type=MEDIA_TYPES[path.suffix.lower()], headers=_HEADERS)
