"""Request and response bodies of the OpenAI-compatible API (`/v1/*`), as pydantic models.

The field names and meanings are OpenAI's; what differs is said in the descriptions. Unknown fields are
refused (400, like OpenAI's "Unrecognized request argument"); fields OpenAI has but this server cannot
honour are accepted only at their neutral value. Extensions: `mc_samples`, `top_k` and
`repetition_penalty` in the body; `uncertainty` on each choice; `entropy` and `mutual_information`
(nats) beside each logprob entry.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas import (
    ABSTAIN_REASON,
    OOD_SCORE,
    OUT_OF_DISTRIBUTION,
    SEED_MAX,
    AbstainReason,
    SequenceUncertaintyOut,
)

_STRICT = ConfigDict(extra="forbid")


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = Field(default=False, description="Send one more chunk with `usage` before `[DONE]`.")


class _Sampling(BaseModel):
    """Fields shared by `/v1/completions` and `/v1/chat/completions`."""

    model_config = _STRICT

    model: str = Field(description="A generation model's id (see `GET /v1/models`).", examples=["generation"])
    max_tokens: int | None = Field(default=None, ge=1, description="Most tokens to generate; absent = the "
                                   "model's default; above the model's cap = 400.")
    temperature: float | None = Field(default=None, ge=0, le=2, description="0 = greedy; absent = the model's "
                                      "default (GET /models/{name} → predictor.decoding.sampling_defaults).")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling mass; absent = default.")
    stop: str | list[str] | None = Field(default=None, description="Up to 4 strings; the text ends before the "
                                         "first one produced.")
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX, description="Fixes the sampled tokens and the "
                             "dropout masks. Choice i uses seed + i (mod 2^31), so choice 0 reproduces "
                             "`POST /predict` with this seed. Absent = drawn by the server (in `uncertainty.seed`).")
    n: int = Field(default=1, ge=1, description="Choices per prompt; every choice is one item against the "
                   "server's item and queue limits.")
    stream: bool = Field(default=False, description="Server-sent `data:` chunks, then `data: [DONE]`. A choice's "
                         "logprobs and uncertainty come with its finishing chunk.")
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, description="Accepted and ignored.")
    frequency_penalty: float = Field(default=0, description="Only 0 is supported (see `repetition_penalty`).")
    presence_penalty: float = Field(default=0, description="Only 0 is supported (see `repetition_penalty`).")
    logit_bias: dict[str, float] | None = Field(default=None, description="Only empty or absent is supported.")
    mc_samples: int | None = Field(default=None, ge=0, description="Extension: Monte-Carlo dropout samples T "
                                   "for the uncertainty (0 = none); absent = the server's default; above its "
                                   "cap = 400.")
    top_k: int | None = Field(default=None, ge=0, description="Extension: top-k sampling (0 = off).")
    repetition_penalty: float | None = Field(default=None, description="Extension: CTRL repetition penalty "
                                             "(1 = off); absent = the model's default.")


class CompletionRequest(_Sampling):
    """`POST /v1/completions` body."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "generation", "prompt": "It is a truth universally acknowledged", "max_tokens": 16, "seed": 7,
         "mc_samples": 8, "logprobs": 0}]})

    prompt: str | list[str] = Field(description="One prompt or a list (choices are grouped by prompt, n each).")
    logprobs: int | None = Field(default=None, ge=0, description="Absent = no logprobs; 0 = the chosen tokens' "
                                 "logprobs (with entropy and MI); > 0 alternatives per token (top_logprobs).")
    echo: bool = Field(default=False, description="Only false is supported.")
    best_of: int | None = Field(default=None, ge=1, description="Only absent or equal to n is supported.")
    suffix: str | None = Field(default=None, description="Only absent is supported.")


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(default=None, description="Text, or text parts (joined).")
    name: str | None = Field(default=None, description="Accepted and ignored.")

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    """`POST /v1/chat/completions` body. The messages are rendered with the model's chat template, or with
    the fallback of `service.openai_format` when its tokenizer has none."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "generation", "messages": [{"role": "user", "content": "Tell me about Mr. Darcy."}],
         "max_tokens": 32, "seed": 7, "mc_samples": 8, "logprobs": True}]})

    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = Field(default=False, description="Return the chosen tokens' logprobs (with entropy and MI).")
    top_logprobs: int | None = Field(default=None, ge=0, description="Alternatives per token (needs `logprobs`).")
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Same as max_tokens (wins over it).")


# --- responses -------------------------------------------------------------------------------------------

class OpenAIError(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error or server_error.")
    param: str | None = Field(default=None, description="The request field at fault, when one is.")
    code: str | None = Field(default=None, description="This server's `error_type` (e.g. `queue_full`), or "
                             "`invalid_api_key`, `model_not_found`.")


class OpenAIErrorBody(BaseModel):
    """Every error answer on `/v1/*` (OpenAI's shape)."""

    error: OpenAIError


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the artifact was created (0 when unknown).")
    owned_by: str = "nlp-uncertainty-service"


class ModelCardList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChoiceUncertainty(BaseModel):
    """Extension on every choice: how it was sampled and the MC-dropout uncertainty of its tokens."""

    mc_samples: int = Field(description="T used for this choice (0 = no uncertainty).")
    seed: int = Field(description="Seed of this choice's tokens and dropout masks.")
    abstain: bool = Field(description="True when the prompt is out of distribution or the uncertainty passes the "
                          "model's abstain threshold (`abstain_reason` says which).")
    sequence: SequenceUncertaintyOut | None = Field(description="Sequence measures (nats); null when T = 0.")
    ood_score: float | None = Field(default=None, description=OOD_SCORE)
    out_of_distribution: bool = Field(default=False, description=OUT_OF_DISTRIBUTION)
    abstain_reason: AbstainReason | None = Field(default=None, description=ABSTAIN_REASON)


class ChatTokenLogprob(BaseModel):
    token: str
    logprob: float = Field(description="ln of the token's probability under the calibrated MC-mean "
                           "distribution (deterministic when T = 0); -9999 for 0.")
    bytes: list[int]
    top_logprobs: list[dict[str, float | str | list[int]]] = Field(default_factory=list)
    entropy: float = Field(description="Extension: predictive entropy of this step, nats.")
    mutual_information: float | None = Field(description="Extension: mutual information (epistemic), nats; "
                                             "null when T = 0.")


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] = Field(description="One per generated token (the end-of-sequence token "
                                            "and a stop string's tokens included), in order.")


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length"]
    uncertainty: ChoiceUncertainty


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str = Field(description="The artifact version that answered.")
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int]
    token_entropies: list[float] = Field(description="Extension: predictive entropy per token, nats.")
    token_mutual_information: list[float | None] = Field(description="Extension: MI per token, nats.")


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"]
    uncertainty: ChoiceUncertainty


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage
