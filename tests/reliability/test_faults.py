"""Faults in-process: broken artifacts, a model that raises mid-batch, a model slower than the request
timeout, and out-of-memory on a batch (split and retried, or a clear 503 for an item too big alone)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from models.core.artifacts import MANIFEST_NAME, sha256_file
from models.core.predictor import MCRequest, PreparedItem, SentimentPrediction
from service.app import create_app
from service.oom import ItemOutOfMemory, OnceSink, is_out_of_memory, predict_splitting
from service.runtime import Runtime
from service.settings import Settings
from tests.service.conftest import sample, serve, until, wait_event
from tests.service.fakes import FakePredictor

pytestmark = pytest.mark.anyio
ERROR_KEYS = {"error", "error_type"}


# --- broken artifacts: the others keep serving, readiness names the missing model and why --------------------
def _weights(artifact: Path) -> Path:
    return next(artifact.rglob("*.safetensors"))


def corrupt_bytes(artifact: Path) -> None:
    weights = _weights(artifact)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))


def truncated_with_matching_checksum(artifact: Path) -> None:
    """A writer that hashed a half-written weights file: checksums pass, the weights cannot load."""
    weights = _weights(artifact)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    manifest = json.loads((artifact / MANIFEST_NAME).read_text())
    manifest["files"][weights.relative_to(artifact).as_posix()] = sha256_file(weights)
    (artifact / MANIFEST_NAME).write_text(json.dumps(manifest))


def half_written(artifact: Path) -> None:
    """Killed mid-write: files present but the manifest (written last) never appeared."""
    (artifact / MANIFEST_NAME).unlink()


def garbled_manifest(artifact: Path) -> None:
    (artifact / MANIFEST_NAME).write_text('{"task": "translation", "versi')


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "corrupt": (corrupt_bytes, "checksum mismatch"),
    "truncated": (truncated_with_matching_checksum, "cannot load model"),
    "half-written": (half_written, "no complete translation artifact"),
    "garbled-manifest": (garbled_manifest, "unreadable manifest"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
async def test_a_broken_artifact_fails_only_its_model_and_readiness_says_why(
    breakage: str, two_task_artifacts: Path, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    shutil.copytree(two_task_artifacts, root)
    break_it, reason = BREAKAGES[breakage]
    break_it(next((root / "translation").iterdir()))
    settings = Settings(artifacts_dir=root, tasks=["sentiment", "translation"], device="cpu", dtype="float32")
    runtime = Runtime(settings)
    app = create_app(settings, runtime)
    async with app.lifespan():
        await runtime.wait_loaded()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            body = ready.json()
            assert body["status"] == "degraded"
            assert body["models"]["sentiment"]["state"] == "ready"
            assert body["models"]["translation"]["state"] == "failed"
            assert reason in body["models"]["translation"]["error"]
            assert body["error"].startswith("translation: ") and reason in body["error"]

            ok = await client.post("/predict", json={"task": "sentiment", "text": "still serving", "mc_samples": 2})
            assert ok.status_code == 200
            refused = await client.post("/predict", json={"task": "translation", "text": "In the beginning."})
            assert refused.status_code == 503
            assert refused.json()["error_type"] == "model_not_loaded" and reason in refused.json()["error"]


# --- a model that raises mid-batch ------------------------------------------------------------------------------
async def test_a_batch_that_raises_fails_only_its_own_requests(tmp_path: Path) -> None:
    async with serve(tmp_path, max_batch_size=2) as served:
        fake, client = served.fake, served.client
        fake.gate.clear()
        first = asyncio.create_task(client.post("/predict", json={"task": "sentiment", "text": "good first"}))
        await wait_event(fake.started)
        queued = [asyncio.create_task(client.post("/predict", json={"task": "sentiment", "text": text}))
                  for text in ("FAIL here", "good neighbour", "good third", "good fourth")]
        await until(lambda: served.runtime.slots["sentiment"].batcher.queued_items == 4)  # type: ignore[union-attr]
        fake.gate.set()
        answers = [await first] + [await task for task in queued]
        statuses = [r.status_code for r in answers]
        assert statuses == [200, 500, 500, 200, 200]  # [FAIL, neighbour] failed together; the rest ran
        for failed in answers[1:3]:
            assert failed.json() == {"error": "inference failed for this batch (RuntimeError)",
                                     "error_type": "inference_error"}  # no internals in the body
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.post("/predict", json={"task": "sentiment", "text": "good after"})).status_code == 200
        metrics = await served.metrics()
        assert sample(metrics, "nlp_requests_total", task="sentiment", status="500") == 2
        assert sample(metrics, "nlp_requests_total", task="sentiment", status="200") == 4


# --- a model slower than the request timeout --------------------------------------------------------------------
async def test_a_model_slower_than_the_timeout_gets_504_and_the_queued_work_is_dropped(tmp_path: Path) -> None:
    async with serve(tmp_path, max_batch_size=1, request_timeout_s=0.3) as served:
        fake, client = served.fake, served.client
        fake.gate.clear()  # the model "hangs" until the test lets it go
        running = asyncio.create_task(client.post("/predict", json={"task": "sentiment", "text": "slow one"}))
        await wait_event(fake.started)
        waiting = await client.post("/predict", json={"task": "sentiment", "text": "stuck behind"})
        slow = await running
        assert (slow.status_code, waiting.status_code) == (504, 504)
        assert slow.json()["error_type"] == waiting.json()["error_type"] == "timeout"
        # The cancelled submit drops its item on its next turn of the loop, while the model still hangs.
        await until(lambda: served.runtime.slots["sentiment"].batcher.queued_items == 0)  # type: ignore[union-attr]
        fake.gate.set()
        after = await client.post("/predict", json={"task": "sentiment", "text": "after recovery"})
        assert after.status_code == 200
        assert fake.batches == [["slow one"], ["after recovery"]]  # the timed-out queued item never ran
        metrics = await served.metrics()
        assert sample(metrics, "nlp_rejected_requests_total", task="sentiment", reason="timeout") == 2


# --- out of memory on a batch ------------------------------------------------------------------------------------
def test_out_of_memory_is_recognised_for_cuda_cpu_and_python_allocators() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough "
                                         "memory: you tried to allocate 123 bytes."))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only allocator errors, not any message


class OOMAbove:
    """A predict function that runs out of memory above `limit` items, or whenever "HUGE" is in the batch."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls: list[int] = []

    def __call__(self, items: Sequence[Any], requests: Sequence[Any]) -> list[Any]:
        self.calls.append(len(items))
        if len(items) > self.limit or any("HUGE" in str(item) for item in items):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return [f"ok {item}" for item in items]


