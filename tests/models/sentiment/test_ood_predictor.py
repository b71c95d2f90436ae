"""The sentiment predictor's OOD fields: features from the serving pass equal the fitting path's and the
library's, every T carries the fields, abstain_reason, artifacts with and without statistics, the refit CLI path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from models.core.artifacts import ArtifactError
from models.core.ood import OODDetector, distances, fit_statistics, pool
from models.core.ood_projection import fit_projection, project
from models.core.predictor import MCRequest, PredictorOptions
from models.core.token_density import TokenBigram
from models.sentiment.predictor import SentimentPredictor
from tests.factories import make_tiny_sentiment_artifact
from training.core.ood_artifact import write_with_ood
from training.core.ood_fit import fit_ood
from training.core.ood_sets import OODSets, OODSettings, Probes
from training.core.ood_teacher import RIDGES, Teacher, sentence_embedder
from training.sentiment.config import SentimentConfig
from training.sentiment.probes import base_teacher

FILMS = [f"the film {w} was {a} and the acting {b}" for w in ("plot", "cast", "story", "score", "ending")
         for a in ("dull", "great", "fine", "awful") for b in ("moved me", "bored me", "worked")]
OTHER = [f"{x} {y} {z} qqq zzz" for x in ("zebra", "quartz", "xylophone") for y in ("jumps", "orbits", "melts")
         for z in ("tomorrow", "sideways", "loudly", "twice")]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sentiment_artifact(tmp_path_factory.mktemp("art"), num_layers=3, mc_last_k=1)


def _sets() -> OODSets:
    return OODSets(bank=FILMS[:30], choice=FILMS[30:40], threshold=FILMS[40:50],
                   choice_probes=Probes(OTHER[:10], ["nonsense"] * 10), test=FILMS[50:60],
                   test_probes=Probes(OTHER[10:36], ["nonsense"] * 26), test_groups=["review"] * 10)


def test_features_of_the_serving_pass_match_the_library(artifact: Path) -> None:
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    items = [predictor.prepare(t, {}) for t in FILMS[:3] + ["short"]]
    got = predictor.ood_features(items, [0, 1, 2])
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(i.input_ids) for i in items], batch_first=True)
    mask = (torch.arange(ids.shape[1])[None] < torch.tensor([i.n_tokens for i in items])[:, None]).long()
    with torch.inference_mode():
        states = predictor.model.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for layer in (0, 1, 2):
        assert torch.allclose(got[layer], pool(states[layer], mask), atol=1e-5), layer


def test_fit_choose_threshold_and_serve_at_every_t(artifact: Path, tmp_path: Path) -> None:
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    assert predictor.ood is None and predictor.describe()["ood"] is None
    plain = predictor.predict([predictor.prepare(OTHER[0], {})], [MCRequest(0, 1)])[0]
    assert (plain.ood_score, plain.out_of_distribution, plain.abstain, plain.abstain_reason) == (None, False, False,
                                                                                                  None)
    detector, report = fit_ood(predictor, _sets(), OODSettings(layers=[0, 1, 2], k=3))
    assert report["validation_flag_rate"] <= 0.05 and report["test"]["auroc"] > 0.9
    densities = ("token_bigram", "token_trigram")
    plain_names = {f"{m}/layer_{n}" for m in ("knn_cosine", "mahalanobis") for n in (0, 1, 2)} | set(densities)
    hybrids = {name for name in report["candidates"] if name.startswith("hybrid_")}
    assert {name.split("/length_")[0] for name in set(report["candidates"]) - hybrids} == plain_names  # + length terms
    # the four best hidden-state candidates on validation, each mixed with each density's NLL at three weights
    best = sorted((n for n, c in report["candidates"].items() if c["method"] in ("knn_cosine", "mahalanobis")),
                  key=lambda n: -report["candidates"][n]["validation_auroc"])[:4]
    two = {name for name in hybrids if "*knn_cosine" not in name}
    assert two == {f"hybrid_{w:g}({n}+{d})" for n in best for w in (0.3, 0.5, 0.7) for d in densities}
    # the two best of those may take a third part: the raw kNN of each other layer, at six weights
    bases = sorted((n for n in report["candidates"] if n in two),
                   key=lambda n: -report["candidates"][n]["validation_auroc"])[:2]
    weights = (-0.5, -0.35, -0.2, 0.2, 0.35, 0.5)
    assert hybrids - two == {f"{b}{w:+g}*knn_cosine/layer_{j}" for b in bases for w in weights
                             for j in (0, 1, 2) if j != report["candidates"][b]["layer"]}
    best_hybrid = max((n for n in report["candidates"] if n in hybrids),  # the first of equals, as the fit
                      key=lambda n: report["candidates"][n]["validation_auroc"])
    assert set(report["table"]["all"]) == plain_names | {report["chosen"]["candidate"], best_hybrid}
    assert detector.length_coef == report["chosen"]["length_coef"] <= 0.0
    new = write_with_ood(artifact, tmp_path, detector, report)
    served = SentimentPredictor.load(new, PredictorOptions())
    assert served.manifest.metrics["ood"]["chosen"]["layer"] == detector.layer
    assert served.manifest.data["ood"]["derived_from"] == predictor.version != served.version
    items = [served.prepare(FILMS[0], {}), served.prepare(OTHER[0], {})]
    for samples in (0, 4):
        near, far = served.predict(items, [MCRequest(samples, 7)] * 2)
        assert near.ood_score < 1.0 < far.ood_score
        assert (far.out_of_distribution, far.abstain, far.abstain_reason) == (True, True, "out_of_distribution")
        assert not near.out_of_distribution and near.abstain_reason == ("uncertain" if near.abstain else None)
    # full MC expands rows before the chosen layer: the score comes from a deterministic pass, the same value
    full = SentimentPredictor.load(new, PredictorOptions(mc_last_k=3))
    assert [p.ood_score for p in full.predict(items, [MCRequest(4, 7)] * 2)] == pytest.approx(
        [p.ood_score for p in served.predict(items, [MCRequest(0, 7)] * 2)], abs=1e-5)


def test_a_hybrid_detector_is_served_from_the_features_and_the_ids_of_the_same_pass(artifact: Path) -> None:
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    bank_items = [predictor.prepare(t, {}) for t in FILMS[:30]]
    density = TokenBigram.fit([i.input_ids for i in bank_items], len(predictor.tokenizer))
    stats = fit_statistics("knn_cosine", predictor.ood_features(bank_items, [1])[1])
    detector = OODDetector("hybrid", 1, 3.0, {**stats, **density.tensors}, k=3, bigram={"lam": 0.7, "alpha": 0.5},
                           hybrid={"feature_method": "knn_cosine", "weight": 0.5, "scales": [0.05, 0.5]})
    predictor.attach_ood(detector)
    items = [predictor.prepare(FILMS[40], {}), predictor.prepare(OTHER[0], {})]
    expected = detector.score_items(predictor.ood_features(items, [1])[1], [i.input_ids for i in items])
    assert expected[0] < expected[1]
    for samples in (0, 4):
        got = predictor.predict(items, [MCRequest(samples, 2)] * 2)
        assert [p.ood_score for p in got] == pytest.approx(expected, rel=1e-4)
        assert [p.out_of_distribution for p in got] == [score > 1.0 for score in expected]
    assert predictor.describe()["ood"]["hybrid"]["weight"] == 0.5
    wrong_vocab = TokenBigram.fit([[1, 2, 3]], vocab_size=7)
    with pytest.raises(ArtifactError, match="tokenizer"):
        predictor.attach_ood(OODDetector("hybrid", 1, 3.0, {**stats, **wrong_vocab.tensors}, k=3,
                                         hybrid={"feature_method": "knn_cosine", "weight": 0.5, "scales": [1, 1]}))


def test_a_token_bigram_detector_is_fitted_saved_and_served_from_the_ids(artifact: Path, tmp_path: Path) -> None:
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    detector, report = fit_ood(predictor, _sets(), OODSettings(layers=[0], methods=("token_bigram",)))
    assert detector.uses_tokens and report["chosen"]["candidate"].startswith("token_bigram")
    assert report["test"]["auroc"] > 0.9 and report["validation_flag_rate"] <= 0.05
    served = SentimentPredictor.load(write_with_ood(artifact, tmp_path, detector, report), PredictorOptions())
    assert served.ood is not None and served.ood.bigram == {"lam": 0.7, "alpha": 0.5}
    items = [served.prepare(FILMS[1], {}), served.prepare(OTHER[1], {})]
    for samples in (0, 4):
        near, far = served.predict(items, [MCRequest(samples, 3)] * 2)
        assert near.ood_score < 1.0 < far.ood_score and (far.abstain_reason, near.out_of_distribution) == (
            "out_of_distribution", False)
    assert served.describe()["ood"]["method"] == "token_bigram"


def test_uncertain_reason_when_in_distribution(artifact: Path) -> None:
    predictor = SentimentPredictor.load(artifact, PredictorOptions())  # threshold 0.69 nats on predictive entropy
    features = predictor.ood_features([predictor.prepare(t, {}) for t in FILMS], [1])[1]
    predictor.attach_ood(OODDetector("knn_cosine", 1, 10.0, fit_statistics("knn_cosine", features)))  # flags nothing
    low_rule = SentimentPredictor(predictor.model, predictor.tokenizer, predictor.manifest.__class__(
        **{**predictor.manifest.__dict__, "calibration": {"temperature": 1.0, "abstain": {
            "measure": "predictive_entropy", "threshold": 0.0, "target_risk": 0.05}}}), predictor.options)
    low_rule.attach_ood(predictor.ood)
    got = low_rule.predict([low_rule.prepare(FILMS[0], {})], [MCRequest(4, 1)])[0]
    assert (got.out_of_distribution, got.abstain, got.abstain_reason) == (False, True, "uncertain")


def test_statistics_of_another_shape_are_refused(artifact: Path) -> None:
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    bank = torch.nn.functional.normalize(torch.randn(8, predictor.model.config.hidden_size), dim=-1)
    with pytest.raises(ArtifactError, match="feature layers"):
        predictor.attach_ood(OODDetector("knn_cosine", 3, 1.0, {"bank": bank}))  # 3 layers: 0..2 only
    with pytest.raises(ArtifactError, match="dimension"):
        predictor.attach_ood(OODDetector("knn_cosine", 1, 1.0, {"bank": bank[:, :5].contiguous()}))


def test_a_teacher_adds_projected_candidates_fitted_on_training_texts_alone(artifact: Path) -> None:
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    calls: list[list[str]] = []

    def teacher(texts):  # a bag-of-words embedder standing in for a sentence-embedding model
        calls.append(list(texts))
        rows = [torch.randn(6, generator=torch.Generator().manual_seed(sum(map(ord, t)) % 1000)) for t in texts]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)

    extra = [f"the {w} film was {a}" for w in ("new", "old", "long") for a in ("fun", "slow")]
    sets = dataclasses.replace(_sets(), teacher=Teacher(teacher, extra))
    detector, report = fit_ood(predictor, sets, OODSettings(layers=[1, 2], methods=("knn_cosine",), k=3))
    assert calls == [sets.bank + extra]  # the bank and the teacher's texts, once: never a held-out or probe text
    projected = {name.split("/length_")[0] for name in report["candidates"] if "projected" in name}
    assert projected == {f"knn_cosine_projected_{r:g}/layer_{n}" for r in RIDGES for n in (1, 2)}
    assert all(report["candidates"][n]["method"] == "knn_cosine" for n in report["candidates"])


def test_a_projected_detector_is_served_from_the_features_of_the_same_pass(artifact: Path) -> None:
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    bank = predictor.ood_features([predictor.prepare(t, {}) for t in FILMS[:30]], [1])[1]
    teacher = torch.nn.functional.normalize(bank[:, :6] + 0.5, dim=-1)
    projection = fit_projection(bank, teacher, 0.1)
    stats = {**fit_statistics("knn_cosine", project(projection, bank)), **projection}
    predictor.attach_ood(OODDetector("knn_cosine", 1, 0.05, stats, k=3))
    items = [predictor.prepare(FILMS[40], {}), predictor.prepare(OTHER[0], {})]
    features = predictor.ood_features(items, [1])[1]
    expected = (distances("knn_cosine", stats, project(projection, features), 3) / 0.05).tolist()
    for samples in (0, 4):
        assert [p.ood_score for p in predictor.predict(items, [MCRequest(samples, 2)] * 2)] == pytest.approx(
            expected, rel=1e-4)


def test_the_teacher_embeds_texts_as_its_encoder_mean_pools_them(artifact: Path) -> None:
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    texts = [FILMS[0], "short", OTHER[3]]
    got = sentence_embedder(artifact / "model", batch_size=2)(texts)
    for row, text in enumerate(texts):
        ids = predictor.tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            states = predictor.model.bert(input_ids=ids).last_hidden_state
        assert torch.allclose(got[row], pool(states, torch.ones_like(ids))[0], atol=1e-5)
    assert base_teacher(SentimentConfig(model="tiny"), artifact) is None
