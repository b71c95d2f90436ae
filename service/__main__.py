"""`python -m service`: serve the artifacts with uvicorn, configured by `NLP_*` environment variables.

Graceful shutdown: the first SIGTERM (or Ctrl-C) does not stop uvicorn at once. Readiness turns 503 and
new /predict requests get 503 (the socket stays open so probes see the 503), queued and running requests
finish, bounded by `drain_timeout_s`; then uvicorn closes its connections and the app's shutdown fails
anything left. The process exits 0. A second signal skips the drain (uvicorn's own handling).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from types import FrameType
from typing import Any

import uvicorn

from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger("service")

# Seconds uvicorn waits for connections after the drain before it cuts them (responses are sent by then).
_CLOSE_GRACE_S = 5


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain step between the first exit signal and the actual shutdown."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.drain_timeout_s = drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._drain_requested = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the main thread between bytecodes (signal.signal), so only hand work to the loop here.
        if self._drain_requested or self._loop is None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        self._drain_requested = True
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        log.info("exit signal: draining (up to %.0f s)", self.drain_timeout_s)
        finished = await self.runtime.drain(self.drain_timeout_s)
        log.info("drain %s; shutting down", "complete" if finished else "timed out")
        self.should_exit = True


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    """uvicorn's configuration of the served `app` from `settings` (what `run` serves; the live tests too)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # uvloop + httptools (the defaults when installed) take the HTTP parsing and loop off the Python path.
        loop=settings.event_loop,
        http=settings.http_parser,
        log_level=settings.log_level,
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=_CLOSE_GRACE_S,
        # The service logs its own requests through metrics; uvicorn's per-request access log is noise.
        access_log=settings.log_level == "debug",
    )


def run(settings: Settings, runtime: Runtime | None = None) -> None:
    """Serve until a signal; returns after a graceful drain and shutdown."""
    runtime = runtime if runtime is not None else Runtime(settings)
    DrainingServer(uvicorn_config(settings, create_app(settings, runtime)), runtime, settings.drain_timeout_s).run()


def main() -> int:
    settings = Settings()
    configure_logging(settings.log_level)
    log.info("artifacts under %s; binding %s:%d", settings.artifacts_dir.resolve(), settings.host, settings.port)
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
