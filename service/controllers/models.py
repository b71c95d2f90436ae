"""`GET /models`, `GET /models/{name}` and `POST /models/{name}/reload`: what is served, where, how it is
configured, and new versions on demand (service/reloading.py). All behind the API key (service/auth.py)."""

from __future__ import annotations

from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from service import reloading, routing
from service.auth import require_api_key
from service.errors import LimitError
from service.runtime import ModelSlot, Runtime
from service.schemas import ErrorBody, ModelDetail, ModelList, ModelSummary, ReloadResponse


def _summary(slot: ModelSlot) -> dict[str, object]:
    options = slot.options
    return {
        "name": slot.name,
        "task": slot.task,
        "state": slot.state,
        "version": slot.version,
        "device": options.device if options else None,
        "dtype": options.dtype if options else None,
        "error": slot.error,
        "reload_error": slot.reload_error,
        "failed_version": slot.failed_version,
        "swaps": slot.swaps,
    }


def _find(runtime: Runtime, name: str) -> ModelSlot:
    slot = routing.by_name(runtime, name)
    if slot is None:
        raise NotFoundException(f"no model named {name!r}; served models: {', '.join(runtime.slots) or 'none'}")
    return slot


class ModelsController(Controller):
    path = "/models"
    guards = [require_api_key]
    tags = ["models"]

    @get(summary="Configured models and their state (ready, loading, training or failed).")
    async def list_models(self, state: State) -> ModelList:
        runtime: Runtime = state.runtime
        return ModelList(models=[ModelSummary.model_validate(_summary(s)) for s in runtime.slots.values()])

    @get("/{name:str}", summary="One model: manifest summary, device, dtype, batching limits, MC settings.")
    async def get_model(self, name: FromPath[str], state: State) -> ModelDetail:
        runtime: Runtime = state.runtime
        slot = _find(runtime, name)
        settings = runtime.settings
        options = slot.options
        described = slot.predictor.describe() if slot.predictor is not None else {}
        return ModelDetail.model_validate({
            **_summary(slot),
            "batching": settings.batch_limits(slot.name, slot.task).model_dump(),
            "mc": {
                "default_samples": runtime.default_mc_samples(slot) if slot.predictor is not None else None,
                "cap": settings.mc_samples_cap,
                "last_k_setting": options.mc_last_k if options else None,
                "dropout_sites_setting": (sorted(options.mc_dropout_sites)
                                          if options and options.mc_dropout_sites else None),
            },
            "manifest": slot.manifest,
            # The predictor knows its task; the model's name is the service's (its artifact directory).
            "predictor": {**described, "name": slot.name} if "name" in described else described,
        })

    @post("/{name:str}/reload", status_code=200, summary="Load the model's newest complete version now",
          description="Loads and warms the newest complete (or pinned) version beside the serving one, then "
          "switches new requests to it; the old version finishes its queue and is released. Nothing is "
          "refused meanwhile. A version that fails to load leaves the old one serving (422 `reload_failed`).",
          responses={404: ResponseSpec(ErrorBody, description="No such model."),
                     422: ResponseSpec(ErrorBody, description="The version did not load; the old one serves.")})
    async def reload_model(self, name: FromPath[str], state: State) -> Response[ReloadResponse]:
        runtime: Runtime = state.runtime
        result = await reloading.reload(runtime, _find(runtime, name))
        if result.result == "failed":
            serving = f"{result.version} keeps serving" if result.version else "nothing serves"
            raise LimitError(f"{result.name}: {result.error} ({serving})", error_type="reload_failed")
        return Response(ReloadResponse(name=result.name, result=result.result, version=result.version,
                                       previous_version=result.previous_version))