def test_predict_splitting_halves_until_batches_fit_and_marks_an_item_too_big_alone() -> None:
    predict = OOMAbove(limit=2)
    released: list[int] = []
    items = ["a", "b", "c", "d", "HUGE e", "f"]
    results = predict_splitting(predict, items, [None] * 6, release=lambda: released.append(1))
    assert results[:4] == ["ok a", "ok b", "ok c", "ok d"] and results[5] == "ok f"
    assert isinstance(results[4], ItemOutOfMemory) and "OutOfMemoryError" in results[4].detail
    # 6 → 3 + 3; 3 → 1 + 2 (a | b c); 3 → 1 + 2 (d | HUGE e, f); [HUGE e, f] → HUGE e | f
    assert predict.calls == [6, 3, 1, 2, 3, 1, 2, 1, 1]
    assert len(released) == 5  # released after every out-of-memory failure (5 of the 9 calls)


def test_predict_splitting_does_not_retry_other_failures() -> None:
    def broken(items: Sequence[Any], requests: Sequence[Any]) -> list[Any]:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        predict_splitting(broken, ["a", "b"], [None, None], release=lambda: None)


class StreamingOOM:
    """A streaming predict function: its n-th call streams each item's text from `attempts[n]` (or the last
    entry) to the item's sink, in pieces of `cuts[n]` (or the last) characters, then runs out of memory if
    the batch holds more than one item."""

    def __init__(self, attempts: list[dict[str, str]], cuts: list[int]) -> None:
        self.attempts, self.cuts, self.calls = attempts, cuts, 0

    def __call__(self, items: Sequence[str], requests: Sequence[MCRequest]) -> list[str]:
        texts = self.attempts[min(self.calls, len(self.attempts) - 1)]
        cut = self.cuts[min(self.calls, len(self.cuts) - 1)]
        self.calls += 1
        for item, request in zip(items, requests, strict=True):
            for start in range(0, len(texts[item]), cut):
                if request.text_sink is not None:
                    request.text_sink(texts[item][start:start + cut])
        if len(items) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [texts[item] for item in items]


