"""Translation and generation serve the OOD score of the features their fitting path computes (models/core/ood.py):
the encoder's source states / the prompt's states in the decode's first forward, at T = 0 and T > 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.core.ood import OODDetector, fit_statistics
from models.core.predictor import MCRequest, PredictorOptions
from models.generation.predictor import GenerationPredictor
from models.translation.predictor import TranslationPredictor
from tests.factories import make_tiny_generation_artifact, make_tiny_translation_artifact

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
