"""GET /metrics: batching under concurrent load, the uncertainty histograms, request/rejection counters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.metrics import ServiceMetrics
from tests.factories import make_tiny_sentiment_artifact
from tests.service.conftest import parse_metrics, real_client, sample, serve, until, wait_event

pytestmark = pytest.mark.anyio


async def test_concurrent_requests_show_batches_larger_than_one(tmp_path: Path) -> None:
    async with serve(tmp_path, max_batch_size=32) as s:
        s.fake.gate.clear()
        first = asyncio.create_task(s.client.post("/predict", json={"task": "sentiment", "text": "first"}))
        await wait_event(s.fake.started)
        burst = [asyncio.create_task(s.client.post("/predict", json={"task": "sentiment", "text": f"review {i}"}))
                 for i in range(8)]
        await until(lambda: s.runtime.slots["sentiment"].batcher.queued_items == 8)
        waiting = await s.metrics()
        s.fake.gate.set()
        responses = await asyncio.gather(first, *burst)
        after = await s.metrics()
    assert [r.status_code for r in responses] == [200] * 9
    assert sample(waiting, "nlp_queue_size", task="sentiment") == 8
    assert sample(after, "nlp_queue_size", task="sentiment") == 0
    assert sample(after, "nlp_batch_size_count", task="sentiment") == 2
    assert sample(after, "nlp_batch_size_sum", task="sentiment") == 9
    # One batch of 1 (the blocker) and one of 8: the le=4 bucket holds only the first.
    assert sample(after, "nlp_batch_size_bucket", task="sentiment", le="4.0") == 1
    assert sample(after, "nlp_batch_size_bucket", task="sentiment", le="8.0") == 2
    assert sample(after, "nlp_queue_duration_seconds_count", task="sentiment") == 9
    assert sample(after, "nlp_inference_duration_seconds_count", task="sentiment") == 2


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny sentiment model whose every MC prediction abstains (threshold 0 nats)."""
    root = tmp_path_factory.mktemp("artifacts")
    make_tiny_sentiment_artifact(root, calibration={"temperature": 1.0, "mc_samples": 8, "abstain": {
        "measure": "predictive_entropy", "threshold": 0.0, "target_risk": 0.05}})
    return root


async def test_uncertainty_histograms_move_with_mc_requests_only(artifacts: Path) -> None:
    texts = ["a good film", "an ordinary film", "bad", "great great great", "meh"]
    async with real_client(artifacts, ["sentiment"]) as client:
        before = parse_metrics((await client.get("/metrics")).text)
        mc = (await client.post("/predict", json={"task": "sentiment", "text": texts, "mc_samples": 20,
                                                  "seed": 3})).json()
        det = await client.post("/predict", json={"task": "sentiment", "text": texts, "mc_samples": 0})
        after = parse_metrics((await client.get("/metrics")).text)
    assert det.status_code == 200
    for name in ("nlp_prediction_entropy_count", "nlp_prediction_mutual_information_count"):
        assert sample(before, name, task="sentiment") == 0
        assert sample(after, name, task="sentiment") == len(texts)  # the T=0 request added nothing
    entropies = [p["uncertainty"]["predictive_entropy"] for p in mc["predictions"]]
    mutual = [p["uncertainty"]["mutual_information"] for p in mc["predictions"]]
    assert sample(after, "nlp_prediction_entropy_sum", task="sentiment") == pytest.approx(sum(entropies))
    assert sample(after, "nlp_prediction_mutual_information_sum", task="sentiment") == pytest.approx(sum(mutual))
    assert [p["abstain"] for p in mc["predictions"]] == [True] * len(texts)
    assert sample(after, "nlp_abstentions_total", task="sentiment") == len(texts)  # the T=0 ones never abstain
    assert sample(after, "nlp_mc_samples_count", task="sentiment") == 2
    assert sample(after, "nlp_mc_samples_sum", task="sentiment") == 20
    tokens = [p["input_tokens"] for p in mc["predictions"]]
    assert sample(after, "nlp_input_tokens_count", task="sentiment") == 2 * len(texts)
    assert sample(after, "nlp_input_tokens_sum", task="sentiment") == 2 * sum(tokens)


async def test_request_counters_use_fixed_labels_and_never_the_text(tmp_path: Path) -> None:
    secret_text = "my-private-review-text"
    async with serve(tmp_path) as s:
        await s.client.post("/predict", json={"task": "sentiment", "text": secret_text})
        await s.client.post("/predict", json={"task": secret_text, "text": "good"})
        await s.client.post("/predict", json={"task": "sentiment", "text": "good", "mc_samples": 999})
        await s.client.get("/models/sentiment")
        await s.client.get(f"/models/{secret_text}")
        raw = (await s.client.get("/metrics")).text
        metrics = await s.metrics()
    assert secret_text not in raw
    assert sample(metrics, "nlp_requests_total", task="sentiment", status="200") == 1
    assert sample(metrics, "nlp_requests_total", task="unknown", status="422") == 1
    assert sample(metrics, "nlp_requests_total", task="sentiment", status="422") == 1
    assert sample(metrics, "nlp_rejected_requests_total", task="sentiment", reason="invalid") == 1
    assert sample(metrics, "nlp_request_duration_seconds_count", task="sentiment") == 2
    # Litestar's HTTP metrics, with the route template instead of the raw path.
    assert sample(metrics, "litestar_requests_total", app_name="nlp-service", method="GET",
                  path="/models/{name}", status_code="200") == 1
    assert sample(metrics, "litestar_requests_total", app_name="nlp-service", method="GET",
                  path="/models/{name}", status_code="404") == 1
    assert sample(metrics, "litestar_requests_total", app_name="nlp-service", method="POST",
                  path="/predict", status_code="422") == 2


def test_each_registry_gets_its_own_metrics() -> None:
    first, second = ServiceMetrics(), ServiceMetrics()  # would raise "Duplicated timeseries" on a shared registry
    first.observe_request(("sentiment", "sentiment"), 200, 0.1)
    labels = {"task": "sentiment", "model": "sentiment", "status": "200"}
    assert first.registry.get_sample_value("nlp_requests_total", labels) == 1
    assert second.registry.get_sample_value("nlp_requests_total", labels) is None


def test_gpu_gauges_read_at_scrape_time() -> None:
    metrics = ServiceMetrics()
    readings = iter([(1.0, 2.0), (3.0, 4.0)])
    current = next(readings)
    metrics.track_gpu("cuda:0", lambda: current)
    assert metrics.registry.get_sample_value("nlp_gpu_memory_allocated_bytes", {"device": "cuda:0"}) == 1.0
    current = next(readings)
    assert metrics.registry.get_sample_value("nlp_gpu_memory_reserved_bytes", {"device": "cuda:0"}) == 4.0
