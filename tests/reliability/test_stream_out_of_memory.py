"""Out of memory after a generation batch has streamed text: POST /predict/stream over the real tiny
generation model. The batch is split and retried (service/oom.py); a streaming client never receives text
twice, and a retry that decodes another text ends the stream with an `error` event, never with a `done`
that contradicts the pieces already sent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from models.core.predictor import MCRequest, PredictorOptions, PreparedItem
from models.registry import load_predictor
from tests.delegating import DelegatingPredictor
from tests.service.conftest import parse_metrics, real_client, sample

pytestmark = pytest.mark.anyio
PARAMETERS = {"max_new_tokens": 10, "temperature": 1.0, "top_p": 1.0}
STREAMED = {"task": "generation", "text": "It is a truth universally", "mc_samples": 2, "seed": 9,
            "parameters": PARAMETERS}
NEIGHBOUR = {"task": "generation", "text": "The evening passed quietly", "mc_samples": 2, "seed": 4,
             "parameters": PARAMETERS}


class OutOfMemoryAfterDecoding(DelegatingPredictor):
    """The real generation predictor, out of memory on any batch of more than one item once it has decoded
    (and streamed) every item, as the MC scoring pass that follows the decode might. `reseed`: retries
    decode with other seeds, so they produce other texts. `attempts` records (prompt, text) per call."""

    task = "generation"

    def __init__(self, inner: Any, *, reseed: bool) -> None:
        super().__init__(inner)
        self.reseed = reseed
        self.attempts: list[dict[str, str]] = []

    def predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[Any]:
        if self.reseed and self.attempts:
            requests = [dataclasses.replace(request, seed=request.seed + 1) for request in requests]
        predictions = self.inner.predict(items, requests)
        self.attempts.append({item.text: p.text for item, p in zip(items, predictions, strict=True)})
        if len(items) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return predictions


def loader_of(reseed: bool) -> tuple[list[OutOfMemoryAfterDecoding], Any]:
    made: list[OutOfMemoryAfterDecoding] = []

    def load(artifact_dir: Path, options: PredictorOptions) -> OutOfMemoryAfterDecoding:
        made.append(OutOfMemoryAfterDecoding(load_predictor(artifact_dir, options), reseed=reseed))
        return made[-1]

    return made, load


async def stream(client: httpx.AsyncClient, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of one /predict/stream answer."""
    async with client.stream("POST", "/predict/stream", json=body) as response:
        assert response.status_code == 200
        raw = "".join([chunk async for chunk in response.aiter_text()])
    events = []
    for block in raw.replace("\r\n", "\n").strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def streamed_text(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(data["text"] for kind, data in events if kind == "token")


# Both requests queue before the batch starts: the first waits (up to 10 s) until a second fills the batch.
SETTINGS = {"max_batch_size": 2, "max_wait_ms": 10_000}


async def test_a_retried_stream_sends_each_piece_once_and_its_done_text_matches(all_task_artifacts: Path) -> None:
    made, load = loader_of(reseed=False)
    async with real_client(all_task_artifacts, ["generation"], loader=load, **SETTINGS) as client:
        first, second = await asyncio.gather(stream(client, STREAMED), stream(client, {**NEIGHBOUR, "seed": 9}))
        metrics = parse_metrics((await client.get("/metrics")).text)
    (predictor,) = made
    assert [len(attempt) for attempt in predictor.attempts] == [2, 1, 1]  # streamed, out of memory, retried alone
    for events, body in ((first, STREAMED), (second, NEIGHBOUR)):
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "done" and set(kinds[:-1]) == {"token"}, kinds
        text = events[-1][1]["predictions"][0]["text"]
        assert text and streamed_text(events) == text  # not the text twice
        assert predictor.attempts[0][body["text"]] == text  # the client had it all before the batch failed
    assert sample(metrics, "nlp_requests_total", task="generation", status="200") == 2


async def test_a_retry_that_decodes_another_text_ends_the_stream_with_an_error(all_task_artifacts: Path) -> None:
    made, load = loader_of(reseed=True)
    async with real_client(all_task_artifacts, ["generation"], loader=load, **SETTINGS) as client:
        events, plain = await asyncio.gather(stream(client, STREAMED), client.post("/predict", json=NEIGHBOUR))
        metrics = parse_metrics((await client.get("/metrics")).text)
    (predictor,) = made
    sent, retried = (attempt[STREAMED["text"]] for attempt in predictor.attempts if STREAMED["text"] in attempt)
    assert sent and not retried.startswith(sent), "precondition: the reseeded retry must decode another text"
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "error" and set(kinds[:-1]) == {"token"}, kinds
    assert events[-1][1]["error_type"] == "out_of_memory" and "send the request again" in events[-1][1]["error"]
    assert streamed_text(events) == sent  # the first attempt's text, once; nothing of the other text
    # A plain /predict in the same batch never showed its text to anyone: the retry's answer stands.
    assert plain.status_code == 200
    assert plain.json()["predictions"][0]["text"] == next(
        attempt[NEIGHBOUR["text"]] for attempt in predictor.attempts[1:] if NEIGHBOUR["text"] in attempt)
    assert sample(metrics, "nlp_requests_total", task="generation", status="503") == 1
    assert sample(metrics, "nlp_requests_total", task="generation", status="200") == 1


async def test_an_openai_stream_whose_retry_decodes_another_text_ends_with_an_error(all_task_artifacts: Path) -> None:
    made, load = loader_of(reseed=True)
    body = {"model": "generation", "prompt": STREAMED["text"], "max_tokens": 10, "temperature": 1.0, "top_p": 1.0,
            "seed": STREAMED["seed"], "stream": True, "mc_samples": 2}
    async with real_client(all_task_artifacts, ["generation"], loader=load, **SETTINGS) as client:

        async def openai_stream() -> list[dict[str, Any]]:
            async with client.stream("POST", "/v1/completions", json=body) as response:
                assert response.status_code == 200
                raw = "".join([chunk async for chunk in response.aiter_text()])
            lines = [line.removeprefix("data: ") for line in raw.replace("\r\n", "\n").split("\n")
                     if line.startswith("data: ")]
            return [json.loads(line) for line in lines if line != "[DONE]"]

        chunks, plain = await asyncio.gather(openai_stream(), client.post("/predict", json=NEIGHBOUR))
    (predictor,) = made
    sent = next(attempt[STREAMED["text"]] for attempt in predictor.attempts if STREAMED["text"] in attempt)
    pieces = "".join(c["choices"][0].get("text", "") for c in chunks if "choices" in c)
    assert pieces == sent  # each character once, and nothing of the retry's other text
    assert chunks[-1]["error"]["code"] == "out_of_memory" and "send the request again" in chunks[-1]["error"]["message"]
    assert not any(c["choices"][0].get("finish_reason") for c in chunks if "choices" in c)  # no closing chunk
    assert plain.status_code == 200
