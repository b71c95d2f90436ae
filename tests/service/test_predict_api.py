"""POST /predict through the real app and a real tiny sentiment model (tests/factories.py, loaded by
models.registry). The reference for every answer is the same artifact loaded directly: the service must
hand the model the request's T and seed and return its prediction field by field, per item, in input order.
Asserted: response fields, ordering of list items, mc_samples defaults and cap, seeds, abstain passthrough,
the status codes and error bodies of the request-level limits, and the OpenAPI description."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.core.artifacts import read_manifest, resolve_artifact
from models.core.predictor import MCRequest, Predictor, PredictorOptions
from models.registry import TASKS, load_predictor
from service.adapters import ADAPTERS
from service.schemas import SentimentPredictionOut
from tests.factories import make_tiny_sentiment_artifact
from tests.service.conftest import parse_metrics, real_client, sample

pytestmark = pytest.mark.anyio

TEXT = "a quiet moving film with a wonderful cast"
# Distinct token counts, the last over the artifact's 64-token limit (truncated): each item is recognisable.
TEXTS = ["boring", "the plot was dull and the acting was terrible", "I loved every minute",
         "an average movie with some good moments and a few dull ones", " ".join(["wonderful cast"] * 60)]
DEFAULT_T = 8  # tests/factories.py's default_mc_samples for sentiment
# Every MC prediction abstains (its entropy is above 0), no deterministic one does: the flag is visible both ways.
ALWAYS_ABSTAIN = {"temperature": 1.0, "mc_samples": 8,
                  "abstain": {"measure": "predictive_entropy", "threshold": 0.0, "target_risk": 0.05}}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    make_tiny_sentiment_artifact(root, calibration=ALWAYS_ABSTAIN)
    return root


@pytest.fixture(scope="module")
def model(artifacts: Path) -> Predictor:
    """The served artifact loaded directly, with the options the service's default settings give."""
    return load_predictor(resolve_artifact(artifacts, "sentiment"), PredictorOptions(device="cpu", dtype="float32"))


@asynccontextmanager
async def app(artifacts: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with real_client(artifacts, ["sentiment"], **overrides) as client:
        yield client


def expected(model: Predictor, text: str, mc_samples: int, seed: int) -> dict[str, Any]:
    """The model's own prediction for `text` alone, as JSON."""
    (prediction,) = model.predict([model.prepare(text, {})], [MCRequest(mc_samples, seed)])
    return json.loads(json.dumps(dataclasses.asdict(prediction)))


def assert_same(served: Any, reference: Any, where: str = "prediction") -> None:
    """Equal structure and values; floats to 1e-4 (a batch pads differently from a single item)."""
    if isinstance(reference, dict):
        assert isinstance(served, dict) and set(served) == set(reference), (where, served, reference)
        for key in reference:
            assert_same(served[key], reference[key], f"{where}.{key}")
    elif isinstance(reference, list):
        assert isinstance(served, list) and len(served) == len(reference), where
        for index, (a, b) in enumerate(zip(served, reference, strict=True)):
            assert_same(a, b, f"{where}[{index}]")
    elif isinstance(reference, float):
        assert served == pytest.approx(reference, abs=1e-4), where
    else:
        assert served == reference, where


async def test_the_response_carries_the_model_the_request_and_the_models_prediction(
    artifacts: Path, model: Predictor
) -> None:
    async with app(artifacts) as client:
        response = await client.post("/predict", json={"task": "sentiment", "text": TEXT, "mc_samples": 20,
                                                        "seed": 7})
    assert response.status_code == 200  # not Litestar's POST default of 201
    body = response.json()
    assert set(body) == {"task", "model", "mc_samples", "seed", "predictions"}
    version = read_manifest(resolve_artifact(artifacts, "sentiment")).version
    assert body["task"] == "sentiment" and body["model"] == {"name": "sentiment", "version": version}
    assert body["mc_samples"] == 20 and body["seed"] == 7
    (prediction,) = body["predictions"]
    assert set(prediction) == set(SentimentPredictionOut.model_fields)
    assert prediction["uncertainty"] is not None
    assert_same(prediction, expected(model, TEXT, 20, 7))  # T and seed reached the model; every field came back


async def test_a_list_is_answered_item_by_item_in_input_order(artifacts: Path, model: Predictor) -> None:
    async with app(artifacts, max_batch_size=2) as client:
        response = await client.post("/predict", json={"task": "sentiment", "text": TEXTS, "mc_samples": 4,
                                                        "seed": 3})
        metrics = parse_metrics((await client.get("/metrics")).text)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["truncated"] for p in predictions] == [False, False, False, False, True]
    assert len({p["input_tokens"] for p in predictions}) == len(TEXTS)  # the check below tells items apart
    for text, prediction in zip(TEXTS, predictions, strict=True):
        assert_same(prediction, expected(model, text, 4, 3))  # every item uses the request's T and seed
    # The list was queued item by item: batches of at most 2 (grouped by length, not by position).
    assert sample(metrics, "nlp_batch_size_sum", task="sentiment") == len(TEXTS)
    assert sample(metrics, "nlp_batch_size_count", task="sentiment") == math.ceil(len(TEXTS) / 2)


async def test_mc_samples_0_is_deterministic_with_no_uncertainty(artifacts: Path, model: Predictor) -> None:
    async with app(artifacts) as client:
        bodies = [(await client.post("/predict", json={"task": "sentiment", "text": TEXT, "mc_samples": 0,
                                                       "seed": seed})).json() for seed in (1, 2)]
    for body in bodies:
        assert body["mc_samples"] == 0
        (prediction,) = body["predictions"]
        assert prediction["uncertainty"] is None and prediction["abstain"] is False
        assert_same(prediction, expected(model, TEXT, 0, 0))
    assert bodies[0]["predictions"] == bodies[1]["predictions"]  # the seed does not matter without dropout


