"""`POST /predict`: validate, admit, tokenise, queue, await, answer (DESIGN.md §5).

Order of checks, cheapest first, so an overloaded server spends nothing on work it will refuse:
draining (503) → known task (422) → model loaded (503) → item/character limits and mc_samples cap (422)
→ queue capacity (429, before tokenising) → `predictor.prepare` (422 on InputError) → queue and wait,
bounded by `request_timeout_s` (504). A client that disconnects while waiting has its items dropped.

Seam for `POST /predict/stream` (generation issue): a second handler here that reuses `_admit` and
streams from the generation predictor instead of awaiting `Batcher.submit`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody

from models.predictor import InputError, MCRequest, PreparedItem
from service.adapters import ADAPTERS
from service.auth import require_api_key
from service.errors import LimitError, RequestTimeoutError, ServiceError, UnavailableError, UnknownTaskError
from service.runtime import ModelSlot, Runtime
from service.schemas import ErrorBody, ModelRef, PredictRequest, PredictResponse

T = TypeVar("T")


class ClientDisconnectedError(ServiceError):
    """The client went away before its answer was ready (nginx's 499; nobody reads the body)."""

    status_code = 499
    error_type = "client_disconnected"


# error_type → the `reason` label of nlp_rejected_requests_total (a fixed, small set).
_REJECT_REASONS = {"queue_full": "queue_full", "draining": "draining", "not_ready": "not_ready",
                   "model_not_loaded": "not_ready", "timeout": "timeout", "client_disconnected": "disconnected"}

_ERRORS = {
    status: ResponseSpec(data_container=ErrorBody, description=text)
    for status, text in {
        400: "Malformed JSON.",
        401: "Missing or wrong API key (only when the server has one).",
        413: "Body larger than the payload limit.",
        422: "Parses but breaks a limit: empty text, too many items, text too long, unknown task, "
             "mc_samples above the cap, invalid parameters.",
        429: "The model's queue is full; retry after `Retry-After` seconds.",
        500: "The batch holding this request failed (no internals in the body).",
        503: "Not ready, draining, or the task's model is not loaded.",
        504: "Queue wait plus inference passed the request timeout.",
    }.items()
}


def _texts(data: PredictRequest, max_items: int, max_chars: int) -> list[str]:
    texts = [data.text] if isinstance(data.text, str) else list(data.text)
    if not texts:
        raise LimitError("text is an empty list; send at least one text")
    if len(texts) > max_items:
        raise LimitError(f"{len(texts)} texts exceed the limit of {max_items} per request")
    for index, text in enumerate(texts):
        where = "text" if isinstance(data.text, str) else f"text[{index}]"
        if not text.strip():
            raise LimitError(f"{where} is empty")
        if len(text) > max_chars:
            raise LimitError(f"{where} has {len(text)} characters, over the limit of {max_chars}")
    return texts


def _slot(runtime: Runtime, task: str) -> ModelSlot:
    if runtime.draining:
        raise UnavailableError("server is draining; retry on another replica", error_type="draining")
    if task not in runtime.known_tasks:
        raise UnknownTaskError(f"unknown task {task!r}; known tasks: {', '.join(runtime.known_tasks)}")
    if task not in ADAPTERS:
        raise UnavailableError(f"{task} is not served over HTTP by this version", error_type="model_not_loaded")
    slot = runtime.slots.get(task)
    if slot is None or slot.state != "ready" or slot.batcher is None:
        why = "not configured" if slot is None else (slot.error or slot.state)
        raise UnavailableError(f"{task} model is not loaded ({why})", error_type="model_not_loaded")
    return slot


def _mc_samples(data: PredictRequest, runtime: Runtime, slot: ModelSlot) -> int:
    cap = runtime.settings.mc_samples_cap
    if data.mc_samples is None:
        return runtime.default_mc_samples(slot)
    if data.mc_samples > cap:
        raise LimitError(f"mc_samples {data.mc_samples} is above the cap of {cap}", error_type="mc_samples_above_cap")
    return data.mc_samples


def _prepare(slot: ModelSlot, texts: list[str], parameters: dict[str, Any], single: bool) -> list[PreparedItem]:
    assert slot.predictor is not None
    prepared = []
    for index, text in enumerate(texts):
        try:
            prepared.append(slot.predictor.prepare(text, parameters))
        except InputError as exc:
            raise InputError(str(exc) if single else f"text[{index}]: {exc}") from exc
    return prepared


async def _unless_disconnected(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so dropping its queued items) if the client disconnects first."""

    async def disconnected() -> None:
        # The body is fully read, so the next ASGI message is the disconnect (or arrives after the response).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    job = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if job in done:
            return job.result()
        raise ClientDisconnectedError("client disconnected")
    finally:
        for task in (job, watcher):
            task.cancel()
        if job.done() and not job.cancelled():
            job.exception()  # retrieved: a failure racing the disconnect must not log "never retrieved"


class PredictController(Controller):
    path = "/predict"
    guards = [require_api_key]
    tags = ["inference"]

    @post(
        status_code=200,
        summary="Predict with MC-dropout uncertainty",
        description="One or many texts for one task; predictions come back in input order, each with its "
        "uncertainty and `abstain` flag. Requests are batched with others server-side.",
        responses=_ERRORS,
    )
    async def predict(self, request: Request[Any, Any, Any], data: JSONBody[PredictRequest],
                      state: State) -> PredictResponse:
        runtime: Runtime = state.runtime
        started = time.perf_counter()
        task_label = data.task if data.task in runtime.known_tasks else "unknown"
        status: int = 500
        with runtime.track_request():
            try:
                response = await self._predict(request, data, runtime, started)
                status = 200
                return response
            except ServiceError as exc:
                status = exc.status_code
                reason = _REJECT_REASONS.get(exc.error_type, "invalid" if status == 422 else None)
                if reason is not None:
                    runtime.metrics.observe_rejection(task_label, reason)
                raise
            except InputError:
                status = 422
                runtime.metrics.observe_rejection(task_label, "invalid")
                raise
            finally:
                runtime.metrics.observe_request(task_label, status, time.perf_counter() - started)

    async def _predict(
        self, request: Request[Any, Any, Any], data: PredictRequest, runtime: Runtime, started: float
    ) -> PredictResponse:
        settings = runtime.settings
        slot = _slot(runtime, data.task)
        texts = _texts(data, settings.max_items_per_request, settings.max_chars_per_text)
        mc_samples = _mc_samples(data, runtime, slot)
        seed = data.seed if data.seed is not None else secrets.randbelow(2**31)
        assert slot.batcher is not None and slot.predictor is not None
        slot.batcher.check_capacity(len(texts))  # 429 before any tokenising work
        items = _prepare(slot, texts, data.parameters, single=isinstance(data.text, str))
        mc = MCRequest(mc_samples=mc_samples, seed=seed)
        budget = settings.request_timeout_s - (time.perf_counter() - started)
        try:
            async with asyncio.timeout(max(budget, 0.0)):
                predictions = await _unless_disconnected(request, slot.batcher.submit(items, [mc] * len(items)))
        except TimeoutError as exc:
            raise RequestTimeoutError(
                f"no result within the request timeout of {settings.request_timeout_s:g} s"
            ) from exc
        adapter = ADAPTERS[data.task]
        runtime.metrics.observe_inputs(data.task, mc_samples, [item.n_tokens for item in items])
        for prediction in predictions:
            adapter.observe(runtime.metrics, data.task, prediction)
        return PredictResponse(
            task=data.task,
            model=ModelRef(name=slot.predictor.name, version=slot.predictor.version),
            mc_samples=mc_samples,
            seed=seed,
            predictions=[adapter.to_response(p) for p in predictions],  # type: ignore[misc]
        )
