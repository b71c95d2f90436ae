"""Translation between OpenAI's wire format and the service's own: chat prompts in, choices and chunks out.

Chat prompt: the model's chat template (`tokenizer.apply_chat_template(..., add_generation_prompt=True)`)
when its tokenizer has one. Otherwise the fallback template below: one paragraph per message,
`"<Role>: <content>\\n\\n"` with Role System (also for `developer`), User, Assistant or Tool, then
`"Assistant:"`; the stop string `"\\nUser:"` is added (when the request leaves room among its 4 stops) so
the model does not write the user's next turn.

Choices: `finish_reason` is `stop` for the service's `eos` and `stop`, `length` for `length`. A logprob is
ln of the token's probability as `POST /predict` reports it (MC mean of the calibrated distribution; the
deterministic one when T = 0); each entry carries the token's entropy and mutual information (nats).
Logprobs cover every generated token, the end-of-sequence token and a stop string's tokens included, so
their count is `usage.completion_tokens`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.openai_errors import OpenAIRequestError
from service.openai_schemas import ChatMessage
from service.schemas import GenerationPredictionOut, PredictResponse

FALLBACK_ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant",
                  "tool": "Tool"}
FALLBACK_STOP = "\nUser:"
MAX_STOPS = 4  # OpenAI's limit, and the generation predictor's
_FINISH = {"eos": "stop", "stop": "stop", "length": "length"}
_NEG_INF_LOGPROB = -9999.0  # what OpenAI reports for a probability of 0 (JSON has no -inf)


def chat_prompt(messages: Sequence[ChatMessage], tokenizer: Any) -> tuple[str, tuple[str, ...]]:
    """The prompt text of `messages` and the stop strings its template needs (module docstring)."""
    if getattr(tokenizer, "chat_template", None):
        plain = [{"role": m.role, "content": m.text()} for m in messages]
        try:
            text = tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # a template that rejects the conversation (e.g. roles must alternate)
            raise OpenAIRequestError(f"the model's chat template refused the messages: {exc}",
                                     param="messages") from exc
        return str(text), ()
    text = "".join(f"{FALLBACK_ROLES[m.role]}: {m.text()}\n\n" for m in messages) + "Assistant:"
    return text, (FALLBACK_STOP,)


def merge_stops(stop: str | list[str] | None, extra: tuple[str, ...]) -> list[str]:
    """The request's stop strings plus the template's, as long as there is room among the 4."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS:
        raise OpenAIRequestError(f"stop: at most {MAX_STOPS} strings", param="stop")
    for candidate in extra:
        if candidate not in stops and len(stops) < MAX_STOPS:
            stops.append(candidate)
    return stops


def logprob(probability: float) -> float:
    return math.log(probability) if probability > 0 else _NEG_INF_LOGPROB


@dataclass(frozen=True)
class Envelope:
    """The fields every response and chunk repeats."""

    id: str
    created: int
    model: str
    fingerprint: str

    def head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": self.fingerprint}


def uncertainty(prediction: GenerationPredictionOut, mc_samples: int, seed: int) -> dict[str, Any]:
    sequence = prediction.uncertainty.model_dump() if prediction.uncertainty is not None else None
    return {"mc_samples": mc_samples, "seed": seed, "abstain": prediction.abstain, "sequence": sequence,
            "ood_score": prediction.ood_score, "out_of_distribution": prediction.out_of_distribution,
            "abstain_reason": prediction.abstain_reason}


def chat_logprobs(prediction: GenerationPredictionOut) -> dict[str, Any] | None:
    if prediction.tokens is None:
        return None
    return {"content": [{"token": t.token, "logprob": logprob(t.probability), "bytes": list(t.token.encode()),
                         "top_logprobs": [{"token": a.token, "logprob": a.logprob, "bytes": list(a.token.encode())}
                                          for a in t.top_logprobs or ()],
                         "entropy": t.entropy, "mutual_information": t.mutual_information}
                        for t in prediction.tokens]}


