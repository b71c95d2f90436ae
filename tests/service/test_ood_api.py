"""The OOD fields over HTTP (present at every mc_samples, documented in the schema) and their metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.core.predictor import PredictorOptions
from models.sentiment.predictor import SentimentPredictor
from tests.factories import make_tiny_sentiment_artifact
from tests.models.sentiment.test_ood_predictor import FILMS, OTHER, _sets
from tests.service.conftest import parse_metrics, real_client, sample
from training.core.ood_artifact import write_with_ood
from training.core.ood_fit import fit_ood
from training.core.ood_sets import OODSettings

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    plain = make_tiny_sentiment_artifact(root, mc_last_k=1)
    detector, report = fit_ood(SentimentPredictor.load(plain, PredictorOptions()), _sets(),
                               OODSettings(layers=[0, 1], k=3))
    write_with_ood(plain, root, detector, report)  # the newer version: the one the service loads
    return root


@pytest.mark.parametrize("mc_samples", [0, 1, 4])
async def test_every_prediction_has_the_ood_fields(artifacts: Path, mc_samples: int) -> None:
    async with real_client(artifacts, ["sentiment"]) as client:
        body = (await client.post("/predict", json={"task": "sentiment", "text": [FILMS[0], OTHER[0]],
                                                    "mc_samples": mc_samples, "seed": 3})).json()
        near, far = body["predictions"]
        assert near["ood_score"] < 1.0 < far["ood_score"]
        assert far["out_of_distribution"] is True and far["abstain"] is True
        assert far["abstain_reason"] == "out_of_distribution"
        assert near["out_of_distribution"] is False
        assert near["abstain_reason"] == ("uncertain" if near["abstain"] else None)
        assert (near["uncertainty"] is None) == (mc_samples < 2)
        metrics = parse_metrics((await client.get("/metrics")).text)
        assert sample(metrics, "nlp_ood_score_count", task="sentiment") == 2
        assert sample(metrics, "nlp_out_of_distribution_total", task="sentiment") == 1
        # every abstention is counted with its reason, at T = 0 too
        assert sample(metrics, "nlp_abstentions_total", task="sentiment", reason="out_of_distribution") == 1
        assert sample(metrics, "nlp_abstentions_total", task="sentiment", reason="uncertain") == int(near["abstain"])
        schema = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]
        fields = schema["SentimentPredictionOut"]["properties"]
        assert "training data" in fields["ood_score"]["description"]
        assert {"out_of_distribution", "abstain_reason"} <= fields.keys()
