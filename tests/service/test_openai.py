"""The OpenAI-compatible API, driven by the official `openai` client against a live server (uvicorn on
127.0.0.1) with a tiny generation model: completions, chat, streaming, logprobs, our uncertainty extension,
OpenAI's error shape, and that /v1 goes the way of /predict (same answers for the same seed, same metrics)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from service.errors import EXCEPTION_HANDLERS, QueueFullError, ServiceError
from service.openai_errors import with_openai_errors
from service.openai_format import FALLBACK_STOP, chat_prompt
from service.openai_format import uncertainty as uncertainty_extension
from service.openai_schemas import ChatMessage, ChoiceUncertainty
from tests.factories import GENERATION_CORPUS, make_tiny_generation_artifact, make_tiny_sentiment_artifact
from tests.service.conftest import parse_metrics, sample
from tests.service.live import LiveServer, live_server

KEY = "test-key"
PROMPT = "It is a truth universally"
SEQUENCE_MEASURES = {"sequence_log_prob", "mc_log_prob_mean", "mc_log_prob_var", "sequence_log_prob_per_token",
                     "mc_log_prob_mean_per_token", "mc_log_prob_var_per_token", "mean_token_entropy",
                     "mean_token_mutual_information", "max_token_mutual_information", "sampling_chrf"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("openai-artifacts")
    make_tiny_generation_artifact(root)
    make_tiny_sentiment_artifact(root)
    with live_server(root, api_key=KEY, mc_samples_cap=8, max_items_per_request=6) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> OpenAI:
    return OpenAI(api_key=KEY, base_url=f"{server.base}/v1", max_retries=0, timeout=60)


def predict(server: LiveServer, text: str, seed: int, **parameters: Any) -> dict[str, Any]:
    """The same request through POST /predict (one text, T = 3, tokens returned)."""
    body = {"task": "generation", "text": text, "mc_samples": 3, "seed": seed,
            "parameters": {"return_tokens": True, **parameters}}
    response = httpx.post(f"{server.base}/predict", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def extension(choice: Any) -> dict[str, Any]:
    """Our `uncertainty` field of a choice (the client keeps unknown fields as extras)."""
    return choice.model_extra["uncertainty"]


def test_models_lists_the_generation_models_only(client: OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["generation"]


def test_a_completion_is_the_predict_answer_with_uncertainty_per_choice(client: OpenAI, server: LiveServer) -> None:
    result = client.completions.create(model="generation", prompt=PROMPT, max_tokens=8, temperature=1.0, seed=11,
                                       extra_body={"mc_samples": 3})
    same = predict(server, PROMPT, 11, max_new_tokens=8, temperature=1.0)
    choice = result.choices[0]
    assert result.object == "text_completion" and result.model == "generation"
    assert choice.text == same["text"] and choice.finish_reason == ("length" if same["finish_reason"] == "length"
                                                                    else "stop")
    uncertainty = extension(choice)
    assert uncertainty["mc_samples"] == 3 and uncertainty["seed"] == 11 and uncertainty["abstain"] is False
    assert set(uncertainty["sequence"]) == SEQUENCE_MEASURES
    assert uncertainty["sequence"]["mean_token_entropy"] == pytest.approx(same["uncertainty"]["mean_token_entropy"])
    ood = ("ood_score", "out_of_distribution", "abstain_reason")  # the tiny model has no OOD statistics: null
    assert {k: uncertainty[k] for k in ood} == {k: same[k] for k in ood} == {k: None for k in ood} | {ood[1]: False}
    assert result.usage.completion_tokens == same["output_tokens"]
    assert result.usage.prompt_tokens == same["input_tokens"]


def test_the_uncertainty_extension_carries_the_ood_fields() -> None:
    prediction = SimpleNamespace(uncertainty=None, abstain=True, ood_score=1.7, out_of_distribution=True,
                                 abstain_reason="out_of_distribution")
    got = uncertainty_extension(prediction, 0, 5)  # type: ignore[arg-type]
    assert got == {"mc_samples": 0, "seed": 5, "abstain": True, "sequence": None, "ood_score": 1.7,
                   "out_of_distribution": True, "abstain_reason": "out_of_distribution"}
    assert ChoiceUncertainty.model_validate(got).abstain_reason == "out_of_distribution"


def test_a_chat_completion_uses_the_fallback_template_when_the_tokenizer_has_none(client: OpenAI,
                                                                                  server: LiveServer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who is Mr. Darcy?"}]
    result = client.chat.completions.create(model="generation", messages=messages, max_tokens=10, seed=3,
                                            temperature=0.9, extra_body={"mc_samples": 3})
    same = predict(server, "System: Be brief.\n\nUser: Who is Mr. Darcy?\n\nAssistant:", 3, max_new_tokens=10,
                   temperature=0.9, stop=[FALLBACK_STOP])
    choice = result.choices[0]
    assert result.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.message.content == same["text"]
    assert extension(choice)["sequence"]["mc_log_prob_var"] >= 0


def test_a_streamed_chat_joins_into_the_answer_and_ends_with_uncertainty_and_usage(client: OpenAI) -> None:
    request = {"model": "generation", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 12,
               "seed": 5, "temperature": 1.0, "extra_body": {"mc_samples": 2}}
    whole = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason is not None]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert extension(finishing[0].choices[0]) == extension(whole.choices[0])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"


def test_a_streamed_completion_with_two_choices(client: OpenAI) -> None:
    chunks = list(client.completions.create(model="generation", prompt=PROMPT, max_tokens=6, seed=8, n=2,
                                            stream=True, extra_body={"mc_samples": 2}))
    whole = client.completions.create(model="generation", prompt=PROMPT, max_tokens=6, seed=8, n=2,
                                      extra_body={"mc_samples": 2})
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == index]
        assert "".join(c.text for c in mine) == whole.choices[index].text
        assert mine[-1].finish_reason == whole.choices[index].finish_reason
        assert extension(mine[-1])["seed"] == 8 + index


def test_logprobs_come_with_per_token_entropy_and_mutual_information(client: OpenAI, server: LiveServer) -> None:
    result = client.chat.completions.create(model="generation", messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=8, seed=4, temperature=1.0, logprobs=True,
                                            extra_body={"mc_samples": 3})
    entries = result.choices[0].logprobs.content
    assert len(entries) == result.usage.completion_tokens > 0
    same = predict(server, f"User: {PROMPT}\n\nAssistant:", 4, max_new_tokens=8, temperature=1.0,
                   stop=[FALLBACK_STOP])
    for entry, token in zip(entries, same["tokens"], strict=True):
        assert entry.token == token["token"] and entry.top_logprobs == []
        assert math.exp(entry.logprob) == pytest.approx(token["probability"], rel=1e-6)
        assert entry.model_extra["entropy"] == pytest.approx(token["entropy"])
        assert entry.model_extra["mutual_information"] == pytest.approx(token["mutual_information"])
        assert entry.bytes == list(entry.token.encode())
    legacy = client.completions.create(model="generation", prompt=PROMPT, max_tokens=5, seed=4, logprobs=0,
                                       extra_body={"mc_samples": 2}).choices[0].logprobs
    assert len(legacy.tokens) == len(legacy.token_logprobs) == len(legacy.text_offset)
    assert len(legacy.model_extra["token_entropies"]) == len(legacy.tokens)
    assert all(mi >= 0 for mi in legacy.model_extra["token_mutual_information"])
    assert legacy.text_offset[0] == len(PROMPT)


def test_top_logprobs_beyond_twenty_come_from_the_distribution_of_the_chosen_token(client: OpenAI,
                                                                                  server: LiveServer) -> None:
    vocabulary = len(server.runtime.slots["generation"].predictor.tokenizer)
    messages = [{"role": "user", "content": PROMPT}]
    greedy = client.chat.completions.create(model="generation", messages=messages, max_tokens=6, seed=3,
                                            temperature=0.0, logprobs=True, top_logprobs=30,
                                            extra_body={"mc_samples": 0}).choices[0].logprobs.content
    for entry in greedy:
        alternatives = [a.logprob for a in entry.top_logprobs]
        assert len(alternatives) == 30 and alternatives == sorted(alternatives, reverse=True)
        assert sum(math.exp(v) for v in alternatives) <= 1.0 + 1e-6
        # Greedy decoding chose the most likely token: it heads its own alternatives, with the same logprob.
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-5)
    mc = client.chat.completions.create(model="generation", messages=messages, max_tokens=6, seed=3,
                                        temperature=1.0, logprobs=True, top_logprobs=vocabulary,
                                        extra_body={"mc_samples": 3}).choices[0].logprobs.content
    for entry in mc:
        # Under MC the alternatives are the MC mean distribution: the whole vocabulary sums to 1 and holds the
        # chosen token at the logprob reported for it.
        assert sum(math.exp(a.logprob) for a in entry.top_logprobs) == pytest.approx(1.0, abs=1e-3)
        chosen = [a.logprob for a in entry.top_logprobs if a.token == entry.token]
        assert any(v == pytest.approx(entry.logprob, abs=1e-4) for v in chosen)


def test_legacy_completion_logprobs_give_one_alternatives_dict_per_position(client: OpenAI) -> None:
    legacy = client.completions.create(model="generation", prompt=PROMPT, max_tokens=5, seed=4, logprobs=5,
                                       temperature=0.0, extra_body={"mc_samples": 0}).choices[0].logprobs
    assert len(legacy.top_logprobs) == len(legacy.tokens)
    for token, chosen, alternatives in zip(legacy.tokens, legacy.token_logprobs, legacy.top_logprobs, strict=True):
        assert 1 <= len(alternatives) <= 5
        assert alternatives[token] == pytest.approx(chosen, abs=1e-5)


def test_top_logprobs_above_the_limit_are_refused_with_a_clear_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="generation", messages=[{"role": "user", "content": "Hi"}],
                                       logprobs=True, top_logprobs=10_000)
    assert refused.value.status_code == 400
    assert refused.value.body["param"] == "top_logprobs" and "limit" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as above:
        client.completions.create(model="generation", prompt="Hi", logprobs=10_000)
    assert above.value.body["param"] == "logprobs" and "limit" in above.value.body["message"]


def test_a_wrong_or_missing_key_gets_openai_401(server: LiveServer) -> None:
    wrong = OpenAI(api_key="not-the-key", base_url=f"{server.base}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong.completions.create(model="generation", prompt=PROMPT, max_tokens=2)
    assert denied.value.status_code == 401
    assert denied.value.body == {"message": "missing or invalid API key", "type": "authentication_error",
                                 "param": None, "code": "invalid_api_key"}
    bare = httpx.get(f"{server.base}/v1/models")
    assert bare.status_code == 401 and set(bare.json()) == {"error"}
    assert bare.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("body", "status", "param", "code"), [
    ({"model": "nope", "prompt": "x"}, 404, "model", "model_not_found"),
    ({"model": "sentiment", "prompt": "x"}, 404, "model", "model_not_found"),
    ({"model": "generation", "prompt": "x", "max_tokens": 10_000}, 400, "max_tokens", "invalid_input"),
    ({"model": "generation", "prompt": "x", "mc_samples": 9}, 400, "mc_samples", "mc_samples_above_cap"),
    ({"model": "generation", "prompt": "x", "n": 7}, 400, "n", "limit_exceeded"),
    ({"model": "generation", "prompt": "   "}, 400, "prompt", "limit_exceeded"),
    ({"model": "generation", "prompt": "x", "presence_penalty": 0.5}, 400, "presence_penalty",
     "invalid_request_error"),
    ({"model": "generation", "prompt": "x", "temperature": 3}, 400, "temperature", "validation_error"),
    ({"model": "generation", "prompt": "x", "unknown_field": 1}, 400, "unknown_field", "validation_error"),
])
def test_refusals_come_in_openai_error_shape(server: LiveServer, body: dict[str, Any], status: int, param: str,
                                             code: str) -> None:
    response = httpx.post(f"{server.base}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


def test_v1_requests_are_counted_like_predict(client: OpenAI, server: LiveServer) -> None:
    def counted() -> float:
        return sample(parse_metrics(httpx.get(f"{server.base}/metrics").text), "nlp_requests_total",
                      task="generation", status="200")

    before = counted()
    client.completions.create(model="generation", prompt=PROMPT, max_tokens=3, extra_body={"mc_samples": 1})
    assert counted() == before + 1


def test_a_timeout_is_a_504_or_the_stream_s_last_chunk_in_openai_shape(client: OpenAI, server: LiveServer,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def timeouts() -> float:
        return sample(parse_metrics(httpx.get(f"{server.base}/metrics").text), "nlp_requests_total",
                      task="generation", status="504")

    before = timeouts()
    monkeypatch.setattr(server.runtime.settings, "request_timeout_s", 1e-6)  # read per request
    request = {"model": "generation", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8}
    with pytest.raises(openai.InternalServerError) as plain:
        client.chat.completions.create(**request)
    assert plain.value.status_code == 504
    assert plain.value.body["code"] == "timeout" and plain.value.body["type"] == "server_error"
    with pytest.raises(openai.APIError) as streamed:
        list(client.chat.completions.create(**request, stream=True))
    assert "request timeout" in streamed.value.message and streamed.value.body["code"] == "timeout"
    assert timeouts() == before + 2


def test_errors_keep_their_headers_and_get_openai_types_on_v1_only() -> None:
    handler = with_openai_errors(EXCEPTION_HANDLERS)[ServiceError]
    full = QueueFullError("queue is full", retry_after_s=1.5)
    on_v1 = handler(SimpleNamespace(scope={"path": "/v1/chat/completions"}), full)
    assert on_v1.status_code == 429 and on_v1.headers["Retry-After"] == "2"
    assert on_v1.content == {"error": {"message": "queue is full", "type": "rate_limit_error", "param": None,
                                       "code": "queue_full"}}
    elsewhere = handler(SimpleNamespace(scope={"path": "/predict"}), full)
    assert elsewhere.content == {"error": "queue is full", "error_type": "queue_full"}


def test_a_tokenizer_chat_template_is_used_when_there_is_one() -> None:
    from models.generation.model import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer(GENERATION_CORPUS, vocab_size=300)
    assert chat_prompt([ChatMessage(role="user", content="Hi")], tokenizer) == ("User: Hi\n\nAssistant:",
                                                                                 (FALLBACK_STOP,))
    tokenizer.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    messages = [ChatMessage(role="system", content=[{"type": "text", "text": "Be "}, {"type": "text", "text": "kind"}]),
                ChatMessage(role="user", content="Hi")]
    assert chat_prompt(messages, tokenizer) == ("<system>Be kind</system><user>Hi</user><assistant>", ())
