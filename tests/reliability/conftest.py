"""Shared fixtures of the reliability suite: tiny random artifacts built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import make_tiny_generation_artifact, make_tiny_sentiment_artifact, make_tiny_translation_artifact


@pytest.fixture
def anyio_backend() -> str:
    """The service runs on asyncio (uvicorn's loop); anyio would also run every async test under trio."""
    return "asyncio"


@pytest.fixture(scope="session")
def sentiment_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts root holding one tiny random sentiment model."""
    root = tmp_path_factory.mktemp("sentiment-artifacts")
    make_tiny_sentiment_artifact(root)
    return root


@pytest.fixture(scope="session")
def two_task_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts root holding a tiny sentiment and a tiny translation model."""
    root = tmp_path_factory.mktemp("two-task-artifacts")
    make_tiny_sentiment_artifact(root)
    make_tiny_translation_artifact(root)
    return root


@pytest.fixture(scope="session")
def all_task_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts root holding tiny sentiment, translation and generation models."""
    root = tmp_path_factory.mktemp("all-task-artifacts")
    make_tiny_sentiment_artifact(root)
    make_tiny_translation_artifact(root)
    make_tiny_generation_artifact(root)
    return root
