"""Hostile input against the real tiny models in-process: property-based (hypothesis) and explicit cases.
No input may get a 5xx; every rejection is a 4xx with the error body; limits are enforced before any
tokenising or queueing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from tests.reliability.apps import assert_answer_contract, real_app_client
from tests.service.conftest import sample, serve, until, wait_event

LIMITS = {"max_items_per_request": 16, "max_chars_per_text": 2_000, "max_payload_bytes": 65_536, "mc_samples_cap": 4}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])

# Scripts, marks and invisible characters a tokenizer can trip on.
SPECIMENS = [
    "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "你好，世界", "こんにちは世界", "안녕하세요 세계", "สวัสดีชาวโลก",
    "Здравствуй, мир", "Γειά σου Κόσμε", "ሰላም ልዑል", "ᚠᚢᚦᚨᚱᚲ", "𝕳𝖊𝖑𝖑𝖔", "👩‍👩‍👧‍👦🏳️‍🌈", "e\u0301\u0302\u0303" * 20,
    "\u200b\u200c\u200d\u2060\ufeff", "a\u200bb\u200cc", "\u202eevil\u202c", "\x00\x01\x07\x1b[31m\x7f",
    "line\r\nbreak\ttab\x0b\x0c", "\ud7ff\ue000\uffff", "\U0010ffff", "Z̴̡̛͙a̷͕͝l̸̰̈g̶͚͝o̴̦͌",
]
texts = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=300),
    st.sampled_from(SPECIMENS),
    st.lists(st.sampled_from(SPECIMENS), min_size=1, max_size=6).map(" ".join),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


@pytest.fixture(scope="module")
def client(two_task_artifacts: Path) -> Iterator[TestClient[Any]]:
    with real_app_client(two_task_artifacts, **LIMITS) as running:
        yield running


def post(client: TestClient[Any], body: bytes) -> tuple[int, Any]:
    response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    return response.status_code, response.json()


@FUZZ
@given(task=st.sampled_from(["sentiment", "translation"]), text=st.one_of(texts, st.lists(texts, max_size=20)))
def test_any_text_in_any_script_is_answered_or_refused_cleanly(client: TestClient[Any], task: str,
                                                                  text: str | list[str]) -> None:
    status, body = post(client, json.dumps({"task": task, "text": text, "mc_samples": 2}).encode())
    assert_answer_contract(status, body)
    assert status in (200, 422)
    if status == 200:
        assert len(body["predictions"]) == (1 if isinstance(text, str) else len(text))


@FUZZ
@given(body=st.dictionaries(st.sampled_from(["task", "text", "mc_samples", "seed", "parameters", "extra"]),
                            json_values, max_size=6))
def test_any_json_object_is_answered_or_refused_cleanly(client: TestClient[Any], body: dict[str, Any]) -> None:
    status, answer = post(client, json.dumps(body).encode())
    assert_answer_contract(status, answer)


@FUZZ
@given(raw=st.binary(max_size=2_000))
def test_any_bytes_are_answered_or_refused_cleanly(client: TestClient[Any], raw: bytes) -> None:
    status, answer = post(client, raw)
    assert_answer_contract(status, answer)
    assert status in (200, 400, 422)


DEEP = 100_000
HOSTILE: dict[str, tuple[bytes, int, str]] = {
    "text over the character limit": (json.dumps({"task": "sentiment", "text": "word " * 1_000}).encode(), 422,
                                      "limit_exceeded"),
    "body over the payload limit": (json.dumps({"task": "sentiment", "text": "x" * 70_000}).encode(), 413,
                                    "payload_too_large"),
    "huge list": (json.dumps({"task": "sentiment", "text": ["a"] * 10_000}).encode(), 422, "limit_exceeded"),
    "deeply nested array": (b'{"task": "sentiment", "text": ' + b"[" * DEEP + b"]" * DEEP + b"}", 413,
                            "payload_too_large"),
    "nested deeper than the decoder allows": (b'{"task": "sentiment", "text": ' + b"[" * 5_000 + b"]" * 5_000
                                              + b"}", 400, "malformed_json"),
    "deeply nested parameters": (b'{"task": "sentiment", "text": "a", "parameters": ' + b'{"a":' * 3_000 + b"1"
                                 + b"}" * 3_000 + b"}", 400, "malformed_json"),
    "invalid UTF-8": (b'{"task": "sentiment", "text": "\xff\xfe\xc3\x28"}', 400, "malformed_json"),
    "lone surrogate escape": (b'{"task": "sentiment", "text": "\\udc80 x"}', 400, "malformed_json"),
    "NaN": (b'{"task": "sentiment", "text": "a", "mc_samples": NaN}', 400, "malformed_json"),
    "integer of 5000 digits": (b'{"task": "sentiment", "text": "a", "seed": ' + b"9" * 5_000 + b"}", 400,
                               "malformed_json"),
    "empty body": (b"", 400, "malformed_json"),
    "JSON array body": (b"[1, 2]", 422, "validation_error"),
    "whitespace-only text": (json.dumps({"task": "sentiment", "text": " \t\n\u3000"}).encode(), 422,
                             "limit_exceeded"),
    "mc_samples above the cap": (json.dumps({"task": "sentiment", "text": "a", "mc_samples": 10**6}).encode(), 422,
                                 "mc_samples_above_cap"),
    "negative seed": (json.dumps({"task": "sentiment", "text": "a", "seed": -1}).encode(), 422, "validation_error"),
    "translation text over the token limit": (json.dumps({"task": "translation", "text": "Abraham " * 200}).encode(),
                                              422, "invalid_input"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bodies_get_the_right_4xx(client: TestClient[Any], case: str) -> None:
    body, expected_status, expected_type = HOSTILE[case]
    status, answer = post(client, body)
    assert_answer_contract(status, answer)
    assert (status, answer["error_type"]) == (expected_status, expected_type), answer


@pytest.mark.parametrize("text", ["a\x00b", "\u200b\u200b\u200b", "\U0001f600" * 500, "\u202e" + "x" * 1_999])
def test_odd_but_valid_texts_get_a_prediction(client: TestClient[Any], text: str) -> None:
    status, answer = post(client, json.dumps({"task": "sentiment", "text": text, "mc_samples": 2}).encode())
    assert status == 200, answer
    assert abs(sum(answer["predictions"][0]["probabilities"].values()) - 1) < 1e-5


# --- limits come before any tokenising or queueing ---------------------------------------------------------------
REFUSED_EARLY = {
    "too many items": ({"task": "sentiment", "text": ["good"] * 17}, 422),
    "text too long": ({"task": "sentiment", "text": "good " * 500}, 422),
    "empty item": ({"task": "sentiment", "text": ["good", "  "]}, 422),
    "mc_samples above the cap": ({"task": "sentiment", "text": "good", "mc_samples": 5}, 422),
    "unknown task": ({"task": "summarise", "text": "good"}, 422),
    "schema violation": ({"task": "sentiment", "text": "good", "seed": "seven"}, 422),
    "payload too large": ({"task": "sentiment", "text": "g" * 70_000}, 413),
}


@pytest.mark.anyio
async def test_limits_are_enforced_before_tokenising_or_queueing(tmp_path: Path) -> None:
    async with serve(tmp_path, max_queue=2, max_batch_size=1, **LIMITS) as served:
        client, fake = served.client, served.fake
        for case, (body, status) in REFUSED_EARLY.items():
            answer = await client.post("/predict", json=body)
            assert answer.status_code == status, (case, answer.json())
        assert fake.prepared == [] and fake.batches == []  # nothing was tokenised, nothing queued or run

        fake.gate.clear()  # fill the queue behind a held batch, then one more request must get 429 untouched
        running = asyncio.create_task(client.post("/predict", json={"task": "sentiment", "text": "good 0"}))
        await wait_event(fake.started)
        held = [running] + [
            asyncio.create_task(client.post("/predict", json={"task": "sentiment", "text": f"good {i}"}))
            for i in (1, 2)]
        await until(lambda: served.runtime.slots["sentiment"].batcher.queued_items == 2)  # type: ignore[union-attr]
        full = await client.post("/predict", json={"task": "sentiment", "text": "good overflow"})
        assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
        assert "good overflow" not in fake.prepared
        fake.gate.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]
        metrics = await served.metrics()
        assert sample(metrics, "nlp_batch_size_sum", task="sentiment") == 3
