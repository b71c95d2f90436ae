"""`POST /predict/stream`: the output of a streaming task (generation) as server-sent events.

The request body is `/predict`'s with one text. It passes the same checks in the same order (errors before
the stream starts are ordinary HTTP errors with the error body), then joins the model's batcher like any
other request, so streams are batched with everything else. Events, in order:
- `token`: `{"text": "<piece>"}` for each piece of output as it is decoded (the pieces join into the
  final text; text that might begin a stop string is held back until it is known not to);
- then exactly one of `done`: the full `/predict` response body (prediction, uncertainty, tokens), or
  `error`: the error body (`timeout`, `inference_error`, ...) when the request fails after the stream started.
A client that disconnects while its request is still queued has it dropped from the queue.

Out of memory mid-stream: the batch is split and retried (service/oom.py), and the retry decodes the text
again from the start. The client never receives text twice: the retry's text is matched against what was
already sent and only what extends it is streamed, so the `token` pieces still join into the `done` text.
If the retry decodes a different text (rare: a sampled token flipped by the smaller batch's padding), the
stream ends with an `error` event (`out_of_memory`, 503: send the request again) rather than a `done`
whose text contradicts the pieces already sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage

from models.core.predictor import MCRequest
from service.accounting import accounted, request_labels
from service.auth import require_api_key
from service.controllers.predict import _ERRORS, Admitted, ClientDisconnectedError, TokenClock, admit, respond
from service.errors import OutOfMemoryError, ServiceError
from service.oom import OnceSink
from service.runtime import Runtime
from service.schemas import PredictRequest

_DONE = object()


class StreamController(Controller):
    path = "/predict/stream"
    guards = [require_api_key]
    tags = ["inference"]

    @post(
        status_code=200,
        summary="Generate with streamed tokens, then the uncertainty",
        description="Server-sent events: `token` events with text pieces as they are decoded, then one `done` "
        "event holding the full /predict response (or one `error` event). Only for tasks that stream "
        "(generation); one text per request.",
        responses=_ERRORS,
    )
    async def stream(self, data: JSONBody[PredictRequest], state: State) -> ServerSentEvent:
        runtime: Runtime = state.runtime
        started = time.perf_counter()
        with accounted(runtime, request_labels(runtime, data), started) as outcome:
            admitted = admit(data, runtime, streaming=True)
            outcome.handed_off = True  # refusals are recorded here; the stream records how it ended
        return ServerSentEvent(_events(data, runtime, admitted, started))


async def _events(data: PredictRequest, runtime: Runtime, admitted: Admitted,
                  started: float) -> AsyncIterator[ServerSentEventMessage]:
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[Any] = asyncio.Queue()
    clock = TokenClock(started)

    def push(text: str) -> None:  # worker thread → event loop
        clock.piece(text)
        loop.call_soon_threadsafe(pieces.put_nowait, text)

    sink = OnceSink(push)  # each character once, across out-of-memory retries

    job = asyncio.ensure_future(admitted.model.batcher.submit(admitted.items, [MCRequest(admitted.mc_samples,
                                                                                        admitted.seed, sink)]))
    job.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, _DONE))
    deadline = started + runtime.settings.request_timeout_s
    try:
        with accounted(runtime, admitted.slot.labels, started) as outcome:
            try:
                while True:
                    async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                        piece = await pieces.get()
                    if piece is _DONE:
                        break
                    yield ServerSentEventMessage(data=json.dumps({"text": piece}), event="token")
                predictions = job.result()
                if not sink.faithful:
                    raise OutOfMemoryError("out of memory mid-stream, and the retry decoded a different text "
                                           "than the one already sent; send the request again")
                body = respond(data, runtime, admitted, predictions, clock)
                outcome.status = 200
                yield ServerSentEventMessage(data=body.model_dump_json(), event="done")
            except TimeoutError:
                timeout = runtime.settings.request_timeout_s
                outcome.status = 504
                runtime.metrics.observe_rejection(admitted.slot.labels, "timeout")
                yield _error_event(f"no result within the request timeout of {timeout:g} s", "timeout")
            except ServiceError as exc:
                outcome.status = exc.status_code
                yield _error_event(exc.message, exc.error_type)
            except (GeneratorExit, asyncio.CancelledError):
                outcome.status = ClientDisconnectedError.status_code  # the client went away mid-stream
                runtime.metrics.observe_rejection(admitted.slot.labels, "disconnected")
                raise
            except Exception:
                outcome.status = 500
                yield _error_event("the batch holding this request failed", "inference_error")
    finally:
        job.cancel()  # a disconnect while queued drops the work; a running batch finishes for its others
        admitted.release()


def _error_event(message: str, error_type: str) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=json.dumps({"error": message, "error_type": error_type}), event="error")
