"""`POST /predict`: validate, admit, tokenise, queue, await, answer (docs/architecture.md §5).

Order of checks, cheapest first, so an overloaded server spends nothing on work it will refuse:
draining (503) → known model or task (422, `service/routing.py`) → model loaded (503) → item/character limits
and mc_samples cap (422) → queue capacity (429, before tokenising) → `predictor.prepare` (422 on InputError) →
queue and wait, bounded by `request_timeout_s` (504). A client that disconnects while waiting has its items
dropped. An admitted request holds a lease on the model version that admitted it (`Admitted.release`), so a
hot swap lets it finish on that version.

`admit` and `respond` are shared with `POST /predict/stream` (service/controllers/stream.py) and `/v1`.
`/predict` itself answers through `respond_json`: the same body, built from the prediction dataclasses and
encoded by msgspec without a pydantic model per item (the schema still documents `PredictResponse`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody

from models.core.predictor import InputError, MCRequest, PreparedItem
from service import routing
from service.accounting import accounted, request_labels
from service.adapters import ADAPTERS
from service.auth import require_api_key
from service.errors import LimitError, RequestTimeoutError, ServiceError, UnavailableError
from service.runtime import ModelSlot, Runtime
from service.schemas import ErrorBody, ModelRef, PredictRequest, PredictResponse
from service.slots import LoadedModel

T = TypeVar("T")


class ClientDisconnectedError(ServiceError):
    """The client went away before its answer was ready (nginx's 499; nobody reads the body)."""

    status_code = 499
    error_type = "client_disconnected"


_ERRORS = {
    status: ResponseSpec(data_container=ErrorBody, description=text)
    for status, text in {
        400: "Malformed JSON.",
        401: "Missing or wrong API key (only when the server has one).",
        413: "Body larger than the payload limit.",
        422: "Parses but breaks a limit: empty text, too many items, text too long, unknown model or task, "
             "a model of another task, mc_samples above the cap, invalid parameters.",
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


def _slot(runtime: Runtime, data: PredictRequest) -> ModelSlot:
    if runtime.draining:
        raise UnavailableError("server is draining; retry on another replica", error_type="draining")
    slot = routing.select(runtime, data.model, data.task)
    if slot.state != "ready" or slot.current is None:
        raise UnavailableError(f"{slot.name} model is not loaded ({slot.error or slot.state})",
                               error_type="model_not_loaded")
    return slot


def _mc_samples(data: PredictRequest, runtime: Runtime, slot: ModelSlot) -> int:
    cap = runtime.settings.mc_samples_cap
    if data.mc_samples is None:
        return runtime.default_mc_samples(slot)
    if data.mc_samples > cap:
        raise LimitError(f"mc_samples {data.mc_samples} is above the cap of {cap}", error_type="mc_samples_above_cap")
    return data.mc_samples


def _prepare(model: LoadedModel, texts: list[str], parameters: dict[str, Any], single: bool) -> list[PreparedItem]:
    prepared = []
    for index, text in enumerate(texts):
        try:
            prepared.append(model.predictor.prepare(text, parameters))
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
                      state: State) -> Response[PredictResponse]:
        runtime: Runtime = state.runtime
        started = time.perf_counter()
        with accounted(runtime, request_labels(runtime, data), started) as outcome:
            body = await self._predict(request, data, runtime, started)
            outcome.status = 200
            return Response(body, status_code=200)

    async def _predict(
        self, request: Request[Any, Any, Any], data: PredictRequest, runtime: Runtime, started: float
    ) -> dict[str, Any]:
        admitted = admit(data, runtime)
        try:
            clock = TokenClock(started) if ADAPTERS[admitted.slot.task].streams else None
            mc = MCRequest(admitted.mc_samples, admitted.seed, text_sink=clock.piece if clock else None)
            budget = runtime.settings.request_timeout_s - (time.perf_counter() - started)
            try:
                async with asyncio.timeout(max(budget, 0.0)):
                    predictions = await _unless_disconnected(
                        request, admitted.model.batcher.submit(admitted.items, [mc] * len(admitted.items)))
            except TimeoutError as exc:
                raise RequestTimeoutError(
                    f"no result within the request timeout of {runtime.settings.request_timeout_s:g} s"
                ) from exc
            return respond_json(data, runtime, admitted, predictions, clock)
        finally:
            admitted.release()


@dataclass(frozen=True)
class Admitted:
    """A request that passed every check and was tokenised: the model version it leased (`model`, whose
    batcher takes the items; `release` it when done), its slot, items, T and seed."""

    slot: ModelSlot
    model: LoadedModel
    items: list[PreparedItem]
    mc_samples: int
    seed: int

    @property
    def task(self) -> str:
        return self.slot.task

    def release(self) -> None:
        self.model.release()


def admit(data: PredictRequest, runtime: Runtime, *, streaming: bool = False) -> Admitted:
    """Every check of the module docstring up to and including `prepare`, then a lease on the serving
    version (no await in between, so a hot swap cannot come between the check and the lease); raises the
    mapped errors."""
    settings = runtime.settings
    slot = _slot(runtime, data)
    if streaming and not ADAPTERS[slot.task].streams:
        raise LimitError(f"model {slot.name!r} ({slot.task}) does not stream; use POST /predict",
                         error_type="not_streamable")
    if streaming and not isinstance(data.text, str):
        raise LimitError("POST /predict/stream takes one text (a string), not a list")
    texts = _texts(data, settings.max_items_per_request, settings.max_chars_per_text)
    mc_samples = _mc_samples(data, runtime, slot)
    seed = data.seed if data.seed is not None else secrets.randbelow(2**31)
    model = slot.current
    assert model is not None
    model.batcher.check_capacity(len(texts))  # 429 before any tokenising work
    items = _prepare(model, texts, data.parameters, single=isinstance(data.text, str))
    return Admitted(slot, model.acquire(), items, mc_samples, seed)


class TokenClock:
    """Times a sequence request's output as the client sees it: the first streamed piece (time to first
    token) and the last. `piece` is the predictor's text sink; it runs on the worker thread."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.first: float | None = None
        self.last: float | None = None

    def piece(self, _text: str) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now


def respond(data: PredictRequest, runtime: Runtime, admitted: Admitted, predictions: list[Any],
            clock: TokenClock | None) -> PredictResponse:
    """Record the metrics of a finished request and build its response body as a validated model."""
    _observe(runtime, admitted, predictions, clock)
    adapter = ADAPTERS[admitted.task]
    return PredictResponse(
        task=admitted.task,
        model=ModelRef(name=admitted.slot.name, version=admitted.model.version),
        mc_samples=admitted.mc_samples,
        seed=admitted.seed,
        predictions=[adapter.to_response(p) for p in predictions],  # type: ignore[misc]
    )


def respond_json(data: PredictRequest, runtime: Runtime, admitted: Admitted, predictions: list[Any],
                 clock: TokenClock | None) -> dict[str, Any]:
    """`respond`'s body as msgspec-encodable data (the adapters' `to_json`), for the hot path."""
    _observe(runtime, admitted, predictions, clock)
    adapter = ADAPTERS[admitted.task]
    return {"task": admitted.task, "model": {"name": admitted.slot.name, "version": admitted.model.version},
            "mc_samples": admitted.mc_samples, "seed": admitted.seed,
            "predictions": [adapter.to_json(p) for p in predictions]}


def _observe(runtime: Runtime, admitted: Admitted, predictions: list[Any], clock: TokenClock | None) -> None:
    """Record the metrics of a finished request."""
    adapter = ADAPTERS[admitted.task]
    labels = admitted.slot.labels
    runtime.metrics.observe_inputs(labels, admitted.mc_samples, [item.n_tokens for item in admitted.items])
    for prediction in predictions:
        adapter.observe(runtime.metrics, labels, prediction)
    if clock is not None and clock.first is not None:
        tokens = sum(getattr(p, "output_tokens", 0) for p in predictions)
        per_token = (clock.last - clock.first) / (tokens - 1) if tokens > 1 and clock.last is not None else None
        runtime.metrics.observe_token_timing(labels, clock.first - clock.started, per_token)
