"""Shared fixtures for service tests: fake artifacts, an in-process server, metric parsing.

In-process tests drive the app with `httpx.AsyncClient(transport=ASGITransport(app))` inside
`app.lifespan()`, all on the test's event loop. (Litestar's AsyncTestClient hands every request to a
blocking portal and waits for it, which would serialise the concurrent requests these tests need.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from prometheus_client.parser import text_string_to_metric_families

from models.core.artifacts import Manifest, write_artifact
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.service.fakes import FakeLoader, FakePredictor

KNOWN_TASKS = ("sentiment", "translation", "generation")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_fake_artifact(root: Path, task: str = "sentiment", version: str = "20250101T000000Z-aaaaaa",
                       name: str | None = None) -> Path:
    """A complete artifact directory `root/<name or task>/<version>/` whose model is a placeholder file (the
    fake loader ignores it)."""

    def write(staging: Path) -> None:
        (staging / "model").mkdir()
        (staging / "model" / "placeholder.txt").write_text("fake model\n")

    manifest = Manifest(task=task, version=version, model_class="Fake", labels=["negative", "positive"], name=name)
    return write_artifact(root, manifest, write)


@dataclass
class Served:
    app: Litestar
    client: httpx.AsyncClient
    runtime: Runtime
    fake: FakePredictor
    loader: FakeLoader

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics keyed by (sample name, sorted labels)."""
        response = await self.client.get("/metrics")
        assert response.status_code == 200
        return parse_metrics(response.text)


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (so `task=...` sums over the `model`
    label, as a dashboard's `sum by (task)` does), 0.0 when there is none (a counter that never moved)."""
    wanted = set(labels.items())
    return sum(value for (sample_name, have), value in metrics.items()
               if sample_name == name and wanted <= set(have))


@asynccontextmanager
async def serve(
    tmp_path: Path,
    *,
    predictor: FakePredictor | None = None,
    loader: FakeLoader | None = None,
    wait_loaded: bool = True,
    with_artifact: bool = True,
    **overrides: Any,
) -> AsyncIterator[Served]:
    """Run the app in-process with a fake predictor behind a fake artifact under `tmp_path`."""
    if with_artifact:
        make_fake_artifact(tmp_path)
    loader = loader or FakeLoader(predictor or FakePredictor())
    settings = Settings(artifacts_dir=tmp_path, **{"max_wait_ms": 2.0, "device": "cpu", "poll_interval_s": 0,
                                                   **overrides})
    runtime = Runtime(settings, loader=loader, known_tasks=KNOWN_TASKS)
    app = create_app(settings, runtime)
    async with app.lifespan():
        if wait_loaded:
            await runtime.wait_loaded()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield Served(app, client, runtime, loader.predictor, loader)


@asynccontextmanager
async def real_client(artifacts: Path, tasks: list[str], *, loader: Any = None,
                      **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process over the real (tiny) artifacts under `artifacts`, every task in `tasks` loaded by
    models.registry (or by `loader`, e.g. one that wraps the real predictor), float32; `overrides` are
    settings."""
    settings = Settings(artifacts_dir=artifacts, tasks=tasks, **{"device": "cpu", "dtype": "float32",
                                                                 "max_wait_ms": 20, "max_batch_size": 16,
                                                                 "poll_interval_s": 0, **overrides})
    runtime = Runtime(settings, loader=loader, known_tasks=KNOWN_TASKS if loader is not None else None)
    app = create_app(settings, runtime)
    async with app.lifespan():
        await runtime.wait_loaded()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
            yield c


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until `predicate()` holds (state polling, not a timing assumption)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the test's patience")
        await asyncio.sleep(0.001)


async def wait_event(event: Any, timeout: float = 5.0) -> None:
    """Await a threading.Event set by the predictor's worker thread."""
    assert await asyncio.to_thread(event.wait, timeout), "event never set"
