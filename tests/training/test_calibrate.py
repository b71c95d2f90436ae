"""Calibrate without training (`python -m training.calibrate`): a fine-tuned checkpoint saved to disk becomes a
served artifact on the user's validation file; a checkpoint without dropout and bad arguments are refused."""

import json
from pathlib import Path

import pytest

from models.core.artifacts import list_artifacts, verify_artifact
from models.core.predictor import MCRequest, PredictorOptions
from models.generation.predictor import GenerationPredictor
from models.sentiment.predictor import SentimentPredictor
from models.translation.predictor import TranslationPredictor
from tests.checkpoints import PAIRS, save_classifier, save_llama, save_marian
from training.calibrate.__main__ import main
from training.generation.synthetic import synthetic_documents

TICKETS = Path(__file__).parents[2] / "examples" / "support_tickets.csv"
LABELS = ("account", "billing", "shipping", "technical")


def _common(tmp_path: Path, base: Path, validation: Path, name: str) -> list[str]:
    return ["--preset", "tiny", "--base-model", str(base), "--validation-file", str(validation), "--name", name,
            "--output-dir", str(tmp_path / "a"), "--cache-dir", str(tmp_path / "c")]


def test_classification_checkpoint_is_calibrated_and_served_without_training(tmp_path: Path) -> None:
    base = save_classifier(tmp_path / "ckpt", "distilbert", labels=LABELS, seed=2)
    weights = (base / "model.safetensors").read_bytes()
    assert main(["--task", "classification", *_common(tmp_path, base, TICKETS, "tickets-calibrated")]) == 0
    (artifact,) = list_artifacts(tmp_path / "a", "tickets-calibrated")
    manifest = verify_artifact(artifact)
    assert manifest.labels == list(LABELS) and manifest.training_config["preset"] == "tiny"
    assert manifest.metrics["training"]["steps"] == 0  # nothing trained: the weights are the checkpoint's
    assert (artifact / "model" / "model.safetensors").read_bytes() == weights
    assert manifest.calibration["temperature"] > 0 and manifest.calibration["abstain"]["measure"]
    used = manifest.data["used"]["validation"]["parts"]
    assert used["periodic"] == 0 and used["selection"] > 0 and used["calibration"] > 0
    assert manifest.data["splits"]["test"] > 0  # the report's part, held out of the validation file
    assert json.loads((artifact / "reports" / "metrics.json").read_text())["headline"]["test_n"] > 0
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    (out,) = predictor.predict([predictor.prepare("My parcel never arrived.", {})], [MCRequest(5, 1)])
    assert list(out.probabilities) == list(LABELS) and out.uncertainty is not None


def test_translation_checkpoint_is_calibrated_and_served_without_training(tmp_path: Path) -> None:
    base = save_marian(tmp_path / "opus-mt-tiny")
    validation = tmp_path / "validation.tsv"
    validation.write_text("source\ttarget\n" + "".join(f"{s}\t{t}\n" for s, t in PAIRS * 2), "utf-8")
    assert main(["--task", "translation", *_common(tmp_path, base, validation, "phrasebook"),
                 "--source-language", "en", "--target-language", "fr"]) == 0
    (artifact,) = list_artifacts(tmp_path / "a", "phrasebook")
    manifest = verify_artifact(artifact)
    assert (manifest.preprocessing["source_language"], manifest.preprocessing["target_language"]) == ("en", "fr")
    assert manifest.calibration["temperature"] > 0 and manifest.metrics["training"]["steps"] == 0
    predictor = TranslationPredictor.load(artifact, PredictorOptions())
    (out,) = predictor.predict([predictor.prepare("the cat is old", {"max_new_tokens": 6})], [MCRequest(3, 1)])
    assert out.uncertainty is not None


def test_a_checkpoint_without_dropout_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = save_classifier(tmp_path / "ckpt", "bert", labels=LABELS, dropout=0.0)
    capsys.readouterr()
    assert main(["--task", "classification", *_common(tmp_path, base, TICKETS, "no-dropout")]) == 1
    err = capsys.readouterr().err
    assert "has no dropout" in err and "Traceback" not in err and not (tmp_path / "a").exists()


def test_labels_the_checkpoint_does_not_know_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = save_classifier(tmp_path / "ckpt", "bert", labels=("account", "billing", "shipping", "other"))
    capsys.readouterr()
    assert main(["--task", "classification", *_common(tmp_path, base, TICKETS, "wrong-labels")]) == 1
    err = capsys.readouterr().err
    assert "support_tickets.csv, line" in err and "unknown label 'technical'" in err


def test_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--task", "speech"]) == 2
    with pytest.raises(SystemExit) as exited:
        main(["--task", "classification", "--name", "x"])
    assert exited.value.code == 2 and "--base-model" in capsys.readouterr().err


def _prose(path: Path) -> Path:
    path.write_text("\n\n".join(synthetic_documents(seed=3).values()), "utf-8")
    return path


def test_generation_checkpoint_with_dropout_is_calibrated_and_served(tmp_path: Path) -> None:
    base = save_llama(tmp_path / "llama", dropout=0.1, seed=1)
    assert main(["--task", "generation", *_common(tmp_path, base, _prose(tmp_path / "val.txt"), "my-lm")]) == 0
    (artifact,) = list_artifacts(tmp_path / "a", "my-lm")
    manifest = verify_artifact(artifact)
    assert manifest.metrics["training"]["steps"] == 0 and manifest.dropout["rate"] == 0.1
    abstain = manifest.calibration["abstain"]
    assert manifest.calibration["temperature"] > 0 and abstain["fitted_n"] > 0 and abstain["measure"]
    assert manifest.data["used_blocks"]["validation_periodic"] == 0  # nothing trained: no early-stopping part
    assert manifest.data["used_blocks"]["validation_calibration"] > 0 and manifest.data["used_blocks"]["test_prompts"]
    predictor = GenerationPredictor.load(artifact, PredictorOptions())
    (out,) = predictor.predict([predictor.prepare("It was a", {"max_new_tokens": 4})], [MCRequest(3, 1)])
    assert out.uncertainty is not None


def test_a_causal_lm_without_dropout_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = save_llama(tmp_path / "llama", dropout=0.0)
    capsys.readouterr()
    assert main(["--task", "generation", *_common(tmp_path, base, _prose(tmp_path / "v.txt"), "plain")]) == 1
    err = capsys.readouterr().err
    assert "has no dropout" in err and "python -m training.generation --base-model" in err
    assert not (tmp_path / "a").exists()
