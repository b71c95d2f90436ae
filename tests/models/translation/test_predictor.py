"""TranslationPredictor on the tiny (untrained) artifact: parameters, limits, batching, seeds, modes."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from models.core.artifacts import ArtifactError
from models.core.predictor import InputError, MCRequest, Predictor, PredictorOptions, TranslationPrediction
from models.registry import load_predictor
from models.translation.predictor import TranslationPredictor
from tests import factories
from tests.models.warmup import checked_warmup

TEXTS = ["The king saw the bread.", "The woman ate the fish in the house with the child.", "Love is patient."]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return factories.make_tiny_translation_artifact(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def predictor(artifact: Path) -> TranslationPredictor:
    loaded = load_predictor(artifact, PredictorOptions())
    assert isinstance(loaded, TranslationPredictor) and isinstance(loaded, Predictor)
    return loaded


def test_parameters_are_validated(predictor: TranslationPredictor) -> None:
    item = predictor.prepare(TEXTS[0], {})
    assert item.parameters == {"max_new_tokens": 12, "num_beams": 1, "uncertainty_mode": "scoring",
                               "return_tokens": False}
    assert item.input_ids[-1] == 2 and item.n_tokens == len(item.input_ids)
    for bad in ({"max_new_tokens": 25}, {"max_new_tokens": 0}, {"max_new_tokens": "5"}, {"max_new_tokens": True},
                {"num_beams": 9}, {"uncertainty_mode": "dreaming"}, {"return_tokens": "yes"}, {"temperature": 0.7}):
        with pytest.raises(InputError):
            predictor.prepare(TEXTS[0], bad)
    with pytest.raises(InputError, match="over the translation limit"):
        predictor.prepare("the king " * 40, {})
    with pytest.raises(InputError):
        predictor.prepare("   ", {})


def test_batch_key_groups_equal_decoding_parameters(predictor: TranslationPredictor) -> None:
    a, b = predictor.prepare(TEXTS[0], {"return_tokens": True}), predictor.prepare(TEXTS[1], {})
    c = predictor.prepare(TEXTS[0], {"num_beams": 2})
    assert predictor.batch_key(a) == predictor.batch_key(b) != predictor.batch_key(c)
    with pytest.raises(ValueError, match="mixes"):
        predictor.predict([a, c], [MCRequest(0, 0)] * 2)
    assert predictor.cost(a, MCRequest(8, 0)) > predictor.cost(a, MCRequest(0, 0)) >= a.n_tokens


def test_deterministic_prediction(predictor: TranslationPredictor) -> None:
    item = predictor.prepare(TEXTS[0], {"return_tokens": True})
    one, two = (predictor.predict([item], [MCRequest(0, s)])[0] for s in (1, 2))
    assert isinstance(one, TranslationPrediction) and one == two
    assert one.uncertainty is None and one.abstain is False
    assert one.tokens is not None and len(one.tokens) == one.output_tokens
    assert all(t.mutual_information is None and 0 <= t.probability <= 1 for t in one.tokens)
    assert one.finish_reason in {"eos", "length"} and 1 <= one.output_tokens <= 12
    # Greedy decoding picks the most probable token, so its probability is at least 1/V.
    assert all(t.probability >= 1 / len(predictor.tokenizer) - 1e-9 for t in one.tokens)


def test_mc_prediction_fields_seeds_and_batch_independence(predictor: TranslationPredictor) -> None:
    items = [predictor.prepare(t, {"return_tokens": True}) for t in TEXTS]
    requests = [MCRequest(5, 3), MCRequest(0, 3), MCRequest(3, 4)]
    batch = predictor.predict(items, requests)
    first = batch[0]
    u = first.uncertainty
    assert u is not None and u.sampling_chrf is None
    assert u.sequence_log_prob <= 0 and u.mc_log_prob_mean <= 0 and u.mc_log_prob_var >= 0
    assert 0 <= u.mean_token_mutual_information <= u.max_token_mutual_information
    assert u.mean_token_entropy <= math.log(len(predictor.tokenizer)) + 1e-6
    assert first.tokens is not None and len(first.tokens) == first.output_tokens
    assert all(0 <= t.probability <= 1 and t.mutual_information is not None and t.mutual_information >= 0
               for t in first.tokens)
    assert batch[1].uncertainty is None
    # Same item, seed and T alone: the same prediction (masks are per item, not per batch).
    for item, request, got in zip(items, requests, batch, strict=True):
        alone = predictor.predict([item], [request])[0]
        assert alone.translation == got.translation
        if got.uncertainty is not None:
            for name, value in dataclasses.asdict(got.uncertainty).items():
                if value is not None:
                    assert getattr(alone.uncertainty, name) == pytest.approx(value, rel=1e-4, abs=1e-6)
    again = predictor.predict([items[0]], [MCRequest(5, 3)])[0]
    other = predictor.predict([items[0]], [MCRequest(5, 4)])[0]
    assert again.uncertainty is not None
    assert again.uncertainty.mc_log_prob_mean == pytest.approx(u.mc_log_prob_mean, abs=1e-5)
    assert other.uncertainty is not None and other.uncertainty.mc_log_prob_mean != u.mc_log_prob_mean


def test_sampling_mode_and_beam_search(predictor: TranslationPredictor) -> None:
    item = predictor.prepare(TEXTS[0], {"uncertainty_mode": "sampling", "max_new_tokens": 6})
    first, second = (predictor.predict([item], [MCRequest(3, 9)])[0] for _ in range(2))
    assert first.uncertainty is not None and 0 <= first.uncertainty.sampling_chrf <= 1
    assert first == second


def _until_eos(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


def _library_greedy(predictor: TranslationPredictor, text: str, max_new_tokens: int) -> list[int]:
    """Greedy decoding written out: the argmax of the library's eval forward, one token at a time."""
    model, src = predictor.model, torch.tensor([predictor.tokenizer(text)["input_ids"]])
    out = [predictor.start_id]
    with torch.inference_mode():
        while len(out) <= max_new_tokens and out[-1] != predictor.eos_id:
            out.append(int(model(input_ids=src, decoder_input_ids=torch.tensor([out])).logits[0, -1].argmax()))
    return out[1:]


