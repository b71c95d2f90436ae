"""The Litestar application factory.

`create_app(settings, runtime=None)` builds an app whose startup begins loading the models in the
background (so `/health/*` answers during loading) and whose shutdown fails whatever is still queued
and releases the inference thread. Tests pass their own `Runtime` (fake loader); `python -m service`
lets the factory build the real one. Nothing here reads the environment.
"""

from __future__ import annotations

import logging

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from service.controllers import (
    HealthController,
    MetricsController,
    ModelsController,
    PredictController,
    StreamController,
)
from service.controllers.openai import OpenAIController
from service.controllers.playground import playground_routes
from service.controllers.reports import ReportsController
from service.errors import EXCEPTION_HANDLERS
from service.http_metrics import http_metrics_config
from service.openai_errors import with_openai_errors
from service.request_body import JSONSafeRequest
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"


def create_app(settings: Settings, runtime: Runtime | None = None) -> Litestar:
    """An app serving `settings` with `runtime` (built from the settings and the model registry if None)."""
    runtime = runtime if runtime is not None else Runtime(settings)
    registry = runtime.metrics.registry

    async def start_runtime() -> None:
        await runtime.start()

    async def stop_runtime() -> None:
        await runtime.close()

    routes: list[object] = [PredictController, StreamController, HealthController, ModelsController,
                            MetricsController, ReportsController, OpenAIController]
    if settings.playground:
        routes += playground_routes()

    return Litestar(
        route_handlers=routes,  # type: ignore[arg-type]
        state=State({"settings": settings, "runtime": runtime, "metrics_registry": registry}),
        on_startup=[start_runtime],
        on_shutdown=[stop_runtime],
        # One set of handlers; on /v1/ paths they answer in OpenAI's error shape (service/openai_errors.py).
        exception_handlers=with_openai_errors(EXCEPTION_HANDLERS),
        middleware=[http_metrics_config(registry).middleware],
        request_max_body_size=settings.max_payload_bytes,
        request_class=JSONSafeRequest,
        # Off unless origins are configured: a browser page elsewhere must not read predictions by default.
        cors_config=CORSConfig(allow_origins=settings.cors_allow_origins) if settings.cors_allow_origins else None,
        openapi_config=OpenAPIConfig(
            title="NLP inference service",
            version=API_VERSION,
            description="Sentiment, translation and generation with Monte-Carlo-dropout uncertainty. "
            "Entropies and mutual information are in nats; probabilities in [0, 1].",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        # debug=False keeps tracebacks out of response bodies whatever the log level.
        debug=False,
    )
