"""Generation predictor on a tiny random Llama: fields, seeds, stop strings, limits, KV cache vs recompute,
and the batched MC scoring pass against one-row-at-a-time recomputation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from models.core.artifacts import ArtifactError
from models.core.dropout import mix_seed
from models.core.predictor import InputError, MCRequest, PredictorOptions
from models.generation.decode import decode_batch
from models.generation.mc import capture_layer_input, positions_of, project, top_layers
from models.generation.predictor import GenerationPredictor
from models.generation.sampling import SamplingParams, StopText, choose_token
from tests.factories import make_tiny_generation_artifact
from tests.models.warmup import checked_warmup

PROMPTS = ["It is a truth universally", "The evening passed", "She could not help smiling at the thought of"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_generation_artifact(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def predictor(artifact: Path) -> GenerationPredictor:
    return GenerationPredictor.load(artifact, PredictorOptions(device="cpu", dtype="float32"))


def _run(p: GenerationPredictor, texts: list[str], requests: list[MCRequest], **parameters: object):
    return p.predict([p.prepare(t, dict(parameters)) for t in texts], requests)


def test_fields_are_present_and_consistent(predictor: GenerationPredictor) -> None:
    out = _run(predictor, PROMPTS, [MCRequest(4, s) for s in range(3)], max_new_tokens=8, return_tokens=True)
    for prediction in out:
        assert 1 <= prediction.output_tokens == len(prediction.tokens) <= 8
        assert prediction.finish_reason in {"eos", "length"}
        u = prediction.uncertainty
        assert u is not None and u.sequence_log_prob <= 0 and u.mc_log_prob_mean <= 0 and u.mc_log_prob_var >= 0
        assert u.max_token_mutual_information >= u.mean_token_mutual_information >= 0
        for token in prediction.tokens:
            assert 0 <= token.probability <= 1 and token.entropy >= 0 and token.mutual_information >= 0
        assert u.mean_token_entropy == pytest.approx(sum(t.entropy for t in prediction.tokens) / len(prediction.tokens))
        assert prediction.first_token_seconds is not None
        assert prediction.decode_seconds >= prediction.first_token_seconds
    deterministic = _run(predictor, PROMPTS[:1], [MCRequest(0, 0)], max_new_tokens=8, return_tokens=True)[0]
    assert deterministic.uncertainty is None and all(t.mutual_information is None for t in deterministic.tokens)


def test_seeds_reproduce_and_batches_do_not_leak(predictor: GenerationPredictor) -> None:
    params = {"max_new_tokens": 10, "temperature": 1.0, "top_p": 1.0}
    alone = _run(predictor, PROMPTS[:1], [MCRequest(4, 11)], **params)[0]
    again = _run(predictor, PROMPTS[:1], [MCRequest(4, 11)], **params)[0]
    batched = _run(predictor, PROMPTS, [MCRequest(4, 11), MCRequest(2, 5), MCRequest(0, 1)], **params)[0]
    assert alone == again
    assert batched.text == alone.text
    assert batched.uncertainty.mc_log_prob_mean == pytest.approx(alone.uncertainty.mc_log_prob_mean, abs=1e-4)
    assert batched.uncertainty.mc_log_prob_var == pytest.approx(alone.uncertainty.mc_log_prob_var, rel=1e-3, abs=1e-6)
    others = {_run(predictor, PROMPTS[:1], [MCRequest(4, seed)], **params)[0].text for seed in range(12, 16)}
    assert len(others | {alone.text}) > 1  # temperature 1 on a random model: seeds change the sample


def test_max_new_tokens_and_stop_strings(predictor: GenerationPredictor) -> None:
    greedy = _run(predictor, PROMPTS[:1], [MCRequest(0, 0)], max_new_tokens=12, temperature=0.0)[0]
    assert greedy.output_tokens == 12 and greedy.finish_reason == "length"
    stop = greedy.text[len(greedy.text) // 2:][:3]
    assert stop
    stopped = _run(predictor, PROMPTS[:1], [MCRequest(2, 0)], max_new_tokens=12, temperature=0.0, stop=[stop])[0]
    assert stopped.finish_reason == "stop" and stop not in stopped.text
    assert greedy.text.startswith(stopped.text + stop)
    assert stopped.output_tokens < 12


def test_limits_are_input_errors(predictor: GenerationPredictor) -> None:
    bad = [{"max_new_tokens": 0}, {"max_new_tokens": 10_000}, {"temperature": -1}, {"top_p": 0}, {"top_k": "3"},
           {"stop": [""]}, {"stop": ["a"] * 9}, {"beams": 2}, {"return_tokens": "yes"}]
    for parameters in bad:
        with pytest.raises(InputError):
            predictor.prepare("Hello", parameters)
    with pytest.raises(InputError, match="empty"):
        predictor.prepare("   ", {})
    with pytest.raises(InputError, match="limit"):
        predictor.prepare("word " * 500, {})


def test_streamed_pieces_join_into_the_text(predictor: GenerationPredictor) -> None:
    pieces: list[str] = []
    request = MCRequest(2, 3, text_sink=pieces.append)
    out = _run(predictor, PROMPTS[:1], [request], max_new_tokens=10, temperature=1.0)[0]
    assert len(pieces) >= 1 and "".join(pieces) == out.text
    greedy = _run(predictor, PROMPTS[:1], [MCRequest(0, 0)], max_new_tokens=12, temperature=0.0)[0]
    stop = greedy.text[4:7]
    pieces.clear()
    stopped = _run(predictor, PROMPTS[:1], [MCRequest(0, 0, text_sink=pieces.append)], max_new_tokens=12,
                   temperature=0.0, stop=[stop])[0]
    assert "".join(pieces) == stopped.text and stop not in "".join(pieces)


def test_kv_cache_equals_full_recomputation(predictor: GenerationPredictor) -> None:
    ids = [predictor.tokenizer(t, add_special_tokens=False)["input_ids"] for t in PROMPTS]
    params = [SamplingParams(max_new_tokens=9, temperature=1.0, top_k=50, repetition_penalty=1.2)] * 3
    with torch.inference_mode():
        runs = [decode_batch(predictor.model, predictor.tokenizer, ids, params, [1, 2, 3], eos_ids=frozenset({-1}),
                             pad_id=predictor.pad_id, use_cache=cache, capture_layer=1) for cache in (True, False)]
    cached, full = runs
    for a, b in zip(cached.rows, full.rows, strict=True):
        assert a.tokens == b.tokens and len(a.tokens) == 9
        assert torch.allclose(torch.tensor(a.log_probs), torch.tensor(b.log_probs), atol=1e-4)
    assert torch.allclose(cached.hidden, full.hidden, atol=1e-4)


def test_top_layers_without_dropout_equal_the_model(predictor: GenerationPredictor) -> None:
    model = predictor.model
    ids = torch.tensor([predictor.tokenizer(PROMPTS[2], add_special_tokens=False)["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for layer in range(model.config.num_hidden_layers):
            with capture_layer_input(model, layer) as chunks:
                reference = model(input_ids=ids, attention_mask=mask, position_ids=positions_of(mask)).logits
            top = top_layers(model, chunks[0], mask, [None], [1], model.config.num_hidden_layers - layer)
            mine = project(model, top)
            assert torch.allclose(mine, reference, atol=1e-4), layer


def test_scoring_pass_equals_one_row_at_a_time(predictor: GenerationPredictor) -> None:
    # Batched scoring of several items with T rows each == each (item, sample) recomputed alone, unpadded.
    items = [predictor.prepare(t, {"max_new_tokens": 6, "temperature": 0.0}) for t in PROMPTS]
    requests = [MCRequest(3, 7), MCRequest(2, 8), MCRequest(3, 9)]
    model, k = predictor.model, predictor.last_k
    with torch.inference_mode():
        result = decode_batch(model, predictor.tokenizer, [i.input_ids for i in items],
                              [i.parameters["sampling"] for i in items], [0, 0, 0], eos_ids=frozenset({-1}),
                              pad_id=predictor.pad_id, capture_layer=model.config.num_hidden_layers - k)
        batched = predictor._score(result, [0, 1, 2], requests)
        for i, item in enumerate(items):
            tokens = result.rows[i].tokens
            sequence = torch.tensor([[*item.input_ids, *tokens[:-1]]])
            mask = torch.ones_like(sequence)
            with capture_layer_input(model, model.config.num_hidden_layers - k) as chunks:
                model(input_ids=sequence, attention_mask=mask, position_ids=positions_of(mask))
            for t in range(requests[i].mc_samples):
                states = top_layers(model, chunks[0], mask, [mix_seed(requests[i].seed, t)], [1], k)
                start = len(item.input_ids) - 1
                alone = torch.log_softmax(project(model, states[0, start: start + len(tokens)]), dim=-1)
                assert torch.allclose(batched[i][t], alone, atol=1e-4), (i, t)
    assert not torch.allclose(batched[0][0], batched[0][1])  # dropout rows differ


def test_sampling_helpers() -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0])
    assert choose_token(logits, SamplingParams(5), torch.tensor([], dtype=torch.long), None) == 0
    penalised = SamplingParams(5, repetition_penalty=4.0)  # seen token 0: 2.0 / 4 = 0.5 < 1.0
    assert choose_token(logits, penalised, torch.tensor([0]), None) == 1
    # a negative logit is multiplied: -0.5 * 2 = -1.0 falls below -0.6
    doubled = SamplingParams(5, repetition_penalty=2.0)
    assert choose_token(torch.tensor([-0.5, -0.6]), doubled, torch.tensor([0]), None) == 1
    g = torch.Generator().manual_seed(0)
    top1 = SamplingParams(5, temperature=1.0, top_k=1)
    assert {choose_token(logits, top1, torch.tensor([], dtype=torch.long), g) for _ in range(20)} == {0}
    nucleus = SamplingParams(5, temperature=1.0, top_p=0.5)
    assert {choose_token(logits, nucleus, torch.tensor([], dtype=torch.long), g) for _ in range(20)} == {0}
    # a vanishing temperature (a fuzzer sent 5.8e-187) is greedy, not NaN probabilities; ties still sample
    for tiny in (5.8e-187, 1e-30):
        cold = SamplingParams(5, temperature=tiny)
        assert {choose_token(logits, cold, torch.tensor([], dtype=torch.long), g) for _ in range(20)} == {0}
    tied = torch.tensor([3.0, 3.0, -1.0])
    cold = SamplingParams(5, temperature=1e-30)
    assert {choose_token(tied, cold, torch.tensor([], dtype=torch.long), g) for _ in range(40)} == {0, 1}
    stop = StopText(("END",))
    assert stop.find("abcENDx") == 3 and stop.find("abc") is None
    assert stop.safe_length("abcEN", finished=False) == 3 and stop.safe_length("abcEN", finished=True) == 5
    assert stop.safe_length("abc\ufffd", finished=False) == 3


def test_load_refuses_wrong_task_and_dead_dropout(tmp_path: Path) -> None:
    dead = make_tiny_generation_artifact(tmp_path / "dead", dropout=0.0)
    with pytest.raises(ArtifactError, match="no active dropout"):
        GenerationPredictor.load(dead, PredictorOptions(device="cpu", dtype="float32"))


def test_describe_reports_memory_and_mc(predictor: GenerationPredictor) -> None:
    facts = predictor.describe()
    assert facts["memory"]["parameter_bytes"] == 4 * facts["parameters"]
    assert facts["memory"]["process_rss_bytes"] > facts["memory"]["parameter_bytes"]
    assert facts["mc"]["live_sites"] == ["hidden"] and facts["decoding"]["kv_cache"] is True


def test_warmup_predicts_deterministically_and_with_mc(predictor: GenerationPredictor,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    item, (det, mc) = checked_warmup(predictor, monkeypatch)
    assert item.parameters["return_tokens"], "the warm-up also builds the token table"
    for out in (det, mc):
        assert out.tokens is not None and 1 <= len(out.tokens) == out.output_tokens
        assert out.first_token_seconds is not None, "the warm-up decoded through the streaming path"
    assert mc.uncertainty.mc_log_prob_var > 0, "the MC half ran with live dropout"


def test_score_is_the_serving_scoring_pass(predictor: GenerationPredictor) -> None:
    plain = {"max_new_tokens": 6, "temperature": 0.0, "repetition_penalty": 1.0}  # the argmax at every step
    items = [predictor.prepare(t, plain) for t in PROMPTS]
    requests = [MCRequest(3, 21 + i) for i in range(len(items))]
    served = predictor.predict(items, requests)
    scored = predictor.score([item.input_ids for item in items], [p.output_ids for p in served], requests)
    for p, s in zip(served, scored, strict=True):
        assert len(p.output_ids) == p.output_tokens and s.abstain == p.abstain
        # one teacher-forced forward instead of the KV-cache decode: equal up to float rounding
        for name, value in dataclasses.asdict(p.uncertainty).items():
            if value is not None:
                assert getattr(s.uncertainty, name) == pytest.approx(value, rel=1e-3, abs=1e-5), name
        assert s.det_top == list(p.output_ids) and s.det_top_log_probs == pytest.approx(s.det_log_probs, abs=1e-5)
        assert tuple(s.mc_log_probs.shape) == (3, p.output_tokens, len(predictor.tokenizer))
    (det,) = predictor.score([items[0].input_ids], [served[0].output_ids], [MCRequest(0, 0)])
    assert det.mc_log_probs is None and det.uncertainty is None


def test_one_sample_is_served_as_deterministic(predictor: GenerationPredictor) -> None:
    one, zero = _run(predictor, PROMPTS[:1] * 2, [MCRequest(1, 4), MCRequest(0, 4)], max_new_tokens=5,
                     return_tokens=True)
    assert one.uncertainty is None and one.abstain is False and one.text == zero.text
    assert all(t.mutual_information is None for t in one.tokens)


def test_top_logprobs_are_the_k_most_likely_tokens_of_the_reported_distribution(predictor: GenerationPredictor) -> None:
    vocabulary = len(predictor.tokenizer)
    with pytest.raises(InputError, match="top_logprobs"):
        predictor.prepare("Hello", {"top_logprobs": vocabulary + 1})
    item = predictor.prepare("It is a truth", {"max_new_tokens": 5, "temperature": 0.0, "top_logprobs": vocabulary})
    deterministic, mc = predictor.predict([item, item], [MCRequest(0, 1), MCRequest(4, 1)])
    for prediction in (deterministic, mc):
        assert prediction.tokens is not None  # asking for alternatives asks for the token table
        for token in prediction.tokens:
            values = [a.logprob for a in token.top_logprobs]
            assert len(values) == vocabulary and values == sorted(values, reverse=True)
            assert sum(torch.tensor(values, dtype=torch.float64).exp()) == pytest.approx(1.0, abs=1e-3)
    for token in deterministic.tokens:  # greedy: the chosen token heads its alternatives at its own probability
        assert token.top_logprobs[0].token == token.token
        assert token.top_logprobs[0].logprob == pytest.approx(torch.tensor(token.probability).log().item(), abs=1e-5)
    plain = predictor.predict([predictor.prepare("It is a truth", {"max_new_tokens": 5, "return_tokens": True})],
                              [MCRequest(0, 1)])[0]
    assert all(t.top_logprobs is None for t in plain.tokens)
