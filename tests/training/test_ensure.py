"""`python -m training.ensure`: trains only the tasks without a complete artifact."""

from pathlib import Path

import pytest

from models.core.artifacts import MANIFEST_NAME, list_artifacts
from tests.factories import make_tiny_sentiment_artifact
from training import ensure


def test_parse_tasks_accepts_lists_and_all_and_rejects_unknown() -> None:
    assert ensure.parse_tasks("sentiment") == ["sentiment"]
    assert ensure.parse_tasks(" sentiment , ") == ["sentiment"]
    assert ensure.parse_tasks("all") == list(ensure.JOBS)
    with pytest.raises(ValueError, match="unknown tasks"):
        ensure.parse_tasks("sentiment,weather")
    with pytest.raises(ValueError):
        ensure.parse_tasks(" , ")


def test_existing_artifact_is_used_not_retrained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = make_tiny_sentiment_artifact(tmp_path)

    def must_not_train(argv: list[str]) -> int:
        raise AssertionError(f"trained although {existing} exists: {argv}")

    monkeypatch.setattr("training.sentiment.job.main", must_not_train)
    assert ensure.main(["--tasks", "sentiment", "--output-dir", str(tmp_path)]) == 0
    assert list_artifacts(tmp_path, "sentiment") == [existing]


def test_missing_or_half_written_artifact_is_trained(tmp_path: Path) -> None:
    half = make_tiny_sentiment_artifact(tmp_path)
    (half / MANIFEST_NAME).unlink()  # an interrupted run: must not count as present
    status = ensure.main(
        ["--tasks", "sentiment", "--preset", "tiny", "--output-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c")]
    )
    assert status == 0
    trained = list_artifacts(tmp_path, "sentiment")
    assert len(trained) == 1 and trained[0] != half


def test_failed_training_exits_nonzero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("training.sentiment.job.main", lambda argv: 0)  # "succeeds" but writes nothing
    assert ensure.main(["--tasks", "sentiment", "--output-dir", str(tmp_path)]) == 1


def test_a_failed_task_leaves_a_status_a_server_reads_and_a_trained_one_none(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    def explode(argv: list[str]) -> int:
        raise RuntimeError("out of disk")

    monkeypatch.setattr("training.sentiment.job.main", explode)
    assert ensure.main(["--tasks", "sentiment", "--output-dir", str(tmp_path)]) == 1
    status = json.loads((tmp_path / "sentiment" / ensure.STATUS_FILE).read_text())
    assert status["state"] == "failed" and status["error"] == "RuntimeError: out of disk"
    assert status["task"] == "sentiment" and status["preset"] == "quick"
    monkeypatch.setattr("training.sentiment.job.main", lambda argv: make_tiny_sentiment_artifact(tmp_path) and 0)
    assert ensure.main(["--tasks", "sentiment", "--output-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "sentiment" / ensure.STATUS_FILE).exists()
