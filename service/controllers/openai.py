"""OpenAI-compatible endpoints for the generation model(s): `GET /v1/models`, `POST /v1/completions`,
`POST /v1/chat/completions` (formats in service/openai_schemas.py and service/openai_format.py).

A request is translated into a `/predict` request (every choice one item: prompts × n) and goes the same
way: `admit` (draining, model loaded, item/character limits, mc_samples cap, queue capacity, tokenising),
the model's batcher, `respond` (metrics: requests, rejections, uncertainty, tokens, time to first token),
under the same API key (`Authorization: Bearer`), request timeout and disconnect handling. Only the wire
format differs: errors come in OpenAI's shape (service/openai_errors.py) and streams as `data:` chunks.
`nlp_requests_total` records a refusal under the service's own status (422 for an invalid request, which
the client receives as OpenAI's 400), so the dashboards read the same for both APIs.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage

from models.core.predictor import InputError, MCRequest
from service import routing
from service.accounting import accounted
from service.auth import require_api_key
from service.controllers.predict import (
    Admitted,
    ClientDisconnectedError,
    TokenClock,
    _unless_disconnected,
    admit,
    respond,
)
from service.errors import LimitError, OutOfMemoryError, RequestTimeoutError, ServiceError
from service.oom import OnceSink
from service.openai_errors import OpenAIRequestError, openai_error
from service.openai_format import Choices, Envelope, chat_prompt, merge_stops
from service.openai_requests import refuse_unsupported, renamed, task_parameters
from service.openai_schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelCardList,
    OpenAIErrorBody,
)
from service.runtime import ModelSlot, Runtime
from service.schemas import SEED_MAX, PredictRequest, PredictResponse

COMPLETION_TASKS = frozenset({"generation"})  # the tasks whose models continue text
_DONE = object()

_ERRORS = {status: ResponseSpec(data_container=OpenAIErrorBody, description=text) for status, text in {
    400: "Invalid request (OpenAI's status for what /predict answers 422), or malformed JSON.",
    401: "Missing or wrong API key (only when the server has one).",
    404: "No generation model by that name.",
    413: "Body larger than the payload limit.",
    429: "The model's queue is full; retry after `Retry-After` seconds.",
    500: "The batch holding this request failed.",
    503: "Not ready, draining, or the model is not loaded.",
    504: "Queue wait plus inference passed the request timeout.",
}.items()}


def _model_id(slot: ModelSlot) -> str:
    return slot.name


def _generation_slots(runtime: Runtime) -> list[ModelSlot]:
    return [slot for slot in runtime.slots.values() if slot.task in COMPLETION_TASKS]


def _resolve(runtime: Runtime, model: str) -> ModelSlot:
    for slot in _generation_slots(runtime):
        if model in (slot.task, _model_id(slot)):
            return slot
    known = ", ".join(_model_id(s) for s in _generation_slots(runtime)) or "none"
    raise OpenAIRequestError(f"no generation model {model!r}; models: {known} (see GET /v1/models)",
                             param="model", code="model_not_found", status_code=404)


def _created(slot: ModelSlot) -> int:
    try:
        return int(datetime.fromisoformat(str(slot.manifest.get("created_at"))).timestamp())
    except ValueError:
        return 0


def _admit(runtime: Runtime, slot: ModelSlot, body: CompletionRequest | ChatCompletionRequest, prompts: list[str],
           parameters: dict[str, Any]) -> tuple[PredictRequest, Admitted, list[int]]:
    """Admit prompts × n as one /predict request; returns it, what was admitted and each choice's seed.
    A refusal is re-raised naming the OpenAI field at fault."""
    data = PredictRequest(task=slot.task, model=slot.name, text=[p for p in prompts for _ in range(body.n)],
                          mc_samples=body.mc_samples, seed=body.seed, parameters=parameters)
    try:
        admitted = admit(data, runtime)
    except (InputError, LimitError) as exc:
        raise renamed(exc, body) from exc
    return data, admitted, [(admitted.seed + i) % (SEED_MAX + 1) for i in range(len(admitted.items))]


class OpenAIController(Controller):
    path = "/v1"
    guards = [require_api_key]
    tags = ["openai"]

    @get("/models", summary="OpenAI-compatible: the generation models", responses=_ERRORS)
    async def models(self, state: State) -> ModelCardList:
        runtime: Runtime = state.runtime
        return ModelCardList(data=[ModelCard(id=_model_id(s), created=_created(s)) for s in _generation_slots(runtime)])

    @post("/completions", status_code=200, summary="OpenAI-compatible text completion with MC-dropout uncertainty",
          description="OpenAI's legacy completions API; each choice carries `uncertainty`, and with `logprobs` "
          "each token its entropy and mutual information. `mc_samples` is an extra body field.", responses=_ERRORS)
    async def completions(self, request: Request[Any, Any, Any], data: JSONBody[CompletionRequest],
                          state: State) -> Response[CompletionResponse]:
        prompts = [data.prompt] if isinstance(data.prompt, str) else list(data.prompt)
        if not prompts:
            raise OpenAIRequestError("prompt is an empty list", param="prompt")
        return await _serve(request, state.runtime, data, lambda _: (prompts, ()), data.logprobs, chat=False)

    @post("/chat/completions", status_code=200, summary="OpenAI-compatible chat completion with MC-dropout "
          "uncertainty", description="The messages go through the model's chat template (or the documented "
          "fallback). Each choice carries `uncertainty`; with `logprobs` each token its entropy and mutual "
          "information. `mc_samples` is an extra body field.", responses=_ERRORS)
    async def chat_completions(self, request: Request[Any, Any, Any], data: JSONBody[ChatCompletionRequest],
                               state: State) -> Response[ChatCompletionResponse]:
        runtime: Runtime = state.runtime
        if data.top_logprobs and not data.logprobs:
            raise OpenAIRequestError("top_logprobs needs logprobs: true", param="top_logprobs")
        logprobs = (data.top_logprobs or 0) if data.logprobs else None

        def render(slot: ModelSlot) -> tuple[list[str], tuple[str, ...]]:
            prompt, stops = chat_prompt(data.messages, getattr(slot.predictor, "tokenizer", None))
            return [prompt], stops

        return await _serve(request, runtime, data, render, logprobs, chat=True)


Render = Callable[[ModelSlot], tuple[list[str], tuple[str, ...]]]


async def _serve(request: Request[Any, Any, Any], runtime: Runtime, body: CompletionRequest | ChatCompletionRequest,
                 render: Render, logprobs: int | None, *, chat: bool) -> Response[Any]:
    """Admit, run and answer one OpenAI request (module docstring). `render(slot)` gives the prompts and the
    stop strings their template needs; `logprobs` None = none, else the alternatives per token asked for."""
    started = time.perf_counter()
    labels = next((s.labels for s in _generation_slots(runtime) if body.model in (s.task, _model_id(s))),
                  routing.UNKNOWN)
    with accounted(runtime, labels, started) as outcome:
        slot = _resolve(runtime, body.model)
        prompts, template_stops = render(slot)
        refuse_unsupported(body, logprobs or 0, slot, runtime)
        parameters = task_parameters(body, merge_stops(body.stop, template_stops), tokens=logprobs is not None,
                                     top_logprobs=logprobs or 0)
        data, admitted, seeds = _admit(runtime, slot, body, prompts, parameters)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        choices = Choices([p for p in prompts for _ in range(body.n)], seeds, body.n, chat, include_usage)
        prefix = "chatcmpl-" if chat else "cmpl-"
        envelope = Envelope(prefix + secrets.token_hex(12), int(time.time()), admitted.slot.name,
                            admitted.model.version)
        if body.stream:
            outcome.handed_off = True  # the stream records how it ends (and gives the lease back)
            return ServerSentEvent(_chunks(runtime, data, admitted, choices, envelope, started))
        clock = TokenClock(started)
        requests = [MCRequest(admitted.mc_samples, seed, clock.piece) for seed in seeds]
        budget = runtime.settings.request_timeout_s - (time.perf_counter() - started)
        try:
            async with asyncio.timeout(max(budget, 0.0)):
                predictions = await _unless_disconnected(request, admitted.model.batcher.submit(admitted.items,
                                                                                                requests))
        except TimeoutError as exc:
            raise RequestTimeoutError(f"no result within the request timeout of "
                                      f"{runtime.settings.request_timeout_s:g} s") from exc
        finally:
            admitted.release()
        result = respond(data, runtime, admitted, predictions, clock)
        outcome.status = 200
        model = ChatCompletionResponse if chat else CompletionResponse
        return Response(model.model_validate(choices.response(envelope, result)))


def _message(chunk: dict[str, Any] | str) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=chunk if isinstance(chunk, str) else json.dumps(chunk))


async def _chunks(runtime: Runtime, data: PredictRequest, admitted: Admitted, choices: Choices, envelope: Envelope,
                  started: float) -> AsyncIterator[ServerSentEventMessage]:
    """The stream of one request: text pieces per choice as decoded, each choice's closing chunk, `[DONE]`;
    or an error chunk in OpenAI's shape when the request fails after the stream started (as /predict/stream)."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[Any] = asyncio.Queue()
    clock = TokenClock(started)

    def sink_of(index: int) -> Any:
        def sink(text: str) -> None:  # worker thread → event loop
            clock.piece(text)
            loop.call_soon_threadsafe(pieces.put_nowait, (index, text))
        return sink

    # One OnceSink per choice: each character reaches the client once across out-of-memory retries (service/oom.py).
    sinks = [OnceSink(sink_of(i)) for i in range(len(choices.seeds))]
    requests = [MCRequest(admitted.mc_samples, seed, sink) for seed, sink in zip(choices.seeds, sinks, strict=True)]
    job = asyncio.ensure_future(admitted.model.batcher.submit(admitted.items, requests))
    job.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, _DONE))
    deadline = started + runtime.settings.request_timeout_s
    try:
        with accounted(runtime, admitted.slot.labels, started) as outcome:
            try:
                for chunk in choices.opening(envelope):
                    yield _message(chunk)
                while True:
                    async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                        piece = await pieces.get()
                    if piece is _DONE:
                        break
                    yield _message(choices.piece(envelope, *piece))
                predictions = job.result()
                if not all(sink.faithful for sink in sinks):
                    raise OutOfMemoryError("out of memory mid-stream, and the retry decoded a different text "
                                           "than the one already sent; send the request again")
                result: PredictResponse = respond(data, runtime, admitted, predictions, clock)
                outcome.status = 200
                for chunk in choices.closing(envelope, result):
                    yield _message(chunk)
                yield _message("[DONE]")
            except TimeoutError:
                timeout = runtime.settings.request_timeout_s
                outcome.status = 504
                runtime.metrics.observe_rejection(admitted.slot.labels, "timeout")
                yield _message(openai_error(504, f"no result within the request timeout of {timeout:g} s", "timeout"))
            except ServiceError as exc:
                outcome.status = exc.status_code
                yield _message(openai_error(exc.status_code, exc.message, exc.error_type))
            except (GeneratorExit, asyncio.CancelledError):
                outcome.status = ClientDisconnectedError.status_code  # the client went away mid-stream
                runtime.metrics.observe_rejection(admitted.slot.labels, "disconnected")
                raise
            except Exception:
                outcome.status = 500
                yield _message(openai_error(500, "the batch holding this request failed", "inference_error"))
    finally:
        job.cancel()  # a disconnect while queued drops the work; a running batch finishes for its others
        admitted.release()
