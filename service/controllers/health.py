"""`GET /health/live` (the process answers) and `GET /health/ready` (it should get traffic).

Readiness is 503 until every configured model is loaded and warmed, and again once draining starts,
with a body naming each model's state (ready, loading, training, failed) and, when not serving, why. The
models that are ready serve meanwhile: readiness says whether *all* are, `/predict` needs only its own.
Liveness never looks at models: a slow or failed load must not get the process restarted in a loop.
"""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.datastructures import State

from service.auth import require_health_key
from service.runtime import Runtime
from service.schemas import LivenessResponse, ModelState, ReadinessResponse


def readiness(runtime: Runtime) -> tuple[int, ReadinessResponse]:
    """(HTTP status, body) of the readiness probe."""
    models = {
        name: ModelState(task=slot.task, state=slot.state, version=slot.version, error=slot.error,
                         queued_items=slot.batcher.queued_items if slot.batcher is not None else None)
        for name, slot in runtime.slots.items()
    }
    if runtime.ready:
        return 200, ReadinessResponse(status="ready", models=models)
    if runtime.draining:
        status = "draining"
    elif runtime.problem or any(slot.state == "failed" for slot in runtime.slots.values()):
        status = "degraded"
    else:
        status = "loading"
    return 503, ReadinessResponse(
        status=status,
        models=models,
        error=runtime.not_ready_reason() or "not ready",
        error_type="draining" if runtime.draining else "not_ready",
    )


class HealthController(Controller):
    path = "/health"
    guards = [require_health_key]
    tags = ["health"]

    @get("/live", summary="Liveness: the process is up and its event loop answers.")
    async def live(self) -> LivenessResponse:
        return LivenessResponse()

    @get(
        "/ready",
        summary="Readiness: every configured model loaded and warmed, not draining (else 503).",
        # The 503 body is this same document, so one schema describes both answers.
    )
    async def ready(self, state: State) -> Response[ReadinessResponse]:
        status, body = readiness(state.runtime)
        return Response(body, status_code=status, headers={"Cache-Control": "no-store"})