@pytest.mark.parametrize("cut", [1, 3, 100])
def test_a_retry_after_out_of_memory_never_resends_streamed_text(cut: int) -> None:
    texts = {"a": "It was a truth", "b": "The evening passed"}
    received: dict[str, list[str]] = {"a": [], "b": []}
    requests = [MCRequest(2, 1, text_sink=received[name].append) for name in texts]
    predict = StreamingOOM([texts], [cut])
    assert predict_splitting(predict, list(texts), requests, release=lambda: None) == list(texts.values())
    assert predict.calls == 3  # [a, b] streamed both texts, then ran out of memory; a and b were retried alone
    assert {name: "".join(pieces) for name, pieces in received.items()} == texts  # each character once


def test_a_retry_streams_only_what_extends_the_text_already_sent() -> None:
    # Out of memory after 4 characters of a and none of b; the retries decode the whole texts in other pieces.
    received: dict[str, list[str]] = {"a": [], "b": []}
    requests = [MCRequest(2, 1, text_sink=received[name].append) for name in received]
    predict = StreamingOOM([{"a": "It w", "b": ""}, {"a": "It was a truth", "b": "The evening"}], cuts=[2, 3])
    predict_splitting(predict, ["a", "b"], requests, release=lambda: None)
    assert received == {"a": ["It", " w", "as", " a ", "tru", "th"], "b": ["The", " ev", "eni", "ng"]}


@pytest.mark.parametrize(("retry", "faithful"), [("It was a lie", False), ("It was a lie, told to all", False),
                                                 ("It was", False), ("It was a truth, and more", True)])
def test_a_retry_that_decodes_another_text_streams_nothing_more_and_says_so(retry: str, faithful: bool) -> None:
    received: list[str] = []
    sink = OnceSink(received.append)  # a receiver that must know (the stream): its own OnceSink, used as is
    predict = StreamingOOM([{"a": "It was a truth", "b": "x"}, {"a": retry, "b": "x"}], cuts=[4])
    results = predict_splitting(predict, ["a", "b"], [MCRequest(2, 1, text_sink=sink), MCRequest(2, 1)],
                                release=lambda: None)
    assert results == [retry, "x"]  # the retry's answer stands; the receiver decides whether to use it
    # What was sent is the first attempt's text, plus only what extends it without contradiction.
    assert "".join(received) == ("It was a truth, and more" if faithful else "It was a truth")
    assert sink.faithful is faithful


class OOMFakePredictor(FakePredictor):
    """The fake sentiment model, out of memory on batches over 2 items or holding "HUGE"."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[SentimentPrediction]:
        self.sizes.append(len(items))
        if len(items) > 2 or any("HUGE" in item.text for item in items):
            self.batches.append([item.text for item in items])
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return super().predict(items, requests)


async def test_out_of_memory_on_a_batch_splits_it_and_only_an_item_too_big_alone_fails(tmp_path: Path) -> None:
    fake = OOMFakePredictor()
    async with serve(tmp_path, predictor=fake, max_batch_size=8) as served:
        client = served.client
        fake.gate.clear()
        first = asyncio.create_task(client.post("/predict", json={"task": "sentiment", "text": "good opener"}))
        await wait_event(fake.started)
        texts = ["good one", "good two", "HUGE three", "good four", "good five"]
        queued = [asyncio.create_task(client.post("/predict", json={"task": "sentiment", "text": t})) for t in texts]
        await until(lambda: served.runtime.slots["sentiment"].batcher.queued_items == 5)  # type: ignore[union-attr]
        fake.gate.set()
        assert (await first).status_code == 200
        answers = {t: await task for t, task in zip(texts, queued, strict=True)}
        assert {t: r.status_code for t, r in answers.items()} == {
            "good one": 200, "good two": 200, "HUGE three": 503, "good four": 200, "good five": 200}
        assert answers["HUGE three"].json()["error_type"] == "out_of_memory"
        assert "out of memory" in answers["HUGE three"].json()["error"]
        # opener | 5 → OOM; [one, two] ok; [HUGE, four, five] → OOM; [HUGE] → OOM alone; [four, five] ok
        assert fake.sizes == [1, 5, 2, 3, 1, 2]
        assert (await client.get("/health/ready")).status_code == 200