async def test_abstain_is_the_models_flag_passed_through_and_counted(artifacts: Path) -> None:
    async with app(artifacts) as client:
        mc = (await client.post("/predict", json={"task": "sentiment", "text": TEXTS, "mc_samples": 4})).json()
        plain = (await client.post("/predict", json={"task": "sentiment", "text": TEXTS, "mc_samples": 0})).json()
        metrics = parse_metrics((await client.get("/metrics")).text)
    assert [p["abstain"] for p in mc["predictions"]] == [True] * len(TEXTS)  # the artifact's threshold is 0 nats
    assert [p["abstain"] for p in plain["predictions"]] == [False] * len(TEXTS)
    assert sample(metrics, "nlp_abstentions_total", task="sentiment") == len(TEXTS)


async def test_absent_mc_samples_is_the_model_default_then_the_setting_and_never_above_the_cap(
    artifacts: Path, model: Predictor
) -> None:
    request = {"task": "sentiment", "text": TEXT}
    for overrides, samples in (({}, DEFAULT_T), ({"mc_samples_default": 3}, 3), ({"mc_samples_cap": 5}, 5)):
        async with app(artifacts, **overrides) as client:
            body = (await client.post("/predict", json=request)).json()
        assert body["mc_samples"] == samples, overrides
        assert_same(body["predictions"][0], expected(model, TEXT, samples, body["seed"]))  # the model ran T
    async with app(artifacts, mc_samples_cap=5) as client:
        at_cap = await client.post("/predict", json={**request, "mc_samples": 5})
        above = await client.post("/predict", json={**request, "mc_samples": 6})
        metrics = parse_metrics((await client.get("/metrics")).text)
    assert at_cap.status_code == 200
    assert above.status_code == 422
    assert above.json() == {"error": "mc_samples 6 is above the cap of 5", "error_type": "mc_samples_above_cap"}
    assert sample(metrics, "nlp_batch_size_sum", task="sentiment") == 1  # the refused request never queued


async def test_the_same_seed_reproduces_and_another_seed_differs(artifacts: Path) -> None:
    request = {"task": "sentiment", "text": TEXT, "mc_samples": 16}
    async with app(artifacts) as client:
        first, again, other = [(await client.post("/predict", json={**request, "seed": seed})).json()
                               for seed in (11, 11, 12)]
    assert first["predictions"] == again["predictions"]
    assert first["predictions"][0]["uncertainty"] != other["predictions"][0]["uncertainty"]


async def test_a_drawn_seed_is_returned_and_reproduces_the_response(artifacts: Path) -> None:
    request = {"task": "sentiment", "text": TEXTS[:2], "mc_samples": 16}
    async with app(artifacts) as client:
        drawn = [(await client.post("/predict", json=request)).json() for _ in range(3)]
        seeds = [body["seed"] for body in drawn]
        replay = (await client.post("/predict", json={**request, "seed": seeds[0]})).json()
    assert all(isinstance(seed, int) and 0 <= seed < 2**31 for seed in seeds)
    assert len(set(seeds)) > 1  # drawn per request (3 equal draws from 2^31 would be a bug)
    assert replay["predictions"] == drawn[0]["predictions"]


async def test_an_item_the_model_refuses_is_422_naming_it_and_nothing_runs(artifacts: Path) -> None:
    async with app(artifacts) as client:
        single = await client.post("/predict", json={"task": "sentiment", "text": TEXT, "parameters": {"x": 1}})
        listed = await client.post("/predict", json={"task": "sentiment", "text": [TEXT, TEXT],
                                                      "parameters": {"x": 1}})
        metrics = parse_metrics((await client.get("/metrics")).text)
    assert single.status_code == listed.status_code == 422
    assert single.json()["error_type"] == listed.json()["error_type"] == "invalid_input"
    # The model's own message, prefixed with the item's position only for a list.
    assert single.json()["error"] == "sentiment takes no parameters, got ['x']"
    assert listed.json()["error"] == "text[0]: sentiment takes no parameters, got ['x']"
    assert sample(metrics, "nlp_batch_size_count", task="sentiment") == 0
    assert sample(metrics, "nlp_rejected_requests_total", task="sentiment", reason="invalid") == 2


def test_every_task_the_registry_loads_has_an_http_adapter() -> None:
    # The controllers look tasks up in ADAPTERS without a fallback: a task the registry can load but the
    # service cannot answer must fail here, not as a 500 at request time.
    assert set(ADAPTERS) == set(TASKS)
    assert [task for task in TASKS if ADAPTERS[task].streams] == ["generation"]


async def test_openapi_documents_the_request_and_response_fields_with_units(artifacts: Path) -> None:
    async with app(artifacts) as client:
        schema = (await client.get("/schema/openapi.json")).json()
    components = schema["components"]["schemas"]
    request = components["PredictRequest"]["properties"]
    assert set(request) == {"model", "task", "text", "mc_samples", "seed", "parameters"}
    assert all(field.get("description") for field in request.values())
    assert "count" in request["mc_samples"]["description"]
    response = components["PredictResponse"]["properties"]
    assert "reproduce" in response["seed"]["description"]
    uncertainty = components["ClassificationUncertainty"]["properties"]
    assert all("nats" in uncertainty[name]["description"] for name in
               ("predictive_entropy", "expected_entropy", "mutual_information"))
    operation = schema["paths"]["/predict"]["post"]
    assert {"200", "400", "413", "422", "429", "503", "504"} <= set(operation["responses"])
    stream = schema["paths"]["/predict/stream"]["post"]
    assert {"200", "422", "429", "503"} <= set(stream["responses"])
    assert "server-sent events" in stream["description"].lower()
