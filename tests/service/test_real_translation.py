"""The service over the real tiny translation artifact (untrained tiny Marian), beside sentiment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.factories import make_tiny_sentiment_artifact, make_tiny_translation_artifact
from tests.service.conftest import parse_metrics, real_client, sample

pytestmark = pytest.mark.anyio

TEXTS = ["The king saw the bread.", "The woman ate the fish with the child.", "Love is patient."]
UNCERTAINTY = {"sequence_log_prob", "mc_log_prob_mean", "mc_log_prob_var", "sequence_log_prob_per_token",
               "mc_log_prob_mean_per_token", "mc_log_prob_var_per_token", "mean_token_entropy",
               "mean_token_mutual_information", "max_token_mutual_information", "sampling_chrf"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    make_tiny_translation_artifact(root)
    make_tiny_sentiment_artifact(root)
    return root


@pytest.fixture
async def client(artifacts: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with real_client(artifacts, ["sentiment", "translation"]) as c:
        yield c


async def test_both_models_ready_and_described(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/ready")).status_code == 200
    detail = (await client.get("/models/translation")).json()
    assert detail["state"] == "ready" and detail["predictor"]["truncation"] == {"policy": "refuse"}
    assert detail["predictor"]["decoding"]["max_new_tokens_cap"] == 24


async def test_translations_with_every_uncertainty_field_tokens_and_seed(client: httpx.AsyncClient) -> None:
    request = {"task": "translation", "text": TEXTS, "mc_samples": 4, "seed": 3,
               "parameters": {"return_tokens": True, "max_new_tokens": 10}}
    response = await client.post("/predict", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "translation" and body["mc_samples"] == 4 and body["seed"] == 3
    assert len(body["predictions"]) == len(TEXTS)
    for p in body["predictions"]:
        assert isinstance(p["translation"], str) and p["finish_reason"] in {"eos", "length"}
        assert set(p["uncertainty"]) == UNCERTAINTY and p["uncertainty"]["sampling_chrf"] is None
        assert p["uncertainty"]["mc_log_prob_var"] >= 0 and p["uncertainty"]["max_token_mutual_information"] >= 0
        assert len(p["tokens"]) == p["output_tokens"] <= 10
        assert all(set(t) == {"token", "probability", "entropy", "mutual_information", "top_logprobs"}
                   and t["top_logprobs"] is None for t in p["tokens"])  # alternatives are a generation parameter
        assert all(0 <= t["probability"] <= 1 and t["mutual_information"] >= 0 for t in p["tokens"])
    again = (await client.post("/predict", json=request)).json()
    other = (await client.post("/predict", json={**request, "seed": 4})).json()
    for a, b in zip(again["predictions"], body["predictions"], strict=True):
        assert a["translation"] == b["translation"]
        assert a["uncertainty"]["mc_log_prob_mean"] == pytest.approx(b["uncertainty"]["mc_log_prob_mean"], abs=1e-5)
    assert [p["uncertainty"] for p in other["predictions"]] != [p["uncertainty"] for p in body["predictions"]]


async def test_deterministic_and_sampling_modes(client: httpx.AsyncClient) -> None:
    plain = (await client.post("/predict", json={"task": "translation", "text": TEXTS[0], "mc_samples": 0})).json()
    p = plain["predictions"][0]
    assert p["uncertainty"] is None and p["tokens"] is None and p["abstain"] is False
    assert "output_ids" not in p  # the evaluations' token ids stay out of the API
    # One sample cannot disagree with itself: T = 1 is served as T = 0, never as "perfect agreement".
    one = (await client.post("/predict", json={"task": "translation", "text": TEXTS[0], "mc_samples": 1})).json()
    assert one["mc_samples"] == 1 and one["predictions"][0]["uncertainty"] is None
    assert one["predictions"][0]["abstain"] is False and one["predictions"][0]["translation"] == p["translation"]
    sampled = (await client.post("/predict", json={"task": "translation", "text": TEXTS[0], "mc_samples": 3,
                                                   "parameters": {"uncertainty_mode": "sampling",
                                                                  "max_new_tokens": 5}})).json()
    assert 0 <= sampled["predictions"][0]["uncertainty"]["sampling_chrf"] <= 1


async def test_limits_answer_422(client: httpx.AsyncClient) -> None:
    cases = [
        ("the king saw the bread " * 30, {}),  # over max_input_tokens (48): refused, not truncated
        (TEXTS[0], {"max_new_tokens": 25}),  # above the cap of 24
        (TEXTS[0], {"top_k": 5}),  # unknown parameter
        (TEXTS[0], {"num_beams": 0}),
        (TEXTS[0], {"uncertainty_mode": "dreaming"}),
    ]
    for text, parameters in cases:
        response = await client.post("/predict", json={"task": "translation", "text": text, "parameters": parameters})
        assert response.status_code == 422, (parameters, response.text)
        assert set(response.json()) == {"error", "error_type"}


async def test_mixed_tasks_concurrently_and_metrics(client: httpx.AsyncClient) -> None:
    before = parse_metrics((await client.get("/metrics")).text)
    jobs = []
    for i in range(6):
        jobs.append(client.post("/predict", json={"task": "translation", "text": f"{TEXTS[i % 3]} {i}",
                                                  "mc_samples": 2, "parameters": {"max_new_tokens": 6}}))
        jobs.append(client.post("/predict", json={"task": "sentiment", "text": f"a fine film {i}", "mc_samples": 2}))
    responses = await asyncio.gather(*jobs)
    assert [r.status_code for r in responses] == [200] * 12
    assert all("translation" in r.json()["predictions"][0] for r in responses[::2])
    assert all("label" in r.json()["predictions"][0] for r in responses[1::2])
    after = parse_metrics((await client.get("/metrics")).text)
    delta = lambda name: sample(after, name, task="translation") - sample(before, name, task="translation")  # noqa: E731
    assert delta("nlp_prediction_entropy_count") == 6 and delta("nlp_prediction_mutual_information_count") == 6
    generated = sum(r.json()["predictions"][0]["output_tokens"] for r in responses[::2])
    assert delta("nlp_generated_tokens_total") == generated > 0
