"""Readiness through loading, failures and drain; model discovery, pinning and the /models endpoints."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service import devices
from tests.service.conftest import make_fake_artifact, sample, serve, until, wait_event
from tests.service.fakes import FakeLoader, FakePredictor

pytestmark = pytest.mark.anyio


async def test_readiness_is_503_while_loading_and_200_once_loaded_and_warmed(tmp_path: Path) -> None:
    loader = FakeLoader()
    loader.release.clear()
    async with serve(tmp_path, loader=loader, wait_loaded=False) as s:
        assert (await s.client.get("/health/live")).status_code == 200  # answers while models load
        loading = await s.client.get("/health/ready")
        assert loading.status_code == 503
        body = loading.json()
        assert body["status"] == "loading" and body["error_type"] == "not_ready"
        assert body["models"]["sentiment"]["state"] in {"pending", "loading"}
        assert "sentiment" in body["error"]
        assert sample(await s.metrics(), "nlp_model_loaded", task="sentiment") == 0
        assert not s.fake.warmed
        loader.release.set()
        await s.runtime.wait_loaded()
        ready = await s.client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["models"]["sentiment"] == {"task": "sentiment", "state": "ready", "version": "fake-1",
                                                       "error": None, "queued_items": 0}
        assert s.fake.warmed
        metrics = await s.metrics()
        assert sample(metrics, "nlp_model_loaded", task="sentiment") == 1
        assert sample(metrics, "nlp_model_info", task="sentiment", version="fake-1", device="cpu",
                      dtype=s.runtime.dtype) == 1


async def test_a_failed_model_keeps_readiness_503_and_says_why(tmp_path: Path) -> None:
    async with serve(tmp_path, loader=FakeLoader(error=RuntimeError("no active dropout"))) as s:
        response = await s.client.get("/health/ready")
        assert (await s.client.get("/health/live")).status_code == 200
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["models"]["sentiment"]["state"] == "failed"
    assert "no active dropout" in body["models"]["sentiment"]["error"] and "no active dropout" in body["error"]


async def test_without_artifacts_readiness_names_the_directory(tmp_path: Path) -> None:
    async with serve(tmp_path, with_artifact=False) as s:
        response = await s.client.get("/health/ready")
    assert response.status_code == 503
    assert str(tmp_path) in response.json()["error"] and response.json()["models"] == {}


async def test_a_configured_task_without_artifact_fails_alone_and_the_rest_serve(tmp_path: Path) -> None:
    async with serve(tmp_path, tasks="sentiment,translation,bogus") as s:
        ready = await s.client.get("/health/ready")
        served = await s.client.post("/predict", json={"task": "sentiment", "text": "good"})
    assert served.status_code == 200
    assert ready.status_code == 503
    models = ready.json()["models"]
    assert models["sentiment"]["state"] == "ready"
    assert models["translation"]["state"] == "failed" and "no complete translation artifact" in \
        models["translation"]["error"]
    assert models["bogus"]["state"] == "failed" and "unknown task" in models["bogus"]["error"]


async def test_newest_version_loads_unless_one_is_pinned(tmp_path: Path) -> None:
    old = make_fake_artifact(tmp_path, version="20240101T000000Z-000001")
    new = make_fake_artifact(tmp_path, version="20250101T000000Z-000002")
    loader = FakeLoader()
    async with serve(tmp_path, loader=loader, with_artifact=False):
        pass
    async with serve(tmp_path, loader=loader, with_artifact=False, versions={"sentiment": old.name}):
        pass
    assert [call[0] for call in loader.calls] == [new, old]


async def test_settings_reach_the_predictor_options(tmp_path: Path) -> None:
    loader = FakeLoader()
    async with serve(tmp_path, loader=loader, device="cpu", dtype="float32", mc_last_k={"sentiment": 2},
                     mc_dropout_sites={"sentiment": "hidden,head"}, max_input_tokens=128):
        pass
    (_, options), = loader.calls
    assert options.device == "cpu" and options.dtype == "float32"
    assert options.mc_last_k == 2 and options.mc_dropout_sites == frozenset({"hidden", "head"})
    assert options.max_input_tokens == 128


async def test_inference_workers_reach_only_predictors_that_allow_concurrent_batches(tmp_path: Path) -> None:
    for allows, expected in ((False, 1), (True, 2)):
        predictor = FakePredictor()
        if allows:
            predictor.concurrent_batches = True  # type: ignore[attr-defined]
        async with serve(tmp_path / str(allows), predictor=predictor, inference_workers=2) as served:
            loaded = served.runtime.slots["sentiment"].current
            assert loaded is not None and loaded.batcher.workers == expected
            response = await served.client.post("/predict", json={"task": "sentiment", "text": "still answers"})
            assert response.status_code == 200


async def test_auto_inference_workers_are_two_on_a_cpu_and_one_on_cuda() -> None:
    # auto: 2 on a CPU with 2+ torch threads, 1 on CUDA or with one thread; a number is taken as it is
    assert devices.resolve_workers("auto", "cpu", 2) == 2 and devices.resolve_workers("auto", "cpu", 1) == 1
    assert devices.resolve_workers("auto", "cuda", 8) == 1 and devices.resolve_workers(3, "cuda", None) == 3


async def test_drain_turns_readiness_off_and_waits_for_in_flight_requests(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        s.fake.gate.clear()
        in_flight = asyncio.create_task(s.client.post("/predict", json={"task": "sentiment", "text": "good"}))
        await wait_event(s.fake.started)
        queued = asyncio.create_task(s.client.post("/predict", json={"task": "sentiment", "text": "queued"}))
        await until(lambda: s.runtime.slots["sentiment"].batcher.queued_items == 1)
        drain = asyncio.create_task(s.runtime.drain(timeout=10))
        await until(lambda: s.runtime.draining)
        draining = await s.client.get("/health/ready")
        assert draining.status_code == 503
        assert draining.json()["models"]["sentiment"]["queued_items"] == 1
        assert draining.json()["status"] == "draining" and draining.json()["error_type"] == "draining"
        assert not drain.done()
        s.fake.gate.set()
        assert (await in_flight).status_code == 200 and (await queued).status_code == 200
        assert await drain is True


async def test_drain_gives_up_after_its_timeout(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        s.fake.gate.clear()
        in_flight = asyncio.create_task(s.client.post("/predict", json={"task": "sentiment", "text": "good"}))
        await wait_event(s.fake.started)
        assert await s.runtime.drain(timeout=0.05) is False
        s.fake.gate.set()
        assert (await in_flight).status_code == 200


async def test_models_list_and_detail(tmp_path: Path) -> None:
    async with serve(tmp_path, predictor=FakePredictor(default_mc_samples=7), max_batch_size=8,
                     batching={"sentiment": {"max_queue": 99}}) as s:
        listing = (await s.client.get("/models")).json()
        detail = await s.client.get("/models/sentiment")
        missing = await s.client.get("/models/translation")
    assert listing == {"models": [{"name": "sentiment", "task": "sentiment", "state": "ready", "version": "fake-1",
                                   "device": "cpu", "dtype": listing["models"][0]["dtype"], "error": None,
                                   "reload_error": None, "failed_version": None, "swaps": 0}]}
    assert listing["models"][0]["dtype"] in {"float32", "bfloat16"}
    assert detail.status_code == 200
    body = detail.json()
    assert body["batching"] == {"max_batch_size": 8, "max_batch_tokens": 16384, "max_wait_ms": 2.0, "max_queue": 99}
    assert body["mc"]["default_samples"] == 7 and body["mc"]["cap"] == 64
    assert body["manifest"]["version"] == "20250101T000000Z-aaaaaa"
    assert body["manifest"]["labels"] == ["negative", "positive"]
    assert body["predictor"] == {"task": "sentiment", "fake": True, "max_input_tokens": 50}
    assert missing.status_code == 404 and missing.json()["error_type"] == "not_found"


async def test_a_crashed_batcher_turns_readiness_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve(tmp_path) as s:
        batcher = s.runtime.slots["sentiment"].batcher

        def broken() -> list[object]:
            raise RuntimeError("a bug in batch selection")

        monkeypatch.setattr(batcher, "_select", broken)
        failed = await s.client.post("/predict", json={"task": "sentiment", "text": "good"})
        ready = await s.client.get("/health/ready")
        refused = await s.client.post("/predict", json={"task": "sentiment", "text": "good"})
    assert failed.status_code == 500 and failed.json()["error_type"] == "inference_error"
    assert ready.status_code == 503 and "batcher stopped" in ready.json()["error"]
    assert refused.status_code == 503 and refused.json()["error_type"] == "model_not_loaded"
