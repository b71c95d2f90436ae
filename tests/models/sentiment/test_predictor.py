"""The sentiment predictor through its protocol: fields, order, seeds, calibration, abstain, limits."""

import json
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from models.core.artifacts import ArtifactError
from models.core.predictor import InputError, MCRequest, Predictor, PredictorOptions
from models.registry import load_predictor
from tests.factories import LABELS, make_tiny_sentiment_artifact
from tests.models.warmup import checked_warmup


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    art = make_tiny_sentiment_artifact(tmp_path_factory.mktemp("art"), num_layers=3, mc_last_k=1)
    return load_predictor(art, PredictorOptions(dtype="float32"))


def test_satisfies_protocol_and_describes_itself(predictor) -> None:
    assert isinstance(predictor, Predictor)
    info = predictor.describe()
    assert info["mc"]["last_k"] == 1 and info["mc"]["mode"] == "last-1-layers"
    assert info["mc"]["live_sites"] == ["head", "hidden"]
    assert info["max_input_tokens"] == 64
    assert info["calibration"] == {"temperature": 1.0, "deterministic_temperature": 1.0,
                                   "abstain_measure": "predictive_entropy", "abstain_threshold": 0.69}
    assert info["truncation"] == {"policy": "head+tail", "head_tokens": 16} and info["labels"] == LABELS
    assert info["mc"]["dropout_rates"] == {"hidden": 0.1, "attention": 0.1, "head": 0.1}


def test_prediction_fields_and_order(predictor) -> None:
    texts = ["a wonderful film", "terrible and boring", "an average movie with some good moments"]
    items = [predictor.prepare(t, {}) for t in texts]
    out = predictor.predict(items, [MCRequest(8, i) for i in range(3)])
    assert len(out) == 3
    for item, pred in zip(items, out, strict=True):
        assert pred.label in ("negative", "positive")
        assert math.isclose(sum(pred.probabilities.values()), 1.0, rel_tol=1e-6)
        assert pred.confidence == max(pred.probabilities.values())
        u = pred.uncertainty
        assert u is not None and 0 <= u.mutual_information <= u.predictive_entropy <= math.log(2) + 1e-9
        assert pred.input_tokens == item.n_tokens
    # Order: each item alone gives the same answer as in the batch.
    alone = predictor.predict([items[2]], [MCRequest(8, 2)])[0]
    assert alone.probabilities == pytest.approx(out[2].probabilities, rel=1e-4)


def test_seed_reproduces_and_t0_is_deterministic(predictor) -> None:
    item = predictor.prepare("I loved every minute", {})
    a, b, c = predictor.predict([item] * 3, [MCRequest(10, 5), MCRequest(10, 5), MCRequest(10, 6)])
    assert a.uncertainty == b.uncertainty
    assert a.uncertainty != c.uncertainty
    # T = 0 ignores the seed. Each in a batch of its own: rows of one batch may differ in the last float bits
    # (the GEMM kernel's blocking by row position; seen once in seven full runs on an AMX CPU), not the seed.
    (d,), (e,) = predictor.predict([item], [MCRequest(0, 1)]), predictor.predict([item], [MCRequest(0, 2)])
    assert d == e and d.uncertainty is None and d.abstain is False


def test_the_fast_path_gives_the_same_answers_when_two_threads_predict_at_once(predictor) -> None:
    # The service runs concurrent batches only on predictors that say they may (`concurrent_batches`).
    assert predictor.concurrent_batches
    texts = ["a wonderful film", "terrible and boring", "an average movie with some good moments", "fine"]
    batches = [[predictor.prepare(t, {}) for t in texts[:2]], [predictor.prepare(t, {}) for t in texts[2:]]]
    requests = [[MCRequest(6, 11), MCRequest(0, 12)], [MCRequest(6, 13), MCRequest(3, 14)]]
    alone = [predictor.predict(b, r) for b, r in zip(batches, requests, strict=True)]
    for _ in range(5):  # interleavings vary; every one must give the sequential answers
        with ThreadPoolExecutor(max_workers=2) as pool:
            together = list(pool.map(predictor.predict, batches, requests))
        assert together == alone


def test_long_input_is_head_tail_truncated(predictor) -> None:
    item = predictor.prepare("start " + "middle " * 500 + "finale", {})
    assert item.truncated and item.n_tokens == 64
    kept = predictor.tokenizer.decode(list(item.input_ids), skip_special_tokens=True)
    assert kept.startswith("start middle") and kept.endswith("middle finale")
    short = predictor.prepare("start middle finale", {})
    assert not short.truncated


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_text_is_an_input_error(predictor, text: str) -> None:
    with pytest.raises(InputError, match="empty"):
        predictor.prepare(text, {})


def test_unknown_parameters_are_an_input_error(predictor) -> None:
    with pytest.raises(InputError, match="no parameters"):
        predictor.prepare("fine", {"max_new_tokens": 3})


