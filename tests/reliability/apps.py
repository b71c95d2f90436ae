"""In-process apps for the fuzzing tests: the real tiny models behind Litestar's synchronous TestClient.

(Hypothesis drives synchronous test functions, so these tests use the blocking-portal TestClient; the
requests are sequential, which is what a property test wants anyway.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings

ERROR_KEYS = {"error", "error_type"}


@contextmanager
def real_app_client(artifacts: Path, **overrides: Any) -> Iterator[TestClient[Any]]:
    """A TestClient on the app serving the real artifacts under `artifacts`, once every model is ready."""
    settings = Settings(artifacts_dir=artifacts, device="cpu", dtype="float32", max_wait_ms=0.0, **overrides)
    app = create_app(settings, Runtime(settings))
    with TestClient(app, timeout=60) as client:
        deadline = time.monotonic() + 120
        while (ready := client.get("/health/ready")).status_code != 200:
            assert ready.json()["status"] == "loading", ready.json()  # a load failure would never recover
            assert time.monotonic() < deadline, "models did not load"
            time.sleep(0.05)
        yield client


def assert_openai_error_contract(status: int, body: Any) -> None:
    """The `/v1/*` paths: no 5xx; every error answer has OpenAI's error shape with a non-empty message."""
    assert status < 500, (status, body)
    if status >= 400:
        assert isinstance(body, dict) and set(body) == {"error"}, (status, body)
        error = body["error"]
        assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, body
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str), body


def assert_answer_contract(status: int, body: Any) -> None:
    """No 5xx; every error answer has exactly the error body with non-empty strings."""
    assert status < 500, (status, body)
    if status >= 400:
        assert isinstance(body, dict) and set(body) == ERROR_KEYS, (status, body)
        assert all(isinstance(value, str) and value for value in body.values()), body
