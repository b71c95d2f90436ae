"""`python -m training.translation --preset tiny --arch rnn` end to end: the artifact says what it holds, the serving
loader loads it, and the service answers /predict over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.core.artifacts import list_artifacts, verify_artifact
from models.core.predictor import MCRequest, PredictorOptions
from models.registry import load_predictor
from models.translation.rnn import RnnMTModel
from tests.service.conftest import real_client
from training.translation.job import main

RULE_ARGS = ["--bad-chrf", "65", "--target-risk", "0.3"]  # as test_job.py: a rule the tiny model must fit


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-rnn-translation")
    status = main(["--preset", "tiny", "--arch", "rnn", "--output-dir", str(root / "artifacts"), "--cache-dir",
                   str(root / "cache"), *RULE_ARGS])
    assert status == 0
    return root / "artifacts"


def test_the_artifact_holds_the_recurrent_model_and_its_choices(artifacts: Path) -> None:
    (path,) = list_artifacts(artifacts, "translation")
    manifest = verify_artifact(path)
    assert manifest.model_class == "RnnMTModel"
    dropout = manifest.dropout
    assert dropout["architecture"] == "rnn" and dropout["sites"] == {"hidden": 0.1, "recurrent": 0.1}
    assert dropout["num_layers"] == 2  # last-k counts 1 decoder + 1 encoder layer
    assert dropout["mc_last_k"] in (1, 2)  # chosen on validation between decoder-full and whole-model
    metrics = manifest.metrics
    assert metrics["quality"]["greedy"]["chrf"] > 20  # it learnt something of the toy grammar
    assert metrics["distinct_output_ratio"] > 0.3
    assert {"greedy", "beam4"} == set(metrics["quality"])
    means = metrics["uncertainty"]["measure_means"]
    assert means["mc_log_prob_var"]["in_domain"] > 0  # the variational dropout is live when scoring
    predictor = load_predictor(path, PredictorOptions())
    assert isinstance(predictor.model, RnnMTModel)
    item = predictor.prepare("The king saw the bread.", {})
    (a,), (b,) = (predictor.predict([item], [MCRequest(4, 7)]) for _ in range(2))
    assert a.translation == b.translation and a.uncertainty == b.uncertainty  # a seed reproduces


@pytest.mark.anyio
async def test_the_service_serves_the_rnn_artifact(artifacts: Path) -> None:
    async with real_client(artifacts, ["translation"]) as client:
        described = (await client.get("/models/translation")).json()["predictor"]
        assert described["model_class"] == "RnnMTModel" and described["architecture"].startswith("rnn")
        request = {"task": "translation", "text": ["The king saw the bread.", "Love is patient."], "mc_samples": 3,
                   "seed": 1, "parameters": {"uncertainty_mode": "sampling", "max_new_tokens": 8, "num_beams": 2}}
        response = await client.post("/predict", json=request)
        assert response.status_code == 200, response.text
        for p in response.json()["predictions"]:
            assert isinstance(p["translation"], str) and p["output_tokens"] <= 8
            assert p["uncertainty"]["mc_log_prob_var"] >= 0 and 0 <= p["uncertainty"]["sampling_chrf"] <= 1
