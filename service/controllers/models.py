"""`GET /models` and `GET /models/{name}`: what is loaded, where, and how it is configured."""

from __future__ import annotations

from litestar import Controller, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

from service.auth import require_api_key
from service.runtime import ModelSlot, Runtime
from service.schemas import ModelDetail, ModelList, ModelSummary


def _summary(slot: ModelSlot, runtime: Runtime) -> dict[str, object]:
    options = slot.options
    return {
        "name": slot.predictor.name if slot.predictor is not None else slot.task,
        "task": slot.task,
        "state": slot.state,
        "version": slot.version,
        "device": options.device if options else None,
        "dtype": options.dtype if options else None,
        "error": slot.error,
    }


class ModelsController(Controller):
    path = "/models"
    guards = [require_api_key]
    tags = ["models"]

    @get(summary="Configured models and their state.")
    async def list_models(self, state: State) -> ModelList:
        runtime: Runtime = state.runtime
        return ModelList(models=[ModelSummary.model_validate(_summary(s, runtime)) for s in runtime.slots.values()])

    @get("/{name:str}", summary="One model: manifest summary, device, dtype, batching limits, MC settings.")
    async def get_model(self, name: FromPath[str], state: State) -> ModelDetail:
        runtime: Runtime = state.runtime
        slot = runtime.slots.get(name) or next(
            (s for s in runtime.slots.values() if s.predictor is not None and s.predictor.name == name), None
        )
        if slot is None:
            raise NotFoundException(f"no model named {name!r}; see GET /models")
        settings = runtime.settings
        options = slot.options
        return ModelDetail.model_validate({
            **_summary(slot, runtime),
            "batching": settings.batch_limits(slot.task).model_dump(),
            "mc": {
                "default_samples": runtime.default_mc_samples(slot) if slot.predictor is not None else None,
                "cap": settings.mc_samples_cap,
                "last_k_setting": options.mc_last_k if options else None,
                "dropout_sites_setting": (sorted(options.mc_dropout_sites)
                                          if options and options.mc_dropout_sites else None),
            },
            "manifest": slot.manifest,
            "predictor": slot.predictor.describe() if slot.predictor is not None else {},
        })
