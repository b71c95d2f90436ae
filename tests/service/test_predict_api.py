"""POST /predict happy paths with the fake predictor: fields, ordering, seeds, defaults, OpenAPI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.service.conftest import serve
from tests.service.fakes import FakePredictor

pytestmark = pytest.mark.anyio


async def test_single_text_response_has_every_field(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        response = await s.client.post("/predict", json={"task": "sentiment", "text": "a good film", "mc_samples": 20,
                                                         "seed": 7})
    assert response.status_code == 200  # not Litestar's POST default of 201
    body = response.json()
    assert set(body) == {"task", "model", "mc_samples", "seed", "predictions"}
    assert body["task"] == "sentiment"
    assert body["model"] == {"name": "sentiment", "version": "fake-1"}
    assert body["mc_samples"] == 20 and body["seed"] == 7
    (prediction,) = body["predictions"]
    assert set(prediction) == {"label", "confidence", "probabilities", "uncertainty", "abstain", "input_tokens",
                               "truncated"}
    assert prediction["label"] == "positive"
    assert set(prediction["probabilities"]) == {"negative", "positive"}
    assert math.isclose(sum(prediction["probabilities"].values()), 1.0, rel_tol=1e-9)
    assert prediction["confidence"] == max(prediction["probabilities"].values())
    unc = prediction["uncertainty"]
    assert set(unc) == {"predictive_entropy", "expected_entropy", "mutual_information", "variation_ratio",
                        "probability_std"}
    assert 0 < unc["predictive_entropy"] <= math.log(2) + 1e-9
    assert math.isclose(unc["mutual_information"], unc["predictive_entropy"] - unc["expected_entropy"], abs_tol=1e-9)
    assert unc["mutual_information"] >= 0 and 0 <= unc["variation_ratio"] <= 1 and unc["probability_std"] > 0
    assert prediction["abstain"] is (unc["predictive_entropy"] > 0.6)
    assert prediction["input_tokens"] == 3 and prediction["truncated"] is False
    # The predictor saw exactly what the request asked for.
    assert s.fake.requests[-1][0].mc_samples == 20 and s.fake.requests[-1][0].seed == 7


async def test_deterministic_request_has_no_uncertainty_and_is_stable(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        bodies = [(await s.client.post("/predict", json={"task": "sentiment", "text": "bad and dull",
                                                        "mc_samples": 0})).json() for _ in range(2)]
    for body in bodies:
        assert body["mc_samples"] == 0
        (prediction,) = body["predictions"]
        assert prediction["uncertainty"] is None and prediction["abstain"] is False
        assert prediction["label"] == "negative"
    assert bodies[0]["predictions"] == bodies[1]["predictions"]


async def test_a_list_gets_one_prediction_per_item_in_order(tmp_path: Path) -> None:
    texts = ["good", "bad", "great great", "dull", "loved it", "terrible boring"]
    async with serve(tmp_path, max_batch_size=4) as s:
        response = await s.client.post("/predict", json={"task": "sentiment", "text": texts, "mc_samples": 5,
                                                         "seed": 1})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == ["positive", "negative", "positive", "negative", "positive",
                                                 "negative"]
    assert [p["input_tokens"] for p in predictions] == [1, 1, 2, 1, 2, 2]
    assert [len(b) for b in s.fake.batches] == [4, 2]  # the list was split item by item


async def test_same_seed_reproduces_and_another_seed_differs(tmp_path: Path) -> None:
    request = {"task": "sentiment", "text": "an ordinary film", "mc_samples": 16}
    async with serve(tmp_path) as s:
        first = (await s.client.post("/predict", json={**request, "seed": 11})).json()
        again = (await s.client.post("/predict", json={**request, "seed": 11})).json()
        other = (await s.client.post("/predict", json={**request, "seed": 12})).json()
    assert first["predictions"] == again["predictions"]
    assert first["predictions"][0]["uncertainty"] != other["predictions"][0]["uncertainty"]


async def test_a_drawn_seed_is_returned_and_reproduces_the_response(tmp_path: Path) -> None:
    request = {"task": "sentiment", "text": ["an ordinary film", "good"], "mc_samples": 16}
    async with serve(tmp_path) as s:
        drawn = [(await s.client.post("/predict", json=request)).json() for _ in range(3)]
        seeds = [body["seed"] for body in drawn]
        replay = (await s.client.post("/predict", json={**request, "seed": seeds[0]})).json()
    assert all(isinstance(seed, int) and 0 <= seed < 2**31 for seed in seeds)
    assert len(set(seeds)) > 1  # drawn per request (3 equal draws from 2^31 would be a bug)
    assert replay["predictions"] == drawn[0]["predictions"]


async def test_absent_mc_samples_uses_the_model_default_then_the_settings_default(tmp_path: Path) -> None:
    async with serve(tmp_path / "a", predictor=FakePredictor(default_mc_samples=12)) as s:
        body = (await s.client.post("/predict", json={"task": "sentiment", "text": "good"})).json()
    assert body["mc_samples"] == 12
    async with serve(tmp_path / "b", mc_samples_default=3) as s:
        body = (await s.client.post("/predict", json={"task": "sentiment", "text": "good"})).json()
    assert body["mc_samples"] == 3
    async with serve(tmp_path / "c", predictor=FakePredictor(default_mc_samples=50), mc_samples_cap=8) as s:
        body = (await s.client.post("/predict", json={"task": "sentiment", "text": "good"})).json()
    assert body["mc_samples"] == 8  # a default never exceeds the cap


async def test_openapi_documents_the_request_and_response_fields_with_units(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        schema = (await s.client.get("/schema/openapi.json")).json()
    components = schema["components"]["schemas"]
    request = components["PredictRequest"]["properties"]
    assert set(request) == {"task", "text", "mc_samples", "seed", "parameters"}
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
    assert {"200", "422", "429", "503"} <= set(stream["responses"]) and "server-sent events" in stream["description"].lower()
