"""Translation and generation serve the OOD score of the features their fitting path computes (models/core/ood.py):
the encoder's source states / the prompt's states in the decode's first forward, at T = 0 and T > 0; with sentiment,
a three-part detector (models/core/ood_extra.py) is served from both of its layers."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.core import ood_extra
from models.core.ood import OODDetector, fit_statistics
from models.core.predictor import MCRequest, PredictorOptions
from models.core.token_density import TokenBigram
from models.generation.predictor import GenerationPredictor
from models.sentiment.predictor import SentimentPredictor
from models.translation.predictor import TranslationPredictor
from tests.factories import make_tiny_generation_artifact, make_tiny_sentiment_artifact, make_tiny_translation_artifact

IN = ["In the beginning God created the heavens and the earth.", "The king saw the house in the city.",
      "And the servant found bread by the river.", "The woman blessed the man on the mountain."]
OUT = ["zebra quartz xylophone 42 %%% !!", "http://example.com/login?user=x&pw=y"]


@pytest.mark.parametrize("make, cls, pooling", [
    (make_tiny_translation_artifact, TranslationPredictor, "mean"),
    (make_tiny_generation_artifact, GenerationPredictor, "mean_skip_first"),
], ids=["translation", "generation"])
def test_served_scores_equal_the_fitting_path(tmp_path: Path, make, cls, pooling: str) -> None:
    predictor = cls.load(make(tmp_path), PredictorOptions())
    parameters = {"max_new_tokens": 3}
    bank_items = [predictor.prepare(t, parameters) for t in IN]
    layer = predictor.ood_feature_layers() - 2
    bank = predictor.ood_features(bank_items, [layer], pooling)[layer]
    predictor.attach_ood(OODDetector("knn_cosine", layer, 0.5, fit_statistics("knn_cosine", bank), pooling, k=1))
    items = [predictor.prepare(t, parameters) for t in IN[:1] + OUT]
    expected = predictor.ood.scores(predictor.ood_features(items, [layer], pooling)[layer])
    for samples in (0, 3):
        got = predictor.predict(items, [MCRequest(samples, 5)] * len(items))
        assert [p.ood_score for p in got] == pytest.approx(expected, abs=1e-4)
        assert got[0].ood_score == pytest.approx(0.0, abs=1e-4)  # a bank text is its own nearest neighbour
        for p in got:
            assert p.out_of_distribution == (p.ood_score > 1.0)
            assert p.abstain == (p.abstain_reason is not None)
            assert p.abstain_reason == ("out_of_distribution" if p.out_of_distribution else p.abstain_reason)


@pytest.mark.parametrize("make, cls, pooling", [
    (make_tiny_translation_artifact, TranslationPredictor, "mean"),
    (make_tiny_generation_artifact, GenerationPredictor, "mean_skip_first"),
    (make_tiny_sentiment_artifact, SentimentPredictor, "mean"),
], ids=["translation", "generation", "sentiment"])
def test_a_three_part_detector_is_served_from_both_layers_of_the_same_pass(tmp_path: Path, make, cls,
                                                                           pooling: str) -> None:
    predictor = cls.load(make(tmp_path), PredictorOptions())
    parameters = {} if cls is SentimentPredictor else {"max_new_tokens": 3}
    bank_items = [predictor.prepare(t, parameters) for t in IN]
    layer = predictor.ood_feature_layers() - 1
    bank = predictor.ood_features(bank_items, [layer, 0], pooling)
    density = TokenBigram.fit([i.input_ids for i in bank_items], len(predictor.tokenizer))
    predictor.attach_ood(OODDetector(
        "hybrid", layer, 3.0, {**fit_statistics("knn_cosine", bank[layer]), **density.tensors,
                               **ood_extra.tensors_of(fit_statistics("knn_cosine", bank[0])["bank"])},
        pooling, k=1, bigram={"lam": 0.7, "alpha": 0.5},
        hybrid={"feature_method": "knn_cosine", "weight": 0.5, "scales": [0.05, 0.5],
                "extra": {"layer": 0, "weight": 0.35, "scale": 0.05}}))
    items = [predictor.prepare(t, parameters) for t in IN[:1] + OUT]
    expected = predictor.ood.score_items(predictor.ood_features(items, [layer, 0], pooling),
                                         [i.input_ids for i in items])
    two_part = OODDetector("hybrid", layer, 3.0, {**fit_statistics("knn_cosine", bank[layer]), **density.tensors},
                           pooling, k=1, bigram={"lam": 0.7, "alpha": 0.5},
                           hybrid={"feature_method": "knn_cosine", "weight": 0.5, "scales": [0.05, 0.5]})
    without = two_part.score_items(predictor.ood_features(items, [layer], pooling)[layer],
                                   [i.input_ids for i in items])
    assert all(a > b for a, b in zip(expected[1:], without[1:], strict=True))  # the third part adds its distance
    for samples in (0, 3):
        got = predictor.predict(items, [MCRequest(samples, 5)] * len(items))
        assert [p.ood_score for p in got] == pytest.approx(expected, rel=1e-4, abs=1e-5)
