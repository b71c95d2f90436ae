"""`GET /metrics`: the app's own Prometheus registry in the text exposition format."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.auth import require_metrics_key


class MetricsController(Controller):
    path = "/metrics"
    guards = [require_metrics_key]

    @get(include_in_schema=False, cache=False)
    async def metrics(self, state: State) -> Response[bytes]:
        return Response(generate_latest(state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