def _library_beam(predictor: TranslationPredictor, text: str, num_beams: int, max_new_tokens: int) -> list[int]:
    src = torch.tensor([predictor.tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        out = predictor.model.generate(input_ids=src, num_beams=num_beams, do_sample=False,
                                       max_new_tokens=max_new_tokens, forced_eos_token_id=None)
    return _until_eos(out[0, 1:].tolist(), predictor.eos_id)


def _library_log_prob(predictor: TranslationPredictor, text: str, output: list[int]) -> float:
    """Σ log p(y_j) of `output` under the library's eval forward (teacher-forced, τ = 1)."""
    src = torch.tensor([predictor.tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        logits = predictor.model(input_ids=src, decoder_input_ids=torch.tensor([[predictor.start_id, *output[:-1]]]))
    log_probs = torch.log_softmax(logits.logits[0].double(), dim=-1)
    return float(log_probs[torch.arange(len(output)), torch.tensor(output)].sum())


def test_one_beam_is_greedy_and_beams_are_the_library_beam_search(predictor: TranslationPredictor) -> None:
    n, decode = 8, predictor.tokenizer.decode
    greedy = [_library_greedy(predictor, text, n) for text in TEXTS]
    beam = [_library_beam(predictor, text, 3, n) for text in TEXTS]
    assert greedy != beam, "these inputs must tell 3 beams from 1, or the comparison below proves nothing"
    assert all(greedy) and all(beam)
    for beams, expected in ((1, greedy), (3, beam)):
        # One padded batch of different lengths, scored under MC: the decode is still each input's own.
        items = [predictor.prepare(text, {"num_beams": beams, "max_new_tokens": n}) for text in TEXTS]
        outs = predictor.predict(items, [MCRequest(2, i) for i in range(len(items))])
        for text, out, tokens in zip(TEXTS, outs, expected, strict=True):
            assert out.translation == decode(tokens, skip_special_tokens=True)
            assert out.output_tokens == len(tokens)
            assert out.finish_reason == ("eos" if tokens[-1] == predictor.eos_id else "length")
            # The scored sequence is the decoded one: its TP is the library's log-probability of those tokens.
            assert out.uncertainty is not None
            assert out.uncertainty.sequence_log_prob == pytest.approx(_library_log_prob(predictor, text, tokens),
                                                                      abs=1e-4)


def test_options_manifest_and_abstain(artifact: Path, tmp_path: Path) -> None:
    p = TranslationPredictor.load(artifact, PredictorOptions(mc_last_k=1, max_input_tokens=10))
    info = p.describe()
    assert info["mc"]["last_k"] == 1 and info["max_input_tokens"] == 10 and info["mc"]["live_sites"] == ["hidden"]
    with pytest.raises(InputError):
        p.prepare(TEXTS[1], {})
    strict = factories.make_tiny_translation_artifact(
        tmp_path, calibration={"temperature": 2.0, "abstain": {"measure": "mean_token_entropy", "threshold": 0.1}})
    q = TranslationPredictor.load(strict, PredictorOptions())
    out = q.predict([q.prepare(TEXTS[0], {})], [MCRequest(2, 0)])[0]
    assert q.calibration.temperature == 2.0 and out.abstain is True
    assert q.predict([q.prepare(TEXTS[0], {})], [MCRequest(0, 0)])[0].abstain is False


def test_load_refuses_wrong_task_and_dead_dropout(tmp_path: Path) -> None:
    sentiment = factories.make_tiny_sentiment_artifact(tmp_path / "s")
    with pytest.raises(ArtifactError, match="not 'translation'"):
        TranslationPredictor.load(sentiment, PredictorOptions())
    dead = factories.make_tiny_translation_artifact(tmp_path / "t", dropout=0.0)
    with pytest.raises(ArtifactError, match="no active dropout"):
        TranslationPredictor.load(dead, PredictorOptions())


def test_warmup_predicts_deterministically_and_with_mc(predictor: TranslationPredictor,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    item, (det, mc) = checked_warmup(predictor, monkeypatch)
    assert item.parameters["return_tokens"], "the warm-up also builds the token table"
    assert det.tokens is not None and mc.tokens is not None and len(mc.tokens) == mc.output_tokens >= 1
    assert det.translation == mc.translation, "MC scores the deterministic decode, it does not change it"
    assert mc.uncertainty.mc_log_prob_var > 0, "the MC half ran with live dropout"


def test_score_is_the_serving_scoring_pass(predictor: TranslationPredictor) -> None:
    items = [predictor.prepare(t, {}) for t in TEXTS]
    requests = [MCRequest(4, 11 + i) for i in range(len(items))]
    served = predictor.predict(items, requests)
    scored = predictor.score([item.input_ids for item in items], [p.output_ids for p in served], requests)
    vocab = len(predictor.tokenizer)
    for p, s in zip(served, scored, strict=True):
        assert len(p.output_ids) == p.output_tokens >= 1
        assert s.uncertainty is not None and s.abstain == p.abstain
        for name, value in dataclasses.asdict(p.uncertainty).items():
            if value is not None:
                assert getattr(s.uncertainty, name) == pytest.approx(value, rel=1e-4, abs=1e-6), name
        assert tuple(s.mc_log_probs.shape) == (4, p.output_tokens, vocab)
        assert sum(s.det_log_probs) == pytest.approx(p.uncertainty.sequence_log_prob, abs=1e-4)
        # greedy decoding: each output token is the deterministic argmax, so its log-probability is the top one
        assert s.det_top == list(p.output_ids) and s.det_top_log_probs == pytest.approx(s.det_log_probs, abs=1e-5)
        assert all(0 <= h <= math.log(vocab) + 1e-6 for h in s.det_entropies)
    (plain,) = predictor.score([items[0].input_ids], [served[0].output_ids], [MCRequest(0, 0)])
    assert plain.mc_log_probs is None and plain.uncertainty is None and plain.abstain is False


def test_one_sample_is_served_as_deterministic(predictor: TranslationPredictor) -> None:
    item = predictor.prepare(TEXTS[1], {"return_tokens": True})
    one, zero = predictor.predict([item, item], [MCRequest(1, 5), MCRequest(0, 5)])
    assert one.uncertainty is None and one.abstain is False and one == zero
    assert all(t.mutual_information is None for t in one.tokens)
    (scored,) = predictor.score([item.input_ids], [one.output_ids], [MCRequest(1, 5)])
    assert scored.uncertainty is None and scored.mc_log_probs is None


def test_describe_names_decoder_full_mc(artifact: Path) -> None:
    full = TranslationPredictor.load(artifact, PredictorOptions()).describe()["mc"]
    assert full["mode"] == "decoder-full" and "encoder runs once" in full["scope"]


def test_whole_model_mc_through_the_predictor(artifact: Path) -> None:
    # The tiny artifact: 1 encoder + 2 decoder layers, its manifest's last-k 2 (decoder-full). num_layers counts both.
    full = TranslationPredictor.load(artifact, PredictorOptions())
    whole = TranslationPredictor.load(artifact, PredictorOptions(mc_last_k=3))
    assert full.num_layers == whole.num_layers == 3 and full.last_k == 2
    facts = whole.describe()
    assert facts["num_layers"] == {"encoder": 1, "decoder": 2} and facts["mc"]["mode"] == "whole-model"
    assert facts["mc"]["scope"].startswith("encoder and decoder")
    items = [whole.prepare(t, {"uncertainty_mode": "sampling"}) for t in TEXTS]
    requests = [MCRequest(3, 7 + i) for i in range(len(items))]
    a, b = whole.predict(items, requests), whole.predict(items, requests)
    assert a == b, "seeded whole-model MC reproduces"
    decoder_only = full.predict(items, requests)
    assert [p.translation for p in a] == [p.translation for p in decoder_only], "MC never changes the decode"
    assert all(p.uncertainty is not None and p.uncertainty.sampling_chrf is not None for p in a)
    assert [p.uncertainty.mc_log_prob_mean for p in a] != [p.uncertainty.mc_log_prob_mean for p in decoder_only]
    # The encoder's rows cost: the whole model admits less per batch than decoder-full.
    assert whole.cost(items[1], MCRequest(8, 0)) > full.cost(items[1], MCRequest(8, 0))
    assert whole.cost(items[1], MCRequest(0, 0)) == full.cost(items[1], MCRequest(0, 0))
