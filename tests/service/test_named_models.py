"""Named models (issue 14): `"model": NAME` and `"task"` routing, GET /models, the `model` metric label, models
being trained, and a real 3-label classifier served under its own name with its own labels."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest

from service import reloading
from tests.factories import make_tiny_sentiment_artifact
from tests.service.conftest import make_fake_artifact, parse_metrics, real_client, sample, serve
from tests.service.fakes import FakePredictor

pytestmark = pytest.mark.anyio


class NamedLoader:
    """A fresh FakePredictor per artifact, named after its directory (the real loader reads it from the manifest)."""

    predictor = None

    def __call__(self, artifact: Path, options: object) -> FakePredictor:
        predictor = FakePredictor(version=artifact.name)
        predictor.name = artifact.parent.name
        return predictor


async def test_model_selects_by_name_and_task_picks_the_default(tmp_path: Path) -> None:
    make_fake_artifact(tmp_path)
    make_fake_artifact(tmp_path, name="support-tickets", version="20250102T000000Z-bbbbbb")
    async with serve(tmp_path, loader=NamedLoader(), with_artifact=False) as s:
        by_name = await s.client.post("/predict", json={"model": "support-tickets", "text": "refund please"})
        by_task = await s.client.post("/predict", json={"task": "sentiment", "text": "good"})
        alias = await s.client.post("/predict", json={"task": "classification", "text": "good"})
        both = await s.client.post("/predict", json={"model": "support-tickets", "task": "sentiment", "text": "ok"})
        mismatch = await s.client.post("/predict", json={"model": "support-tickets", "task": "translation",
                                                         "text": "ok"})
        unknown = await s.client.post("/predict", json={"model": "no-such-model", "text": "ok"})
        neither = await s.client.post("/predict", json={"text": "ok"})
        listing = (await s.client.get("/models")).json()["models"]
        detail = (await s.client.get("/models/support-tickets")).json()
        raw = (await s.client.get("/metrics")).text
    assert by_name.status_code == 200
    assert by_name.json()["model"] == {"name": "support-tickets", "version": "20250102T000000Z-bbbbbb"}
    assert by_name.json()["task"] == "sentiment"
    assert by_task.json()["model"]["name"] == "sentiment" and alias.json()["model"]["name"] == "sentiment"
    assert both.status_code == 200 and both.json()["model"]["name"] == "support-tickets"
    assert mismatch.status_code == 422 and mismatch.json()["error_type"] == "model_task_mismatch"
    assert mismatch.json()["error"] == ("model 'support-tickets' is a sentiment model, not translation; drop `task` "
                                        "or pick a translation model (see GET /models)")
    assert unknown.status_code == 422 and unknown.json() == {
        "error": "no model named 'no-such-model'; served models: sentiment, support-tickets (see GET /models)",
        "error_type": "unknown_model"}
    assert neither.status_code == 422 and "name a model" in neither.json()["error"]
    assert [(m["name"], m["task"], m["state"]) for m in listing] == [("sentiment", "sentiment", "ready"),
                                                                    ("support-tickets", "sentiment", "ready")]
    assert detail["name"] == "support-tickets" and detail["version"] == "20250102T000000Z-bbbbbb"
    metrics = parse_metrics(raw)
    assert sample(metrics, "nlp_requests_total", task="sentiment", model="support-tickets", status="200") == 2
    assert sample(metrics, "nlp_requests_total", task="sentiment", model="sentiment", status="200") == 2
    assert sample(metrics, "nlp_requests_total", task="unknown", model="unknown", status="422") == 1
    assert sample(metrics, "nlp_model_loaded", task="sentiment", model="support-tickets") == 1
    assert "no-such-model" not in raw  # label values come from the artifacts directory, never from requests


async def test_a_task_with_one_model_of_another_name_uses_it_and_two_are_ambiguous(tmp_path: Path) -> None:
    make_fake_artifact(tmp_path, name="tickets")
    async with serve(tmp_path, loader=NamedLoader(), with_artifact=False) as s:
        only = await s.client.post("/predict", json={"task": "sentiment", "text": "ok"})
    make_fake_artifact(tmp_path, name="reviews")
    async with serve(tmp_path, loader=NamedLoader(), with_artifact=False) as s:
        several = await s.client.post("/predict", json={"task": "sentiment", "text": "ok"})
        chosen = await s.client.post("/predict", json={"model": "reviews", "text": "ok"})
    assert only.status_code == 200 and only.json()["model"]["name"] == "tickets"
    assert several.status_code == 422 and several.json()["error_type"] == "ambiguous_task"
    assert "reviews, tickets" in several.json()["error"]
    assert chosen.status_code == 200


async def test_nlp_models_limits_what_is_served(tmp_path: Path) -> None:
    make_fake_artifact(tmp_path)
    make_fake_artifact(tmp_path, name="tickets")
    async with serve(tmp_path, loader=NamedLoader(), with_artifact=False, models="tickets") as s:
        assert list(s.runtime.slots) == ["tickets"]
        assert (await s.client.get("/health/ready")).status_code == 200


async def test_a_model_being_trained_shows_training_and_serves_once_its_artifact_appears(tmp_path: Path) -> None:
    make_fake_artifact(tmp_path)
    (tmp_path / "tickets").mkdir()
    status = {"state": "training", "task": "classification", "preset": "quick", "started_at": "2025-01-01T00:00:00",
              "pid": os.getpid(), "host": socket.gethostname()}
    (tmp_path / "tickets" / ".training.json").write_text(json.dumps(status))
    async with serve(tmp_path, loader=NamedLoader(), with_artifact=False) as s:
        listing = {m["name"]: m for m in (await s.client.get("/models")).json()["models"]}
        ready = await s.client.get("/health/ready")
        served = await s.client.post("/predict", json={"task": "sentiment", "text": "good"})
        waiting = await s.client.post("/predict", json={"model": "tickets", "text": "refund"})
        make_fake_artifact(tmp_path, name="tickets", version="20250103T000000Z-cccccc")
        (tmp_path / "tickets" / ".training.json").unlink()
        changed = await reloading.poll_once(s.runtime)
        now = await s.client.post("/predict", json={"model": "tickets", "text": "refund"})
        ready_after = await s.client.get("/health/ready")
    assert listing["sentiment"]["state"] == "ready"
    assert listing["tickets"]["state"] == "training" and listing["tickets"]["task"] == "sentiment"
    assert listing["tickets"]["error"] == ("being trained (preset quick, started 2025-01-01T00:00:00); served once "
                                           "its artifact is written")
    assert ready.status_code == 503 and ready.json()["models"]["tickets"]["state"] == "training"
    assert served.status_code == 200  # the ready model serves while the other trains
    assert waiting.status_code == 503 and waiting.json()["error_type"] == "model_not_loaded"
    assert [(r.name, r.result) for r in changed] == [("tickets", "loaded")]
    assert now.status_code == 200 and now.json()["model"]["version"] == "20250103T000000Z-cccccc"
    assert ready_after.status_code == 200


async def test_a_training_job_that_died_reads_as_failed(tmp_path: Path) -> None:
    make_fake_artifact(tmp_path)
    (tmp_path / "translation").mkdir()
    gone = {"state": "training", "task": "translation", "pid": 2**22 + 12345, "host": socket.gethostname()}
    (tmp_path / "translation" / ".training.json").write_text(json.dumps(gone))
    async with serve(tmp_path, loader=NamedLoader(), with_artifact=False) as s:
        state = (await s.client.get("/models/translation")).json()
    assert state["state"] == "failed" and "exited" in state["error"]


LABELS = ["billing", "bug", "praise"]


@pytest.fixture(scope="module")
def three_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    make_tiny_sentiment_artifact(root)
    make_tiny_sentiment_artifact(root, labels=LABELS, name="tickets", seed=1)
    return root


async def test_a_three_label_model_serves_its_own_labels_by_name(three_labels: Path) -> None:
    async with real_client(three_labels, [], models=["sentiment", "tickets"]) as client:
        tickets = await client.post("/predict", json={"model": "tickets", "text": ["the invoice is wrong", "crash"],
                                                      "mc_samples": 8, "seed": 1})
        default = await client.post("/predict", json={"task": "sentiment", "text": "a good film", "mc_samples": 0})
        detail = (await client.get("/models/tickets")).json()
    assert tickets.status_code == 200
    body = tickets.json()
    assert body["model"]["name"] == "tickets" and body["task"] == "sentiment"
    for prediction in body["predictions"]:
        assert set(prediction["probabilities"]) == set(LABELS) and prediction["label"] in LABELS
        assert math.isclose(sum(prediction["probabilities"].values()), 1.0, abs_tol=1e-5)
        assert prediction["uncertainty"]["predictive_entropy"] <= math.log(3) + 1e-6
    assert set(default.json()["predictions"][0]["probabilities"]) == {"negative", "positive"}
    assert detail["manifest"]["labels"] == LABELS and detail["manifest"]["name"] == "tickets"
    assert detail["predictor"]["name"] == "tickets"
