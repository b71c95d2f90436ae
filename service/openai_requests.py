"""Translation of an OpenAI request into a `POST /predict` request: the predictor's parameters, the fields
refused at the value given, and refusals renamed into OpenAI's terms (`param` = the field at fault)."""

from __future__ import annotations

import re
from typing import Any

from models.core.predictor import InputError
from service.errors import LimitError
from service.openai_errors import OpenAIRequestError
from service.openai_schemas import ChatCompletionRequest, CompletionRequest
from service.runtime import ModelSlot, Runtime

Body = CompletionRequest | ChatCompletionRequest

# Predictor parameter named in an InputError → the OpenAI field the client sent.
_FIELDS = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
           "repetition_penalty": "repetition_penalty", "stop": "stop", "text": "text"}


def refuse_unsupported(body: Body, top_logprobs: int, slot: ModelSlot, runtime: Runtime) -> None:
    """Refuse (400) the OpenAI fields this server cannot honour at the value given (see service/openai_schemas.py)."""
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(body, name) != 0:
            raise OpenAIRequestError(f"{name} is not supported (only 0); use repetition_penalty", param=name)
    if body.logit_bias:
        raise OpenAIRequestError("logit_bias is not supported", param="logit_bias")
    if isinstance(body, CompletionRequest):
        if body.echo:
            raise OpenAIRequestError("echo is not supported", param="echo")
        if body.suffix is not None:
            raise OpenAIRequestError("suffix is not supported", param="suffix")
        if body.best_of is not None and body.best_of != body.n:
            raise OpenAIRequestError("best_of is supported only equal to n", param="best_of")
    if top_logprobs > 0:
        param = "top_logprobs" if isinstance(body, ChatCompletionRequest) else "logprobs"
        vocabulary = len(getattr(slot.predictor, "tokenizer", None) or ())
        limit = runtime.settings.max_top_logprobs or vocabulary
        if limit and top_logprobs > limit:
            raise OpenAIRequestError(f"{param} {top_logprobs} is above this server's limit of {limit}", param=param)


def task_parameters(body: Body, stops: list[str], tokens: bool, top_logprobs: int = 0) -> dict[str, Any]:
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
    values = {"max_new_tokens": max_tokens, "temperature": body.temperature, "top_p": body.top_p,
              "top_k": body.top_k, "repetition_penalty": body.repetition_penalty, "stop": stops or None,
              "return_tokens": tokens or None, "top_logprobs": top_logprobs or None}
    return {name: value for name, value in values.items() if value is not None}


def renamed(exc: InputError | LimitError, body: Body) -> OpenAIRequestError:
    """`exc` in OpenAI's terms: its message without the item index, names of OpenAI's fields, and `param`."""
    message = re.sub(r"^text\[\d+\]: ", "", str(exc))
    text_field = "messages" if isinstance(body, ChatCompletionRequest) else "prompt"
    code = exc.error_type if isinstance(exc, LimitError) else "invalid_input"
    if code == "mc_samples_above_cap":
        return OpenAIRequestError(message, param="mc_samples", code=code)
    if "texts exceed the limit" in message:
        return OpenAIRequestError(f"{body.n} choices per prompt: {message} (each choice is one item)",
                                  param="n", code=code)
    first = message.split(" ")[0].rstrip(":")
    name = next((name for name in _FIELDS if first.startswith(name)), None)
    if name is None:
        return OpenAIRequestError(message, code=code)
    field = text_field if name == "text" else _FIELDS[name]
    return OpenAIRequestError(field + message[len(name):], param=field, code=code)
