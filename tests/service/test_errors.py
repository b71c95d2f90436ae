"""Every error status of docs/architecture.md §5, each with the one error body and no internals in it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import make_tiny_sentiment_artifact
from tests.service.conftest import parse_metrics, real_client, sample, serve, until, wait_event
from tests.service.fakes import FakeLoader

pytestmark = pytest.mark.anyio

GOOD = {"task": "sentiment", "text": "good"}


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    assert body["error"] and "Traceback" not in body["error"] and "secret" not in body["error"]
    return body


async def test_malformed_or_missing_json_is_400(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        bad = await s.client.post("/predict", content=b'{"task": "sentiment", "text": ',
                                  headers={"content-type": "application/json"})
        empty = await s.client.post("/predict", content=b"", headers={"content-type": "application/json"})
        assert_error(bad, 400, "malformed_json")
        assert_error(empty, 400, "malformed_json")
        assert s.fake.prepared == []


async def test_payload_over_the_limit_is_413_with_or_without_content_length(tmp_path: Path) -> None:
    big = {"task": "sentiment", "text": "good " * 400}

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 100  # JSON whitespace: only the size can be wrong

    async with serve(tmp_path, max_payload_bytes=500) as s:
        assert_error(await s.client.post("/predict", json=big), 413, "payload_too_large")
        chunked = await s.client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in chunked.request.headers
        assert_error(chunked, 413, "payload_too_large")
        assert (await s.client.post("/predict", json=GOOD)).status_code == 200


REFUSED_422: list[tuple[Any, str, str]] = [
    ({"task": "sentiment", "text": ""}, "limit_exceeded", "empty"),
    ({"task": "sentiment", "text": "   "}, "limit_exceeded", "empty"),
    ({"task": "sentiment", "text": []}, "limit_exceeded", "empty list"),
    ({"task": "sentiment", "text": ["good", ""]}, "limit_exceeded", "text[1]"),
    ({"task": "sentiment", "text": ["a"] * 4}, "limit_exceeded", "limit of 3"),
    ({"task": "sentiment", "text": "x" * 41}, "limit_exceeded", "characters"),
    ({"task": "nonsense", "text": "good"}, "unknown_task", "nonsense"),
    ({"task": "sentiment", "text": "good", "mc_samples": 65}, "mc_samples_above_cap", "cap of 64"),
    ({"task": "sentiment", "text": "good", "mc_samples": -1}, "validation_error", "mc_samples"),
    ({"task": "sentiment", "text": "good", "seed": -5}, "validation_error", "seed"),
    ({"task": "sentiment", "text": 3}, "validation_error", "text"),
    ({"text": "good"}, "validation_error", "task"),
    ({"task": "sentiment", "text": "good", "mc_sample": 3}, "validation_error", "mc_sample"),
    (["not", "an", "object"], "validation_error", ""),
    # the model's own refusal, passed through (for a list, prefixed with the item's position)
    ({"task": "sentiment", "text": "good", "parameters": {"max_new_tokens": 5}}, "invalid_input", "parameters"),
    ({"task": "sentiment", "text": ["good", "fine"], "parameters": {"x": 1}}, "invalid_input",
     "text[0]: sentiment takes no parameters"),
]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    make_tiny_sentiment_artifact(root)
    return root


async def test_requests_that_parse_but_break_a_limit_are_422_and_nothing_runs(artifacts: Path) -> None:
    async with real_client(artifacts, ["sentiment"], max_items_per_request=3, max_chars_per_text=40) as client:
        for payload, error_type, fragment in REFUSED_422:
            response = await client.post("/predict", json=payload)
            assert fragment in assert_error(response, 422, error_type)["error"], (payload, response.text)
        metrics = parse_metrics((await client.get("/metrics")).text)
    assert sample(metrics, "nlp_batch_size_count", task="sentiment") == 0  # nothing reached the model
    # Refused by the handler (not by the schema, before it): counted, under the task's label.
    handled = [case for case in REFUSED_422 if case[1] not in {"validation_error", "unknown_task"}]
    assert sample(metrics, "nlp_requests_total", task="sentiment", status="422") == len(handled)
    assert sample(metrics, "nlp_requests_total", task="unknown", status="422") == 1


async def test_a_full_queue_is_429_with_retry_after_and_skips_tokenising(tmp_path: Path) -> None:
    async with serve(tmp_path, max_queue=2, max_batch_size=1) as s:
        s.fake.gate.clear()
        running = asyncio.create_task(s.client.post("/predict", json={**GOOD, "text": "running"}))
        await wait_event(s.fake.started)
        queued = [asyncio.create_task(s.client.post("/predict", json={**GOOD, "text": f"queued {i}"}))
                  for i in range(2)]
        await until(lambda: s.runtime.slots["sentiment"].batcher.queued_items == 2)
        refused = await s.client.post("/predict", json={**GOOD, "text": "one too many"})
        assert_error(refused, 429, "queue_full")
        assert int(refused.headers["retry-after"]) >= 1
        assert "one too many" not in s.fake.prepared  # refused before tokenising
        s.fake.gate.set()
        assert [r.status_code for r in await asyncio.gather(running, *queued)] == [200, 200, 200]
        assert (await s.client.post("/predict", json=GOOD)).status_code == 200  # room again
        assert sample(await s.metrics(), "nlp_rejected_requests_total", task="sentiment", reason="queue_full") == 1


async def test_before_the_model_is_loaded_predict_is_503(tmp_path: Path) -> None:
    loader = FakeLoader()
    loader.release.clear()
    async with serve(tmp_path, loader=loader, wait_loaded=False) as s:
        assert_error(await s.client.post("/predict", json=GOOD), 503, "model_not_loaded")
        loader.release.set()
        await s.runtime.wait_loaded()
        assert (await s.client.post("/predict", json=GOOD)).status_code == 200


async def test_a_model_that_failed_to_load_is_503_with_the_reason(tmp_path: Path) -> None:
    async with serve(tmp_path, loader=FakeLoader(error=RuntimeError("checksum mismatch for model.safetensors"))) as s:
        body = assert_error(await s.client.post("/predict", json=GOOD), 503, "model_not_loaded")
        assert "checksum mismatch" in body["error"]


async def test_a_known_task_that_is_not_served_is_503(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        assert_error(await s.client.post("/predict", json={**GOOD, "task": "translation"}), 503, "model_not_loaded")


async def test_while_draining_predict_is_503(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        assert await s.runtime.drain(timeout=1)
        assert_error(await s.client.post("/predict", json=GOOD), 503, "draining")


async def test_past_the_request_timeout_is_504_and_queued_items_are_dropped(tmp_path: Path) -> None:
    async with serve(tmp_path, request_timeout_s=1.0, max_batch_size=1) as s:
        s.fake.gate.clear()
        running = asyncio.create_task(s.client.post("/predict", json={**GOOD, "text": "stuck in the model"}))
        await wait_event(s.fake.started)
        queued = asyncio.create_task(s.client.post("/predict", json={**GOOD, "text": "stuck in the queue"}))
        await until(lambda: s.runtime.slots["sentiment"].batcher.queued_items == 1)
        assert_error(await running, 504, "timeout")
        assert_error(await queued, 504, "timeout")
        s.fake.gate.set()
        assert (await s.client.post("/predict", json={**GOOD, "text": "afterwards"})).status_code == 200
        ran = [t for batch in s.fake.batches for t in batch]
        assert ran == ["stuck in the model", "afterwards"]  # the timed-out queued item never ran
        metrics = await s.metrics()
        assert sample(metrics, "nlp_requests_total", task="sentiment", status="504") == 2
        assert sample(metrics, "nlp_rejected_requests_total", task="sentiment", reason="timeout") == 2


async def test_api_key_guards_predict_and_models_but_not_probes(tmp_path: Path) -> None:
    async with serve(tmp_path, api_key="s3cret-key") as s:
        missing = await s.client.post("/predict", json=GOOD)
        assert_error(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert_error(await s.client.post("/predict", json=GOOD, headers={"authorization": "Bearer wrong"}),
                     401, "unauthorized")
        assert_error(await s.client.post("/predict", json=GOOD, headers={"x-api-key": "s3cret-ke"}),
                     401, "unauthorized")
        assert_error(await s.client.get("/models"), 401, "unauthorized")
        assert (await s.client.post("/predict", json=GOOD, headers={"authorization": "Bearer s3cret-key"})
                ).status_code == 200
        assert (await s.client.post("/predict", json=GOOD, headers={"x-api-key": "s3cret-key"})).status_code == 200
        assert (await s.client.get("/models", headers={"x-api-key": "s3cret-key"})).status_code == 200
        assert (await s.client.get("/health/ready")).status_code == 200
        assert (await s.client.get("/metrics")).status_code == 200
        assert s.fake.prepared == ["good", "good"]  # unauthorised requests were never tokenised


async def test_a_failing_batch_is_500_without_internals_and_the_server_stays_healthy(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        assert_error(await s.client.post("/predict", json={**GOOD, "text": "FAIL please"}), 500, "inference_error")
        assert (await s.client.post("/predict", json=GOOD)).status_code == 200
        assert (await s.client.get("/health/ready")).status_code == 200
        assert sample(await s.metrics(), "nlp_requests_total", task="sentiment", status="500") == 1


async def test_an_unexpected_bug_is_500_without_a_traceback(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        assert_error(await s.client.post("/predict", json={**GOOD, "text": "CRASH"}), 500, "internal_error")
        assert (await s.client.post("/predict", json=GOOD)).status_code == 200


async def test_unknown_routes_and_methods_use_the_error_body(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        assert_error(await s.client.get("/nope"), 404, "not_found")
        assert_error(await s.client.get("/predict"), 405, "method_not_allowed")
        assert_error(await s.client.get("/models/nope"), 404, "not_found")


async def test_a_client_that_disconnects_has_its_queued_items_dropped(tmp_path: Path) -> None:
    async with serve(tmp_path, max_batch_size=1) as s:
        s.fake.gate.clear()
        running = asyncio.create_task(s.client.post("/predict", json={**GOOD, "text": "holding the model"}))
        await wait_event(s.fake.started)

        # Drive the ASGI app directly so the client can "hang up" after its request is queued.
        hang_up = asyncio.Event()
        body = b'{"task": "sentiment", "text": "nobody is listening"}'
        messages = iter([{"type": "http.request", "body": body, "more_body": False}])
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            message = next(messages, None)
            if message is not None:
                return message
            await hang_up.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/predict", "raw_path": b"/predict", "root_path": "", "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
        call = asyncio.create_task(s.app(scope, receive, send))
        await until(lambda: s.runtime.slots["sentiment"].batcher.queued_items == 1)
        hang_up.set()
        await call
        s.fake.gate.set()
        assert (await running).status_code == 200
        assert (await s.client.post("/predict", json={**GOOD, "text": "next"})).status_code == 200
        ran = [t for batch in s.fake.batches for t in batch]
        assert ran == ["holding the model", "next"]
        assert sample(await s.metrics(), "nlp_rejected_requests_total", task="sentiment", reason="disconnected") == 1
