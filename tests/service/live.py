"""A live test server: the real app under uvicorn (configured as `python -m service` configures it) on 127.0.0.1
and a free port, in a thread of the test process, serving the (tiny) artifacts it is given. For clients that need
a real socket: the `openai` SDK, a browser, keep-alive."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from service.__main__ import uvicorn_config
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.reliability.process import free_port, poll


@dataclass
class LiveServer:
    base: str
    settings: Settings
    runtime: Runtime


@contextmanager
def live_server(artifacts: Path, **overrides: Any) -> Iterator[LiveServer]:
    """Serve `artifacts` until the block ends; yields once every model is ready (readiness 200)."""
    port = free_port()
    settings = Settings(**{"artifacts_dir": artifacts, "host": "127.0.0.1", "port": port, "device": "cpu",
                           "dtype": "float32", "max_wait_ms": 5.0, "log_level": "warning", **overrides})
    runtime = Runtime(settings)
    server = uvicorn.Server(uvicorn_config(settings, create_app(settings, runtime)))  # as `python -m service`
    thread = threading.Thread(target=server.run, name=f"live-server-{port}", daemon=True)
    thread.start()  # uvicorn installs no signal handlers off the main thread
    base = f"http://127.0.0.1:{port}"
    try:
        key = settings.health_api_key.get_secret_value() if settings.health_api_key else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}

        def ready() -> bool:
            if not thread.is_alive():
                raise AssertionError("the live server stopped while starting")
            response = httpx.get(f"{base}/health/ready", headers=headers, timeout=5)
            if response.status_code == 503 and response.json().get("status") == "degraded":
                raise AssertionError(f"a model failed to load: {response.json()}")
            return response.status_code == 200

        poll(ready, "the live server's readiness", timeout=120)
        yield LiveServer(base, settings, runtime)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