def completion_logprobs(prediction: GenerationPredictionOut, offset: int) -> dict[str, Any] | None:
    if prediction.tokens is None:
        return None
    offsets = []
    for token in prediction.tokens:
        offsets.append(offset)
        offset += len(token.token)
    return {"tokens": [t.token for t in prediction.tokens],
            "token_logprobs": [logprob(t.probability) for t in prediction.tokens],
            # OpenAI's legacy shape: one {token: logprob} dict per position (alternatives sharing a text keep the
            # most likely, as a dict can hold a text once).
            "top_logprobs": ([{a.token: a.logprob for a in reversed(t.top_logprobs or ())} for t in prediction.tokens]
                             if any(t.top_logprobs for t in prediction.tokens) else None),
            "text_offset": offsets,
            "token_entropies": [t.entropy for t in prediction.tokens],
            "token_mutual_information": [t.mutual_information for t in prediction.tokens]}


@dataclass(frozen=True)
class Choices:
    """How a response's choices map onto the request: `prompts[i]` is choice i's prompt, `seeds[i]` its seed,
    `n` choices per prompt; `chat` selects the chat format."""

    prompts: list[str]
    seeds: list[int]
    n: int
    chat: bool
    include_usage: bool = False

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    def usage(self, body: PredictResponse) -> dict[str, int]:
        predictions: list[Any] = body.predictions
        prompt = sum(p.input_tokens for p in predictions[:: self.n])  # each prompt counted once, as OpenAI does
        completion = sum(p.output_tokens for p in predictions)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def final(self, index: int, body: PredictResponse) -> dict[str, Any]:
        """Choice `index` of a finished response, without its text (the caller adds message or text)."""
        prediction: Any = body.predictions[index]
        logprobs = (chat_logprobs(prediction) if self.chat
                    else completion_logprobs(prediction, len(self.prompts[index])))
        return {"index": index, "logprobs": logprobs, "finish_reason": _FINISH[prediction.finish_reason],
                "uncertainty": uncertainty(prediction, body.mc_samples, self.seeds[index])}

    def response(self, envelope: Envelope, body: PredictResponse) -> dict[str, Any]:
        """The whole (non-streamed) response body."""
        choices = []
        for index, prediction in enumerate(body.predictions):
            text: str = prediction.text  # type: ignore[union-attr]
            content = {"message": {"role": "assistant", "content": text}} if self.chat else {"text": text}
            choices.append({**self.final(index, body), **content})
        return {**envelope.head(self.object), "choices": choices, "usage": self.usage(body)}

    # --- stream chunks ------------------------------------------------------------------------------
    def _chunk(self, envelope: Envelope, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {**envelope.head("chat.completion.chunk" if self.chat else "text_completion"), "choices": choices}

    def opening(self, envelope: Envelope) -> list[dict[str, Any]]:
        """Chunks before any text: the assistant role of every chat choice (none for completions)."""
        if not self.chat:
            return []
        return [self._chunk(envelope, [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                        "finish_reason": None}]) for i in range(len(self.prompts))]

    def piece(self, envelope: Envelope, index: int, text: str) -> dict[str, Any]:
        delta = {"delta": {"content": text}} if self.chat else {"text": text}
        return self._chunk(envelope, [{"index": index, **delta, "logprobs": None, "finish_reason": None}])

    def closing(self, envelope: Envelope, body: PredictResponse) -> list[dict[str, Any]]:
        """One finishing chunk per choice (finish_reason, logprobs, uncertainty), then usage if asked."""
        empty = {"delta": {}} if self.chat else {"text": ""}
        chunks = [self._chunk(envelope, [{**self.final(i, body), **empty}]) for i in range(len(body.predictions))]
        if self.include_usage:
            chunks.append({**self._chunk(envelope, []), "usage": self.usage(body)})
        return chunks
