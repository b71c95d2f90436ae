"""The playground's routes (the page, its static files) and the artifact reports route, in-process with a
fake model: what is served, with which headers, behind which key, and that nothing outside reports/ leaks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.controllers.playground import STATIC_DIR
from tests.service.conftest import serve

pytestmark = pytest.mark.anyio
KEY = {"Authorization": "Bearer pg-key"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def add_reports(artifact: Path) -> None:
    reports = artifact / "reports"
    reports.mkdir()
    (reports / "reliability.png").write_bytes(PNG)
    (reports / "metrics.json").write_text('{"accuracy": 0.9}')
    (reports / "notes.exe").write_bytes(b"MZ")  # not a report type: never listed
    (reports / "nested").mkdir()
    (reports / "nested" / "deep.png").write_bytes(PNG)
    (reports / "linked.png").symlink_to(artifact / "manifest.json")


async def test_the_page_and_its_files_are_served_from_this_origin_only(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        page = await s.client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        referenced = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
        assert "/static/app.js" in referenced and "/static/style.css" in referenced
        for path in referenced + ["/static/api.js", "/static/render.js", "/static/card.js"]:
            response = await s.client.get(path)
            assert response.status_code == 200, path
        assert "javascript" in (await s.client.get("/static/app.js")).headers["content-type"]
        assert (await s.client.get("/static/../settings.py")).status_code == 404
        schema = (await s.client.get("/schema/openapi.json")).json()
    assert "/" not in schema["paths"] and not any(p.startswith("/static") for p in schema["paths"])
    assert {"/models/{name}/reports", "/models/{name}/reports/{file}", "/v1/models", "/v1/completions",
            "/v1/chat/completions"} <= set(schema["paths"])


def test_the_static_files_reference_nothing_outside_the_server() -> None:
    for path in STATIC_DIR.iterdir():
        text = re.sub(r'xmlns="[^"]*"', "", path.read_text(encoding="utf-8"))  # a namespace name, never fetched
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), path.name
        assert "@import" not in text and "<style" not in text and "style=" not in text, path.name  # CSP: no inline


async def test_the_page_can_be_turned_off(tmp_path: Path) -> None:
    async with serve(tmp_path, playground=False) as s:
        assert (await s.client.get("/")).status_code == 404
        assert (await s.client.get("/static/app.js")).status_code == 404


async def test_reports_lists_and_serves_only_report_files_of_the_artifact(tmp_path: Path) -> None:
    async with serve(tmp_path, api_key="pg-key") as s:
        assert s.runtime.slots["sentiment"].artifact is not None
        add_reports(s.runtime.slots["sentiment"].artifact)
        assert (await s.client.get("/models/sentiment/reports")).status_code == 401
        assert (await s.client.get("/models/sentiment/reports/reliability.png")).status_code == 401
        listing = await s.client.get("/models/sentiment/reports", headers=KEY)
        assert listing.status_code == 200
        body = listing.json()
        assert body["version"] == s.runtime.slots["sentiment"].version
        assert body["files"] == [{"name": "metrics.json", "media_type": "application/json", "bytes": 17},
                                 {"name": "reliability.png", "media_type": "image/png", "bytes": len(PNG)}]
        figure = await s.client.get("/models/sentiment/reports/reliability.png", headers=KEY)
        assert figure.status_code == 200 and figure.content == PNG
        assert figure.headers["content-type"] == "image/png" and figure.headers["x-content-type-options"] == "nosniff"
        for name in ("notes.exe", "linked.png", "nested", "nested%2Fdeep.png", "..%2Fmanifest.json",
                     "%2E%2E%2Fmanifest.json", "%2E%2E", "manifest.json", "..%5Cmanifest.json"):
            refused = await s.client.get(f"/models/sentiment/reports/{name}", headers=KEY)
            assert refused.status_code == 404, name
            assert set(refused.json()) == {"error", "error_type"}
        assert (await s.client.get("/models/sentiment/reports/../manifest.json", headers=KEY)).status_code == 404
        missing = await s.client.get("/models/nope/reports", headers=KEY)
        assert missing.status_code == 404 and missing.json()["error_type"] == "not_found"


async def test_an_artifact_without_reports_lists_none(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        listing = await s.client.get("/models/sentiment/reports")
    assert listing.status_code == 200 and listing.json()["files"] == []
