"""The tiny translation job's artifact, trained once per session for the modules that read it."""

from pathlib import Path

import pytest

from models.core.artifacts import list_artifacts
from training.translation.job import main

# A quality bar the tiny model misses on about half of the validation verses, so the fitted rule is a real
# threshold (the default bar of 20 chrF is met by every tiny translation: the rule would keep everything).
RULE_ARGS = ["--bad-chrf", "65", "--target-risk", "0.3"]


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `--preset tiny` translation artifact (synthetic corpus); its cache is `<root>/cache`."""
    root = tmp_path_factory.mktemp("tiny-translation")
    status = main(["--preset", "tiny", "--output-dir", str(root / "artifacts"), "--cache-dir", str(root / "cache"),
                   *RULE_ARGS])
    assert status == 0
    (path,) = list_artifacts(root / "artifacts", "translation")
    return path
