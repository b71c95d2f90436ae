"""The service over the real tiny generation artifact: /predict, /predict/stream (SSE), limits, metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.factories import make_tiny_generation_artifact, make_tiny_sentiment_artifact
from tests.service.conftest import parse_metrics, real_client, sample

pytestmark = pytest.mark.anyio

PROMPT = "It is a truth universally"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    make_tiny_generation_artifact(root)
    make_tiny_sentiment_artifact(root)
    return root


@pytest.fixture
async def client(artifacts: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with real_client(artifacts, ["sentiment", "generation"]) as c:
        yield c


def _events(raw: str) -> list[tuple[str, dict]]:
    """(event, data) pairs of a server-sent-event body."""
    out = []
    for block in raw.replace("\r\n", "\n").strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


async def test_generation_with_uncertainty_tokens_and_seed(client: httpx.AsyncClient) -> None:
    request = {"task": "generation", "text": [PROMPT, "The evening"], "mc_samples": 3, "seed": 5,
               "parameters": {"max_new_tokens": 8, "temperature": 1.0, "return_tokens": True}}
    response = await client.post("/predict", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "generation" and body["seed"] == 5 and len(body["predictions"]) == 2
    for p in body["predictions"]:
        assert isinstance(p["text"], str) and p["finish_reason"] in {"eos", "stop", "length"}
        assert len(p["tokens"]) == p["output_tokens"] <= 8
        assert p["uncertainty"]["mc_log_prob_var"] >= 0 and p["uncertainty"]["sampling_chrf"] is None
    again = (await client.post("/predict", json=request)).json()
    assert [p["text"] for p in again["predictions"]] == [p["text"] for p in body["predictions"]]
    detail = (await client.get("/models/generation")).json()
    assert detail["predictor"]["memory"]["process_rss_bytes"] > 0 and detail["predictor"]["decoding"]["streaming"]


async def test_stream_pieces_join_into_the_final_text(client: httpx.AsyncClient) -> None:
    request = {"task": "generation", "text": PROMPT, "mc_samples": 2, "seed": 9,
               "parameters": {"max_new_tokens": 10, "temperature": 0.9}}
    async with client.stream("POST", "/predict/stream", json=request) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        raw = "".join([chunk async for chunk in response.aiter_text()])
    events = _events(raw)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) <= {"token"} and kinds.count("token") >= 1
    final = events[-1][1]["predictions"][0]
    assert "".join(data["text"] for kind, data in events if kind == "token") == final["text"]
    assert final["uncertainty"] is not None
    plain = (await client.post("/predict", json=request)).json()["predictions"][0]
    assert plain["text"] == final["text"]  # streaming changes nothing but the delivery
    metrics = parse_metrics((await client.get("/metrics")).text)
    # one stream + one /predict: each counted once (the stream's admission does not count it again)
    assert sample(metrics, "nlp_requests_total", task="generation", status="200") == 2
    assert sample(metrics, "nlp_time_to_first_token_seconds_count", task="generation") == 2
    assert sample(metrics, "nlp_generated_tokens_total", task="generation") == 2 * final["output_tokens"]


async def test_stream_refusals_are_http_errors(client: httpx.AsyncClient) -> None:
    cases = [
        ({"task": "sentiment", "text": "Fine."}, "not_streamable"),
        ({"task": "generation", "text": [PROMPT, PROMPT]}, None),
        ({"task": "generation", "text": PROMPT, "parameters": {"max_new_tokens": 10_000}}, None),
        ({"task": "generation", "text": PROMPT, "parameters": {"stop": 3}}, None),
        ({"task": "nonsense", "text": PROMPT}, None),
    ]
    for body, error_type in cases:
        response = await client.post("/predict/stream", json=body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()
        assert set(error) == {"error", "error_type"} and (error_type is None or error["error_type"] == error_type)
    bad = await client.post("/predict", json={"task": "generation", "text": PROMPT, "parameters": {"top_p": 2}})
    assert bad.status_code == 422 and "top_p" in bad.json()["error"]
