"""End to end: `python -m training.sentiment --preset tiny` writes an artifact the service can load."""

import json
from pathlib import Path

import pytest

from models.core.artifacts import list_artifacts, verify_artifact
from models.core.predictor import MCRequest, PredictorOptions
from models.sentiment.predictor import SentimentPredictor
from training.sentiment.job import main


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    status = main(["--preset", "tiny", "--output-dir", str(root / "artifacts"), "--cache-dir", str(root / "cache")])
    assert status == 0
    (path,) = list_artifacts(root / "artifacts", "sentiment")
    return path


def test_artifact_verifies_and_has_every_section(artifact: Path) -> None:
    manifest = verify_artifact(artifact)
    assert manifest.task == "sentiment" and manifest.labels == ["negative", "positive"]
    assert manifest.default_mc_samples == 20
    calibration = manifest.calibration
    assert calibration["mc_samples"] == 20
    # τ minimises the validation NLL it was fitted on, so it does no worse there than τ = 1
    assert calibration["validation_nll"]["after"] <= calibration["validation_nll"]["before"]
    assert calibration["abstain"]["measure"] and calibration["abstain"]["target_risk"] == 0.05
    assert manifest.dropout["rate"] == 0.1 and manifest.dropout["num_layers"] == 2
    assert manifest.dropout["mc_sites"] == ["head", "hidden"]
    # the serving mode follows the recorded evidence: last-1 when its AUROC is within the tolerance of full MC
    by_mode = manifest.dropout["mc_last_k_evidence"]["best_auroc_by_mode"]
    close = by_mode["mc_last_1"] >= by_mode["mc_full"] - manifest.training_config["mc_last_k_tolerance"]
    assert manifest.dropout["mc_last_k"] == (1 if close else 2) == calibration["mc_last_k"]
    assert manifest.preprocessing == {"max_length": 48, "head_tokens": 12, "truncation": "head+tail"}
    modes = manifest.metrics["modes"]
    assert set(modes) == {"deterministic", "mc_full", "mc_last_1"}
    for mode in modes.values():
        assert {"before_temperature", "after_temperature", "seconds", "reviews_per_second"} <= set(mode)
        expected = {"accuracy", "nll", "brier", "ece", "auroc", "aurc", "coverage_at_risk"}
        assert expected <= set(mode["after_temperature"])
    assert manifest.data["sources"][0]["splits"] == {"train": 400, "validation": 150, "test": 150}
    assert len(manifest.data["sources"][0]["sha256"]) == 64
    assert manifest.training_config["preset"] == "tiny" and manifest.training_config["lr"] == 3e-3
    assert {"torch", "transformers", "tokenizers"} <= set(manifest.libraries)
    # the tiny model learned something: clearly above chance on held-out data
    assert manifest.metrics["headline"]["accuracy"] > 0.6


def test_reports_are_written(artifact: Path) -> None:
    reports = artifact / "reports"
    metrics = json.loads((reports / "metrics.json").read_text(), parse_constant=pytest.fail)  # strict: no NaN
    assert metrics["headline"] and metrics["history"]["losses"] and metrics["calibration"]["temperature"]
    for name in ("reliability.png", "training_curves.png", "risk_coverage.png"):
        assert (reports / name).read_bytes()[:4] == b"\x89PNG"


def test_predictor_serves_the_artifact(artifact: Path) -> None:
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    items = [predictor.prepare(t, {}) for t in ("The film was wonderful.", "The plot was not good at all.")]
    out = predictor.predict(items, [MCRequest(20, 1), MCRequest(0, 0)])
    assert out[0].uncertainty is not None and out[1].uncertainty is None
    assert out[0].label in ("negative", "positive")


def test_resume_reuses_the_finished_checkpoint(artifact: Path, tmp_path: Path) -> None:
    cache = artifact.parents[2] / "cache"
    status = main(["--preset", "tiny", "--output-dir", str(tmp_path), "--cache-dir", str(cache), "--resume", "true",
                   "--test-limit", "60", "--headline-test-limit", "150", "--mc-last-k-tolerance", "1.0"])
    (again,) = list_artifacts(tmp_path, "sentiment")
    manifest = verify_artifact(again)
    assert status == 0
    training = manifest.metrics["training"]
    first = verify_artifact(artifact).metrics["training"]
    assert training["resumed_at"] == [first["steps"]] and training["steps"] == first["steps"]
    assert manifest.metrics["test_n"] == 60
    # every mode on 60 reviews; the deterministic and serving (last-1) modes also on 150 for the headline
    assert manifest.dropout["mc_last_k"] == 1
    assert manifest.metrics["headline"]["test_n"] == 150
    assert set(manifest.metrics["headline_test"]) == {"deterministic", "mc_last_1"}
    assert manifest.metrics["modes"]["deterministic"]["before_temperature"]["accuracy"] > 0.6


def test_bad_arguments_exit_with_usage() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--preset", "tiny", "--mc-samples", "1"])
    assert info.value.code == 2
