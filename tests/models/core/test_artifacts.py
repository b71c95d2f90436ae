"""Artifact round trip and every refusal: missing, half-written, corrupt, pickle, wrong task, no dropout."""

import json
import shutil
from pathlib import Path

import pytest

from models.core.artifacts import (
    MANIFEST_NAME,
    ArtifactError,
    Manifest,
    list_artifacts,
    read_manifest,
    resolve_artifact,
    verify_artifact,
    write_artifact,
)
from models.core.predictor import PredictorOptions
from models.registry import load_predictor
from models.sentiment.predictor import SentimentPredictor
from tests.factories import make_tiny_sentiment_artifact


def test_round_trip_lists_every_file_with_checksum(tmp_path: Path) -> None:
    art = make_tiny_sentiment_artifact(tmp_path)
    manifest = verify_artifact(art)
    assert manifest.task == "classification" and manifest.labels == ["negative", "positive"]
    assert "model/model.safetensors" in manifest.files
    assert all(len(digest) == 64 for digest in manifest.files.values())
    assert resolve_artifact(tmp_path, "sentiment") == art
    predictor = load_predictor(art, PredictorOptions())
    assert isinstance(predictor, SentimentPredictor) and predictor.version == manifest.version


def test_newest_version_wins_unless_pinned(tmp_path: Path) -> None:
    old = make_tiny_sentiment_artifact(tmp_path)
    new = make_tiny_sentiment_artifact(tmp_path)
    assert list_artifacts(tmp_path, "sentiment") == sorted([old, new])
    assert resolve_artifact(tmp_path, "sentiment") == max(old, new)
    assert resolve_artifact(tmp_path, "sentiment", version=min(old, new).name) == min(old, new)
    with pytest.raises(ArtifactError, match="pinned"):
        resolve_artifact(tmp_path, "sentiment", version="nope")


def test_missing_artifact_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no complete sentiment artifact"):
        resolve_artifact(tmp_path, "sentiment")


def test_failed_write_leaves_nothing_loadable(tmp_path: Path) -> None:
    def crash(staging: Path) -> None:
        (staging / "model").mkdir()
        (staging / "model" / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    manifest = Manifest(task="sentiment", version="v1", model_class="X")
    with pytest.raises(OSError, match="disk full"):
        write_artifact(tmp_path, manifest, crash)
    assert list_artifacts(tmp_path, "sentiment") == []
    assert not any((tmp_path / "sentiment").iterdir()), "staging directory must be removed"


def test_half_written_artifact_without_manifest_is_skipped_and_refused(tmp_path: Path) -> None:
    art = make_tiny_sentiment_artifact(tmp_path)
    (art / MANIFEST_NAME).unlink()
    assert list_artifacts(tmp_path, "sentiment") == []
    with pytest.raises(ArtifactError, match="half-written"):
        verify_artifact(art)


def test_corrupt_weights_fail_checksum(tmp_path: Path) -> None:
    art = make_tiny_sentiment_artifact(tmp_path)
    weights = art / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_predictor(art, PredictorOptions())


def test_truncated_file_and_missing_file(tmp_path: Path) -> None:
    art = make_tiny_sentiment_artifact(tmp_path)
    tok = art / "model" / "tokenizer.json"
    tok.write_bytes(tok.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="checksum"):
        verify_artifact(art)
    tok.unlink()
    with pytest.raises(ArtifactError, match="missing file"):
        verify_artifact(art)


def test_unreadable_or_foreign_manifest(tmp_path: Path) -> None:
    art = make_tiny_sentiment_artifact(tmp_path)
    (art / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        verify_artifact(art)
    (art / MANIFEST_NAME).write_text(json.dumps({"schema_version": 99, "task": "sentiment"}))
    with pytest.raises(ArtifactError, match="schema_version"):
        verify_artifact(art)


def test_pickle_weights_are_refused(tmp_path: Path) -> None:
    art = make_tiny_sentiment_artifact(tmp_path)
    (art / "model" / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ArtifactError, match="pickle"):
        verify_artifact(art)
    with pytest.raises(ArtifactError, match="pickle"):
        write_artifact(
            tmp_path,
            Manifest(task="sentiment", version="v2", model_class="X"),
            lambda d: (d / "weights.pt").write_bytes(b"x"),
        )


def test_model_without_dropout_is_refused(tmp_path: Path) -> None:
    art = make_tiny_sentiment_artifact(tmp_path, dropout=0.0)
    with pytest.raises(ArtifactError, match="no active dropout"):
        load_predictor(art, PredictorOptions())


def test_wrong_task_for_loader(tmp_path: Path) -> None:
    art = make_tiny_sentiment_artifact(tmp_path)
    raw = json.loads((art / MANIFEST_NAME).read_text())
    raw["task"] = "weather"
    (art / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="no predictor for task 'weather'"):
        load_predictor(art, PredictorOptions())
    with pytest.raises(ArtifactError, match="is not 'sentiment'"):
        SentimentPredictor.load(art, PredictorOptions())


def test_classification_and_the_older_sentiment_kind_load_the_same_predictor_under_their_own_name(
        tmp_path: Path) -> None:
    art = make_tiny_sentiment_artifact(tmp_path, name="tickets")
    assert SentimentPredictor.load(art, PredictorOptions()).name == "tickets"
    raw = json.loads((art / MANIFEST_NAME).read_text())
    raw["task"] = "sentiment"  # what artifacts written before the kinds were named say
    (art / MANIFEST_NAME).write_text(json.dumps(raw))
    predictor = load_predictor(art, PredictorOptions())
    assert isinstance(predictor, SentimentPredictor) and predictor.describe()["name"] == "tickets"


def test_a_derived_version_sorts_after_its_source_within_the_same_second() -> None:
    from datetime import UTC, datetime

    from models.core.artifacts import new_version_id

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    source = "20260101T120000Z-ffffff"  # the largest suffix: a same-second id could only sort before it
    derived = [new_version_id(now, after=source) for _ in range(20)]
    assert all(d > source for d in derived)
    assert new_version_id(datetime(2026, 1, 2, tzinfo=UTC), after=source).startswith("20260102T000000Z-")


def test_a_version_written_within_the_same_second_as_the_newest_still_sorts_after_it(tmp_path: Path) -> None:
    first = make_tiny_sentiment_artifact(tmp_path, seed=0)
    later = Manifest(**{**read_manifest(first).__dict__, "version": first.name.split("-")[0] + "-000000", "files": {}})

    def copy_model(staging: Path) -> None:
        shutil.copytree(first / "model", staging / "model")

    second = write_artifact(tmp_path, later, copy_model)  # its id as drawn sorts before the served one
    assert second.name > first.name and read_manifest(second).version == second.name
    assert resolve_artifact(tmp_path, "sentiment") == second
    verify_artifact(second)