def test_temperature_and_abstain_come_from_the_manifest(tmp_path: Path) -> None:
    cold = load_predictor(
        make_tiny_sentiment_artifact(tmp_path, calibration={"temperature": 1e-4}), PredictorOptions()
    )
    strict = load_predictor(
        make_tiny_sentiment_artifact(
            tmp_path, calibration={"temperature": 1.0, "abstain": {"measure": "predictive_entropy", "threshold": 0.0}}
        ),
        PredictorOptions(),
    )
    item = cold.prepare("a wonderful film", {})
    sharp = cold.predict([item], [MCRequest(4, 1)])[0]
    # τ = 1e-4 makes every sample one-hot: no aleatoric entropy, and the mean is the vote share of the label
    # (which samples agree depends on the random tiny model's dropout, so the share itself is not fixed).
    assert sharp.uncertainty.expected_entropy == pytest.approx(0.0, abs=1e-6)
    assert sharp.confidence == pytest.approx(1 - sharp.uncertainty.variation_ratio, abs=1e-6)
    assert sharp.abstain is False, "no abstain rule in that manifest"
    soft = strict.predict([strict.prepare("a wonderful film", {})], [MCRequest(4, 1)])[0]
    assert soft.abstain is True, "entropy > 0 passes a zero threshold"


def test_deterministic_requests_use_the_deterministic_temperature(tmp_path: Path) -> None:
    art = make_tiny_sentiment_artifact(
        tmp_path, calibration={"temperature": 1.0, "deterministic_temperature": 1e-4}
    )
    predictor = load_predictor(art, PredictorOptions())
    item = predictor.prepare("a wonderful film", {})
    det, mc = predictor.predict([item, item], [MCRequest(0, 1), MCRequest(4, 1)])
    assert det.confidence > 0.9 > mc.confidence


def test_bfloat16_matches_float32_closely(tmp_path: Path) -> None:
    art = make_tiny_sentiment_artifact(tmp_path)
    fp32 = load_predictor(art, PredictorOptions(dtype="float32"))
    bf16 = load_predictor(art, PredictorOptions(dtype="bfloat16"))
    item = fp32.prepare("an average movie", {})
    a = fp32.predict([item], [MCRequest(0, 0)])[0]
    b = bf16.predict([item], [MCRequest(0, 0)])[0]
    assert a.probabilities["positive"] == pytest.approx(b.probabilities["positive"], abs=0.02)


def test_an_abstain_rule_on_an_unknown_measure_is_refused(tmp_path: Path) -> None:
    art = make_tiny_sentiment_artifact(tmp_path, calibration={"abstain": {"measure": "entropy", "threshold": 0.1}})
    with pytest.raises(ArtifactError, match="abstain measure 'entropy'"):
        load_predictor(art, PredictorOptions())


def test_warmup_predicts_deterministically_and_with_mc(predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    _, (det, mc) = checked_warmup(predictor, monkeypatch)
    assert det.abstain is False and mc.uncertainty.mutual_information > 0


def test_the_confidence_map_recalibrates_probabilities_but_not_labels_or_uncertainty(tmp_path: Path) -> None:
    """Manifest maps (MC and deterministic) change `probabilities` and `confidence` only; the label, the
    uncertainty measures and the abstain decision come from the τ-scaled samples (models/sentiment/predictor.py)."""
    rule = {"measure": "one_minus_confidence", "threshold": 0.3}
    plain_art = make_tiny_sentiment_artifact(tmp_path / "plain", calibration={"temperature": 0.5, "abstain": rule})
    # the same weights and tokenizer with maps added to the manifest (files keep their checksums)
    mapped_art = tmp_path / "mapped" / plain_art.name
    shutil.copytree(plain_art, mapped_art)
    manifest = json.loads((mapped_art / "manifest.json").read_text())
    manifest["calibration"]["confidence_map"] = {"kind": "isotonic", "x": [0.5, 1.0], "y": [0.55, 0.6]}
    manifest["calibration"]["deterministic_confidence_map"] = {"kind": "histogram", "x": [0.75, 0.75],
                                                               "y": [0.51, 0.52]}
    (mapped_art / "manifest.json").write_text(json.dumps(manifest))
    plain, mapped = load_predictor(plain_art, PredictorOptions()), load_predictor(mapped_art, PredictorOptions())
    texts = ["a wonderful film", "terrible and boring", "an average movie with some good moments", "fine"]
    requests = [MCRequest(8, i) for i in range(4)] + [MCRequest(0, 0)] * 4
    a = plain.predict([plain.prepare(t, {}) for t in texts * 2], requests)
    b = mapped.predict([mapped.prepare(t, {}) for t in texts * 2], requests)
    for before, after, request in zip(a, b, requests, strict=True):
        assert after.label == before.label and after.uncertainty == before.uncertainty
        assert after.abstain == before.abstain
        assert after.confidence == max(after.probabilities.values()) == after.probabilities[after.label]
        assert math.isclose(sum(after.probabilities.values()), 1.0, rel_tol=1e-9)
        top = before.confidence
        wanted = 0.55 + 0.05 * (top - 0.5) / 0.5 if request.mc_samples else (0.51 if top < 0.75 else 0.52)
        assert after.confidence == pytest.approx(max(wanted, 0.5 + 1e-6), abs=1e-9)
    assert mapped.describe()["calibration"]["confidence_map"] == "isotonic"
    assert "confidence_map" not in plain.describe()["calibration"], "an artifact without a map describes none"
