"""Device packages from a tiny artifact: the ONNX graph reproduces the torch MC output for fixed seeds (run with
onnxruntime), the Core ML spec has the graph's inputs and outputs, and int8 quantisation passes or is refused by
its accuracy guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.core.predictor import MCRequest, PredictorOptions
from models.registry import load_predictor
from models.sentiment.mc import forward_logits
from models.sentiment.onnx_graph import masks_for, row_index
from tests.factories import CORPUS, make_tiny_sentiment_artifact
from training.export import quantize
from training.export.package import write_package

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sentiment_artifact(tmp_path_factory.mktemp("art"), num_layers=2, mc_last_k=1)


def test_onnx_package_is_self_contained_and_reproduces_torch_mc(artifact: Path, tmp_path: Path) -> None:
    package = write_package(artifact, tmp_path, "onnx")
    facts = json.loads((package / "package.json").read_text())
    assert {p.name for p in package.iterdir()} == {"model.onnx", "tokenizer.json", "tokenizer_config.json",
                                                   "package.json", "README.md"}
    assert facts["labels"] == ["negative", "positive"] and facts["mc"]["last_k"] == 1
    assert facts["calibration"]["temperature"] == 1.0 and "mask_head" in (package / "README.md").read_text()
    session = ort.InferenceSession(str(package / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [i["name"] for i in facts["inputs"]]

    predictor = load_predictor(artifact, PredictorOptions(dtype="float32"))
    items = [predictor.prepare(text, {}) for text in CORPUS[:3]]
    length = max(item.n_tokens for item in items)
    ids = torch.zeros(3, length, dtype=torch.long)
    for row, item in enumerate(items):
        ids[row, : item.n_tokens] = torch.tensor(item.input_ids)
    mask = (torch.arange(length)[None] < torch.tensor([i.n_tokens for i in items])[:, None]).long()
    samples, seeds = [10, 0, 4], [7, 8, 9]
    with torch.inference_mode():
        expected = torch.cat(forward_logits(predictor.model, ids, mask, samples, seeds, 1, predictor.sites))
    masks = masks_for(2, 1, facts["inputs"][-1]["shape"][1], length, samples, seeds,
                      predictor.rates.live(predictor.sites))
    got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                   "row_index": row_index(samples).numpy(),
                                   **{name: value.numpy() for name, value in masks.items()}})[0]
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-5)


def test_coreml_spec_has_the_graph_inputs_and_outputs(artifact: Path, tmp_path: Path) -> None:
    ct = pytest.importorskip("coremltools")
    package = write_package(artifact, tmp_path, "coreml")
    facts = json.loads((package / "package.json").read_text())
    spec = ct.utils.load_spec(str(package / "model.mlpackage"))
    assert [i.name for i in spec.description.input] == [i["name"] for i in facts["inputs"]]
    assert [o.name for o in spec.description.output] == ["logits"]
    assert spec.WhichOneof("Type") == "mlProgram"


def test_int8_is_kept_with_its_report_or_refused_by_the_guard(artifact: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    texts, labels = CORPUS[:10], [0, 1, 1, 0, 1] * 2
    package = write_package(artifact, tmp_path / "ok", "onnx", quantize="int8", validation=(texts, labels),)
    report = json.loads((package / "package.json").read_text())["quantization"]
    assert report["accepted"] and report["items"] == 10 and "ece_change" in report
    assert (package / "model.int8.onnx").exists()
    int8 = load_predictor(artifact, PredictorOptions(backend="onnxruntime",
                                                     onnx_model=str(package / "model.int8.onnx")))
    assert int8.predict([int8.prepare("a fine film", {})], [MCRequest(4, 1)])[0].label in ("negative", "positive")

    monkeypatch.setattr(quantize, "MAX_ACCURACY_DROP_POINTS", -101.0)  # any model fails a guard below −100 points
    monkeypatch.setattr(quantize.guarded_quantization, "__kwdefaults__", {"mc_samples": None, "seed": 0,
                                                                          "max_drop_points": -101.0})
    with pytest.raises(quantize.QuantizationRefusedError, match="accuracy points"):
        write_package(artifact, tmp_path / "refused", "onnx", quantize="int8", validation=(texts, labels))
    assert not (tmp_path / "refused" / next((tmp_path / "refused").iterdir()).name / "model.int8.onnx").exists()
