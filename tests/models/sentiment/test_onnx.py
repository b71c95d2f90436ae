"""The onnxruntime backend against the torch backend: the exported last-k MC graph (tokens packed in the
deterministic layers) with host-drawn masks gives torch's logits and OOD features for the same seeds on batches
of mixed lengths, the padded Core ML layout the same, and the predictor the same labels, probabilities,
uncertainty and OOD scores.

Stated tolerance (float32 on both sides; the graph runs attention as explicit matmuls, torch the fused kernel):
logits within 1e-5 absolute + 1e-4 relative, probabilities and uncertainty measures within 1e-5."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.core import ood_extra
from models.core.artifacts import ArtifactError
from models.core.ood import OODDetector, fit_statistics
from models.core.padding import pad_ids
from models.core.predictor import MCRequest, PredictorOptions
from models.core.token_density import TokenBigram
from models.registry import load_predictor
from models.sentiment.mc import DropoutRates, forward_logits
from models.sentiment.model import build_tiny_classifier
from models.sentiment.onnx_graph import MCGraph, export_onnx, feature_layer_in_graph, mask_names, masks_for, row_index
from tests.factories import make_tiny_sentiment_artifact, make_tiny_translation_artifact

ort = pytest.importorskip("onnxruntime")

SITES = frozenset({"hidden", "head"})
PROB_TOL = 1e-5


@pytest.mark.parametrize("last_k", [1, 2, 3])
def test_graph_reproduces_the_torch_mc_logits_and_features_for_the_same_seeds(last_k: int) -> None:
    model = build_tiny_classifier(120, ["neg", "pos"], num_layers=3, dropout=0.1, seed=3).eval()
    layer = 3 - last_k if last_k < 3 else 0  # the highest deterministic layer (full MC: the embeddings)
    assert feature_layer_in_graph(3, last_k, layer) and not feature_layer_in_graph(3, last_k, layer + 1)
    graph = export_onnx(model, last_k, feature_layers=sorted({0, layer}))
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()][3:] == mask_names(3, last_k)
    ids, mask = pad_ids([[2, 15, 40, 7, 9, 3], [2, 77, 3], [2, 5, 6, 8, 10, 11, 12, 3]], 0)
    samples, seeds = [4, 0, 3], [5, 6, 7]
    features: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        expected = torch.cat(forward_logits(model, ids, mask, samples, seeds, last_k, SITES, feature_layers={0, layer},
                                            features_out=features))
    masks = masks_for(3, last_k, model.config.hidden_size, ids.shape[1], samples, seeds,
                      DropoutRates.of(model).live(SITES))
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.long().numpy(), "row_index": row_index(samples).numpy(),
            **{name: value.numpy() for name, value in masks.items()}}
    got, got_features, got_embeddings = (torch.from_numpy(out) for out in session.run(
        ["logits", f"ood_features_{layer}", "ood_features_0"], feed))
    torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_features, features[layer], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_embeddings, features[0], rtol=1e-4, atol=1e-5)
    assert not torch.equal(got[0], got[1]), "MC rows of one item must differ"
    padded = MCGraph(model, last_k, packed=False)  # the Core ML layout
    with torch.inference_mode():
        torch.testing.assert_close(padded(*(torch.from_numpy(feed[n]) for n in ["input_ids", "attention_mask",
                                                                                "row_index", *padded.names])),
                                   expected.float(), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sentiment_artifact(tmp_path_factory.mktemp("art"), num_layers=3, mc_last_k=1)


def test_onnxruntime_predictor_answers_as_the_torch_predictor(artifact: Path) -> None:
    reference = load_predictor(artifact, PredictorOptions(dtype="float32"))
    onnx = load_predictor(artifact, PredictorOptions(dtype="float32", backend="onnxruntime"))
    assert onnx.describe()["backend"]["name"] == "onnxruntime"
    # Idle intra-op threads must sleep (cpu_session says why).
    assert onnx.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    texts = ["a wonderful film", "terrible and boring", "an average movie with some good moments", "loved it"]
    requests = [MCRequest(8, 1), MCRequest(0, 2), MCRequest(20, 3), MCRequest(1, 4)]
    items = [reference.prepare(text, {}) for text in texts]
    for want, got in zip(reference.predict(items, requests), onnx.predict(items, requests), strict=True):
        assert got.label == want.label and got.abstain == want.abstain
        assert got.probabilities == pytest.approx(want.probabilities, abs=PROB_TOL)
        assert (got.uncertainty is None) == (want.uncertainty is None)
        if want.uncertainty is not None:
            assert vars(got.uncertainty) == pytest.approx(vars(want.uncertainty), abs=PROB_TOL)
    again = onnx.predict(items[:1], requests[:1])[0]
    assert again == onnx.predict(items, requests)[0]  # same seed, same answer, whatever shares the batch


def test_ood_scores_come_from_the_graph_and_match_torch(artifact: Path) -> None:
    reference = load_predictor(artifact, PredictorOptions(dtype="float32"))
    onnx = load_predictor(artifact, PredictorOptions(dtype="float32", backend="onnxruntime"))
    bank = torch.nn.functional.normalize(torch.randn(20, reference.model.config.hidden_size), dim=-1)
    for predictor in (reference, onnx):
        predictor.attach_ood(OODDetector("knn_cosine", 2, 0.5, fit_statistics("knn_cosine", bank), k=3))
    assert onnx.describe()["backend"]["ood_features"] == "graph output"
    items = [reference.prepare(text, {}) for text in ["a wonderful film", "zebra quartz orbits", "it was fine"]]
    requests = [MCRequest(5, 1), MCRequest(0, 2), MCRequest(3, 3)]
    for want, got in zip(reference.predict(items, requests), onnx.predict(items, requests), strict=True):
        assert want.ood_score is not None and got.ood_score == pytest.approx(want.ood_score, abs=PROB_TOL)
        assert got.out_of_distribution == want.out_of_distribution and got.abstain_reason == want.abstain_reason
    # a three-part hybrid also reads layer 0: the graph outputs both layers
    density = TokenBigram.fit([i.input_ids for i in items], len(reference.tokenizer))
    second = torch.nn.functional.normalize(torch.randn(20, reference.model.config.hidden_size), dim=-1)
    for predictor in (reference, onnx):
        predictor.attach_ood(OODDetector(
            "hybrid", 2, 3.0, {**fit_statistics("knn_cosine", bank), **density.tensors, **ood_extra.tensors_of(second)},
            k=3, bigram={"lam": 0.7, "alpha": 0.5}, hybrid={"feature_method": "knn_cosine", "weight": 0.5,
                                                          "scales": [0.05, 0.5],
                                                          "extra": {"layer": 0, "weight": 0.3, "scale": 0.05}}))
    for want, got in zip(reference.predict(items, requests), onnx.predict(items, requests), strict=True):
        assert want.ood_score is not None and got.ood_score == pytest.approx(want.ood_score, abs=PROB_TOL)
    assert onnx.describe()["backend"]["ood_features"] == "graph output"  # layers 2 and 0 both


def test_backend_refusals(tmp_path: Path, artifact: Path) -> None:
    with pytest.raises(ArtifactError, match="attention"):
        load_predictor(artifact, PredictorOptions(backend="onnxruntime",
                                                  mc_dropout_sites=frozenset({"hidden", "attention"})))
    with pytest.raises(ArtifactError, match="CPU"):
        load_predictor(artifact, PredictorOptions(device="cuda", backend="onnxruntime"))
    translation = make_tiny_translation_artifact(tmp_path)
    with pytest.raises(ArtifactError, match="no 'onnxruntime' backend"):
        load_predictor(translation, PredictorOptions(backend="onnxruntime"))
