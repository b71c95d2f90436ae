"""New versions without downtime (issue 14): a newer complete version is loaded, warmed and swapped in under
load, every request gets 200, the old version finishes its queue and is released; a broken version leaves the
old one serving and is reported; the poller finds new versions by itself."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import pytest

from models.core.artifacts import ArtifactError
from service import reloading
from tests.factories import make_tiny_sentiment_artifact
from tests.service.conftest import make_fake_artifact, real_client, sample, serve, until, wait_event
from tests.service.fakes import FakePredictor

pytestmark = pytest.mark.anyio

V1, V2 = "20250101T000000Z-aaaaaa", "20250201T000000Z-bbbbbb"


class VersionLoader:
    """A fresh FakePredictor per version (weakly remembered, to see it released); versions in `broken` fail
    to load like a corrupt artifact."""

    predictor = None

    def __init__(self, broken: tuple[str, ...] = ()) -> None:
        self.broken = set(broken)
        self.loaded: dict[str, weakref.ref[FakePredictor]] = {}

    def __call__(self, artifact: Path, options: object) -> FakePredictor:
        if artifact.name in self.broken:
            raise ArtifactError(f"{artifact}: checksum mismatch for model/placeholder.txt (corrupt or modified)")
        predictor = FakePredictor(version=artifact.name)
        self.loaded[artifact.name] = weakref.ref(predictor)
        return predictor

    def released(self, version: str) -> bool:
        gc.collect()
        return self.loaded[version]() is None


async def test_a_new_version_swaps_in_under_load_without_a_failed_request(tmp_path: Path) -> None:
    make_fake_artifact(tmp_path, version=V1)
    loader = VersionLoader()
    async with serve(tmp_path, loader=loader, with_artifact=False) as s:
        answers: list[tuple[int, str]] = []
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                response = await s.client.post("/predict", json={"task": "sentiment", "text": "a good film"})
                answers.append((response.status_code, response.json()["model"]["version"]
                                if response.status_code == 200 else response.text))

        clients = [asyncio.create_task(client()) for _ in range(4)]
        await until(lambda: len(answers) >= 20)
        # Hold the old version's batch so requests queue on it across the swap.
        old = s.runtime.slots["sentiment"].current
        assert old is not None
        old_fake = old.predictor
        assert isinstance(old_fake, FakePredictor)
        old_fake.started.clear()
        old_fake.gate.clear()
        await wait_event(old_fake.started)
        queued_on_old = [asyncio.create_task(s.client.post("/predict", json={"task": "sentiment", "text": "queued"}))
                         for _ in range(3)]
        await until(lambda: s.runtime.slots["sentiment"].batcher.queued_items >= 3)
        make_fake_artifact(tmp_path, version=V2)
        reload = asyncio.create_task(s.client.post("/models/sentiment/reload"))
        await until(lambda: V2 in loader.loaded)  # loaded beside the old one, warm-up waits for the inference thread
        old_fake.gate.set()
        swapped = await reload
        await until(lambda: sum(version == V2 for _, version in answers) >= 20)
        stop.set()
        await asyncio.gather(*clients)
        held = await asyncio.gather(*queued_on_old)
        old = old_fake = None  # the test's own references: only the service's may keep the version alive
        await until(lambda: loader.released(V1))
        metrics = await s.metrics()
        detail = (await s.client.get("/models/sentiment")).json()
    assert swapped.status_code == 200
    assert swapped.json() == {"name": "sentiment", "result": "swapped", "version": V2, "previous_version": V1}
    assert [status for status, _ in answers] == [200] * len(answers)  # nothing failed across the swap
    assert {version for _, version in answers} == {V1, V2} and answers[-1][1] == V2
    assert [(r.status_code, r.json()["model"]["version"]) for r in held] == [(200, V1)] * 3  # the old queue finished
    assert detail["version"] == V2 and detail["swaps"] == 1 and detail["state"] == "ready"
    assert sample(metrics, "nlp_model_info", model="sentiment", version=V2) == 1
    assert sample(metrics, "nlp_model_info", model="sentiment", version=V1) == 0  # the old info series is gone
    assert sample(metrics, "nlp_model_reloads_total", model="sentiment", result="swapped") == 1
    assert sample(metrics, "nlp_requests_total", model="sentiment", status="200") == len(answers) + 3


async def test_a_broken_new_version_leaves_the_old_one_serving_and_is_reported(tmp_path: Path) -> None:
    make_fake_artifact(tmp_path, version=V1)
    loader = VersionLoader(broken=(V2,))
    async with serve(tmp_path, loader=loader, with_artifact=False) as s:
        make_fake_artifact(tmp_path, version=V2)
        reload = await s.client.post("/models/sentiment/reload")
        served = await s.client.post("/predict", json={"task": "sentiment", "text": "good"})
        detail = (await s.client.get("/models/sentiment")).json()
        ready = await s.client.get("/health/ready")
        again = await reloading.poll_once(s.runtime)  # the poller does not retry a version that failed
        metrics = await s.metrics()
    assert reload.status_code == 422 and reload.json()["error_type"] == "reload_failed"
    assert reload.json()["error"].startswith(f"sentiment: version {V2}: ArtifactError: ")
    assert reload.json()["error"].endswith(f"({V1} keeps serving)")
    assert served.status_code == 200 and served.json()["model"]["version"] == V1
    assert detail["state"] == "ready" and detail["version"] == V1
    assert detail["failed_version"] == V2 and "checksum mismatch" in detail["reload_error"]
    assert ready.status_code == 200
    assert again == []
    assert sample(metrics, "nlp_model_reloads_total", model="sentiment", result="failed") == 1
    assert sample(metrics, "nlp_model_loaded", model="sentiment") == 1


async def test_the_poller_swaps_in_a_new_version_by_itself(tmp_path: Path) -> None:
    make_fake_artifact(tmp_path, version=V1)
    loader = VersionLoader()
    async with serve(tmp_path, loader=loader, with_artifact=False, poll_interval_s=0.02) as s:
        make_fake_artifact(tmp_path, version=V2)
        await until(lambda: s.runtime.slots["sentiment"].version == V2, timeout=20)
        served = await s.client.post("/predict", json={"task": "sentiment", "text": "good"})
    assert served.json()["model"]["version"] == V2


async def test_reload_without_anything_new_is_unchanged_and_unknown_models_are_404(tmp_path: Path) -> None:
    async with serve(tmp_path, api_key="k") as s:
        refused = await s.client.post("/models/sentiment/reload")
        same = await s.client.post("/models/sentiment/reload", headers={"x-api-key": "k"})
        missing = await s.client.post("/models/nope/reload", headers={"x-api-key": "k"})
    assert refused.status_code == 401  # behind the API key
    assert same.status_code == 200 and same.json()["result"] == "unchanged"
    assert missing.status_code == 404 and "served models: sentiment" in missing.json()["error"]


async def test_a_real_model_swaps_versions_under_concurrent_requests(tmp_path: Path) -> None:
    first = make_tiny_sentiment_artifact(tmp_path, seed=0)
    async with real_client(tmp_path, ["sentiment"]) as client:
        request = {"task": "sentiment", "text": "a quiet moving film", "mc_samples": 4, "seed": 1}
        before = [asyncio.create_task(client.post("/predict", json=request)) for _ in range(6)]
        second = make_tiny_sentiment_artifact(tmp_path, seed=1)
        reload = asyncio.create_task(client.post("/models/sentiment/reload"))
        after_started = [asyncio.create_task(client.post("/predict", json=request)) for _ in range(6)]
        swapped = await reload
        after = [await client.post("/predict", json=request) for _ in range(2)]
        responses = await asyncio.gather(*before, *after_started)
    assert swapped.json()["result"] == "swapped" and swapped.json()["version"] == second.name
    assert all(r.status_code == 200 for r in [*responses, *after])
    assert {r.json()["model"]["version"] for r in responses} <= {first.name, second.name}
    assert {r.json()["model"]["version"] for r in after} == {second.name}
