"""The service over the real tiny sentiment artifact (random tiny BERT): loading, MC, seeds, batching."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.factories import make_tiny_sentiment_artifact
from tests.service.conftest import parse_metrics, sample

pytestmark = pytest.mark.anyio

TEXTS = ["a quiet moving film with a wonderful cast", "the plot was dull and the acting was terrible",
         "I loved every minute", "boring"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    make_tiny_sentiment_artifact(root)
    return root


@pytest.fixture
async def client(artifacts: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    settings = Settings(artifacts_dir=artifacts, device="cpu", dtype="float32", max_wait_ms=20, max_batch_size=16)
    runtime = Runtime(settings)  # the real models.registry loader
    app = create_app(settings, runtime)
    async with app.lifespan():
        await runtime.wait_loaded()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
            yield c, runtime


async def test_ready_and_described(client: tuple[httpx.AsyncClient, Runtime]) -> None:
    c, runtime = client
    assert (await c.get("/health/ready")).status_code == 200
    detail = (await c.get("/models/sentiment")).json()
    assert detail["state"] == "ready" and detail["dtype"] == "float32" and detail["device"] == "cpu"
    assert detail["predictor"]["labels"] == ["negative", "positive"]
    assert detail["manifest"]["default_mc_samples"] == detail["mc"]["default_samples"]


async def test_mc_prediction_fields_order_and_seed(client: tuple[httpx.AsyncClient, Runtime]) -> None:
    c, _ = client
    request = {"task": "sentiment", "text": TEXTS, "mc_samples": 12, "seed": 5}
    first = await c.post("/predict", json=request)
    assert first.status_code == 200
    body = first.json()
    assert body["mc_samples"] == 12 and body["seed"] == 5 and len(body["predictions"]) == len(TEXTS)
    for prediction in body["predictions"]:
        assert prediction["label"] in {"negative", "positive"}
        assert math.isclose(sum(prediction["probabilities"].values()), 1.0, abs_tol=1e-5)
        assert prediction["uncertainty"]["predictive_entropy"] <= math.log(2) + 1e-6
        assert prediction["uncertainty"]["mutual_information"] >= 0
    # Ordering: each item alone gives the prediction it got inside the list.
    for text, prediction in zip(TEXTS, body["predictions"], strict=True):
        alone = (await c.post("/predict", json={**request, "text": text})).json()["predictions"][0]
        assert alone["input_tokens"] == prediction["input_tokens"]
        assert alone["probabilities"]["positive"] == pytest.approx(prediction["probabilities"]["positive"], abs=1e-4)
    again = (await c.post("/predict", json=request)).json()
    other = (await c.post("/predict", json={**request, "seed": 6})).json()
    assert [p["probabilities"]["positive"] for p in again["predictions"]] == pytest.approx(
        [p["probabilities"]["positive"] for p in body["predictions"]], abs=1e-6)
    assert [p["uncertainty"] for p in other["predictions"]] != [p["uncertainty"] for p in body["predictions"]]


async def test_deterministic_is_repeatable_and_has_no_uncertainty(client: tuple[httpx.AsyncClient, Runtime]) -> None:
    c, _ = client
    request = {"task": "sentiment", "text": TEXTS[0], "mc_samples": 0}
    one, two = [(await c.post("/predict", json=request)).json()["predictions"][0] for _ in range(2)]
    assert one["uncertainty"] is None and one["abstain"] is False
    assert one == two


async def test_concurrent_load_is_batched_and_moves_the_uncertainty_histograms(
    client: tuple[httpx.AsyncClient, Runtime]
) -> None:
    c, _ = client
    before = parse_metrics((await c.get("/metrics")).text)
    responses = await asyncio.gather(*(
        c.post("/predict", json={"task": "sentiment", "text": f"{TEXTS[i % 4]} {i}", "mc_samples": 4})
        for i in range(24)
    ))
    after = parse_metrics((await c.get("/metrics")).text)
    assert [r.status_code for r in responses] == [200] * 24
    batches = sample(after, "nlp_batch_size_count", task="sentiment") - sample(before, "nlp_batch_size_count",
                                                                                 task="sentiment")
    items = sample(after, "nlp_batch_size_sum", task="sentiment") - sample(before, "nlp_batch_size_sum",
                                                                             task="sentiment")
    assert items == 24 and batches < 24  # at least one batch held more than one request
    moved = sample(after, "nlp_prediction_entropy_count", task="sentiment") - sample(
        before, "nlp_prediction_entropy_count", task="sentiment")
    assert moved == 24
