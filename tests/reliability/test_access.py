"""Access: API keys (constant-time) on /predict and /models, separate optional keys for health and
metrics, CORS off unless configured, and no request text in the logs at the default level."""

from __future__ import annotations

import asyncio
import hmac
import logging
from pathlib import Path

import pytest

from service import auth
from tests.service.conftest import Served, serve, until, wait_event

pytestmark = pytest.mark.anyio
PREDICT = {"task": "sentiment", "text": "a good film", "mc_samples": 2}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_the_api_key_guards_predict_and_models_and_leaves_probes_open(tmp_path: Path) -> None:
    async with serve(tmp_path, api_key="s3cret-key") as served:
        client = served.client
        for method, path in (("POST", "/predict"), ("GET", "/models"), ("GET", "/models/sentiment")):
            body = PREDICT if method == "POST" else None
            for headers in ({}, bearer("wrong"), {"X-API-Key": "s3cret-ke"}, {"Authorization": "Basic s3cret-key"}):
                denied = await client.request(method, path, json=body, headers=headers)
                assert denied.status_code == 401, (path, headers)
                assert denied.json()["error_type"] == "unauthorized"
                assert denied.headers["www-authenticate"].startswith("Bearer")
            for headers in (bearer("s3cret-key"), {"X-API-Key": "s3cret-key"}):
                assert (await client.request(method, path, json=body, headers=headers)).status_code == 200
        for path in ("/health/live", "/health/ready", "/metrics", "/schema/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
        assert served.fake.prepared == ["a good film"] * 2  # refused requests never reached the model


async def test_health_and_metrics_can_be_guarded_with_their_own_keys(tmp_path: Path) -> None:
    async with serve(tmp_path, api_key="predict-key", health_api_key="probe-key",
                     metrics_api_key="scrape-key") as served:
        client = served.client
        cases = {"/health/live": "probe-key", "/health/ready": "probe-key", "/metrics": "scrape-key"}
        for path, key in cases.items():
            assert (await client.get(path)).status_code == 401
            assert (await client.get(path, headers=bearer("predict-key"))).status_code == 401  # keys do not mix
            assert (await client.get(path, headers=bearer(key))).status_code == 200
        for key in ("probe-key", "scrape-key"):
            assert (await client.post("/predict", json=PREDICT, headers=bearer(key))).status_code == 401


async def test_keys_are_compared_in_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    async with serve(tmp_path, api_key="k-123", metrics_api_key="m-456") as served:
        assert (await served.client.post("/predict", json=PREDICT, headers=bearer("k-999"))).status_code == 401
        assert (await served.client.get("/metrics", headers={"X-API-Key": "m-456"})).status_code == 200
    assert compared == [(b"k-999", b"k-123"), (b"m-456", b"m-456")]


async def test_cors_is_off_by_default(tmp_path: Path) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    async with serve(tmp_path) as served:
        answer = await served.client.options("/predict", headers=preflight)
        assert not any(name.lower().startswith("access-control-") for name in answer.headers)
        simple = await served.client.post("/predict", json=PREDICT, headers={"Origin": "https://evil.example"})
        assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


async def test_cors_allows_only_the_configured_origins(tmp_path: Path) -> None:
    async with serve(tmp_path, cors_allow_origins=["https://app.example"]) as served:
        ok = await served.client.options("/predict", headers={"Origin": "https://app.example",
                                                              "Access-Control-Request-Method": "POST"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        other = await served.client.post("/predict", json=PREDICT, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def _log_provoking_requests(served: Served, marker: str) -> None:
    """200, 422 ×3, 400, 500 ×2, 429, 504 ×2, each request carrying `marker` in its text."""
    client, fake = served.client, served.fake
    assert (await client.post("/predict", json={"task": "sentiment", "text": f"good {marker}"})).status_code == 200
    bad = {"task": "sentiment", "text": f"{marker} " * 50}
    assert (await client.post("/predict", json=bad)).status_code == 422  # too long
    bad = {"task": "sentiment", "text": f"{marker}", "parameters": {"x": marker}}
    assert (await client.post("/predict", json=bad)).status_code == 422  # unknown parameter
    assert (await client.post("/predict", content=f'{{"task": "{marker}'.encode())).status_code == 400
    assert (await client.post("/predict", json={"task": marker, "text": marker})).status_code == 422
    assert (await client.post("/predict", json={"task": "sentiment", "text": f"FAIL {marker}"})).status_code == 500
    assert (await client.post("/predict", json={"task": "sentiment", "text": f"CRASH {marker}"})).status_code == 500
    fake.gate.clear()
    held = asyncio.create_task(client.post("/predict", json={"task": "sentiment", "text": f"slow {marker}"}))
    await wait_event(fake.started)
    queued = asyncio.create_task(client.post("/predict", json={"task": "sentiment", "text": f"q {marker}"}))
    await until(lambda: served.runtime.slots["sentiment"].batcher.queued_items == 1)  # type: ignore[union-attr]
    full = await client.post("/predict", json={"task": "sentiment", "text": f"full {marker}"})
    assert full.status_code == 429
    assert {(await held).status_code, (await queued).status_code} == {504}
    fake.gate.set()


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)  # fills exc_text with the formatted traceback
        self.records.append(record)


async def test_no_request_text_reaches_the_logs_at_info_level(tmp_path: Path) -> None:
    marker = "zebra-sapphire-9137"
    collect = Collect()
    # Litestar's startup reconfigures logging (pytest's caplog handler is dropped), so attach afterwards,
    # to the root and to the framework's own non-propagating logger.
    loggers = [logging.getLogger(), logging.getLogger("litestar")]
    async with serve(tmp_path, max_batch_size=1, max_queue=1, request_timeout_s=1.0, max_chars_per_text=200) as served:
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.addHandler(collect)
            logger.setLevel(logging.INFO)  # the service's default level
        try:
            await _log_provoking_requests(served, marker)
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.removeHandler(collect)
                logger.setLevel(level)
    assert len([r for r in collect.records if r.exc_text]) >= 2  # the 500s above logged their tracebacks
    leaked = [record.getMessage() for record in collect.records if marker in record.getMessage()
              or (record.exc_text and marker in record.exc_text)]
    assert leaked == []
