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
    assert manifest.task == "classification" and manifest.labels == ["negative", "positive"]
    assert manifest.default_mc_samples == 20
    calibration = manifest.calibration
    assert calibration["mc_samples"] == 20
    # τ minimises the validation NLL it was fitted on, so it does no worse there than τ = 1
    assert calibration["validation_nll"]["after"] <= calibration["validation_nll"]["before"]
    assert calibration["abstain"]["measure"] and calibration["abstain"]["target_risk"] == 0.05
    assert manifest.dropout["rate"] == 0.1 and manifest.dropout["num_layers"] == 2
    assert manifest.dropout["mc_sites"] == ["head", "hidden"]
    # τ and the map were chosen by cross-validation on the calibration part; serving reads them back
    (choice,) = [c for name, c in calibration["map_choice"].items() if name != "deterministic"]
    assert set(choice["out_of_fold"]) == {"temperature", "isotonic", "histogram"}
    assert choice["out_of_fold"][choice["chosen"]]["ece"] == min(v["ece"] for v in choice["out_of_fold"].values())
    assert (calibration["confidence_map"] is None) == (choice["chosen"] == "temperature")
    # every choice on validation, each on its own part; the test split only in the report
    choices = manifest.data["choices"]
    assert {c["split"] for name, c in choices.items() if name != "report"} == {"validation"}
    assert choices["report"]["split"] == "test" and choices["report"]["chooses"] == "nothing"
    assert choices["early_stopping_and_best_weights"] == {"split": "validation", "part": "periodic", "n": 100}
    assert calibration["fitted_on"]["part"] == "calibration" and calibration["fitted_on"]["n"] == 120
    assert calibration["abstain"]["chosen_on"] == {"split": "validation", "part": "selection", "n": 80}
    assert manifest.data["used"]["validation"]["parts"] == {"periodic": 100, "selection": 80, "calibration": 120}
    # the serving mode follows the recorded evidence: last-1 when its AUROC is within the tolerance of full MC
    by_mode = manifest.dropout["mc_last_k_evidence"]["best_auroc_by_mode"]
    close = by_mode["mc_last_1"] >= by_mode["mc_full"] - manifest.training_config["mc_last_k_tolerance"]
    assert manifest.dropout["mc_last_k"] == (1 if close else 2) == calibration["mc_last_k"]
    assert manifest.preprocessing == {"max_length": 48, "head_tokens": 12, "truncation": "head+tail"}
    modes = manifest.metrics["modes"]
    assert set(modes) == {"deterministic", "mc_full", "mc_last_1"}
    for mode in modes.values():
        assert {"before_temperature", "after_temperature", "seconds", "reviews_per_second"} <= set(mode)
        expected = {"accuracy", "nll", "brier", "ece", "auroc", "aurc", "prr", "coverage_at_risk"}
        assert expected <= set(mode["after_temperature"])
    assert "after_map" in modes["deterministic"]
    headline = manifest.metrics["headline"]
    assert headline["accuracy_change_from_map"] == 0.0, "the confidence map keeps every label"
    assert set(headline["calibration"]["deterministic"]) == {"before_temperature", "after_temperature", "after_map"}
    measures = manifest.metrics["uncertainty"]["measures"]
    assert {"deterministic/one_minus_confidence", "deterministic/predictive_entropy"} <= set(measures)
    assert all(set(m) == {"auroc", "aurc", "prr"} for m in measures.values())
    assert manifest.data["sources"][0]["splits"] == {"train": 400, "validation": 300, "test": 150}
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
    calibration = verify_artifact(artifact).calibration
    assert predictor.calibration.temperature == calibration["temperature"]
    assert (predictor.calibration.confidence_map is None) == (calibration["confidence_map"] is None)


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
    # every mode on 60 reviews, nested in the 150 of the headline where the deterministic and serving (last-1)
    # modes run
    assert manifest.dropout["mc_last_k"] == 1
    assert manifest.metrics["headline"]["test_n"] == 150
    modes = manifest.metrics["modes"]
    assert modes["mc_full"]["reviews"] == 60
    assert modes["mc_last_1"]["reviews"] == modes["deterministic"]["reviews"] == 150
    assert manifest.data["used"]["test"]["test_modes"] == 60
    assert modes["deterministic"]["before_temperature"]["accuracy"] > 0.6


def test_bad_arguments_exit_with_usage() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--preset", "tiny", "--mc-samples", "1"])
    assert info.value.code == 2


def test_levers_rebuild_the_job_parts_and_choose_on_validation(artifact: Path, tmp_path: Path) -> None:
    from training.sentiment.levers import main as levers_main
    from training.sentiment.levers import plan, set_inference_rate

    config, data, subsets = plan(artifact, tmp_path / "cache")
    manifest = verify_artifact(artifact)
    assert len(subsets.selection_modes) == manifest.data["choices"]["mc_last_k"]["n"]  # the job's own part
    out = tmp_path / "levers.json"
    assert levers_main(["--artifact", str(artifact), "--cache-dir", str(tmp_path / "cache"), "--rates", "0.1,0.3",
                        "--json-out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert {"deterministic/msp", "mc_last_1_p0.1/mutual_information", "mc_last_1_p0.3/mutual_information"} <= set(rows)
    assert not any(name.startswith("hybrid/") for name in rows)  # the tiny preset fits no OOD detector
    assert report["choice"] == max(rows, key=lambda name: rows[name]["validation_auroc"])
    # a higher inference rate draws other masks: the MC measures change
    assert rows["mc_last_1_p0.1/mutual_information"] != rows["mc_last_1_p0.3/mutual_information"]
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    set_inference_rate(predictor.model, 0.3)
    assert predictor.model.config.hidden_dropout_prob == 0.3 and predictor.rates.hidden == 0.1


def test_levers_blend_msp_with_the_ood_score_when_the_artifact_has_a_detector(artifact: Path, tmp_path: Path) -> None:
    from tests.models.sentiment.test_ood_predictor import _sets
    from training.core.ood_artifact import write_with_ood
    from training.core.ood_fit import fit_ood
    from training.core.ood_sets import OODSettings
    from training.sentiment.levers import main as levers_main

    detector, report = fit_ood(SentimentPredictor.load(artifact, PredictorOptions()), _sets(),
                               OODSettings(layers=[0, 1], k=3))
    with_ood = write_with_ood(artifact, tmp_path / "a", detector, report)
    out = tmp_path / "levers.json"
    assert levers_main(["--artifact", str(with_ood), "--cache-dir", str(tmp_path / "cache"), "--rates", "0.1",
                        "--json-out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {f"hybrid/alpha_{a:g}" for a in (0, 0.5, 1)} <= set(rows)
    # α = 1 ranks by 1 − MSP alone: the same AUROC as the baseline
    assert rows["hybrid/alpha_1"]["test_auroc"] == pytest.approx(rows["deterministic/msp"]["test_auroc"])
