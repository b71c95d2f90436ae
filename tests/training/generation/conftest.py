"""The tiny generation job's artifact, trained once per session for the modules that read it."""

from pathlib import Path

import pytest

from training.generation.job import main


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `--preset tiny` generation artifact (synthetic prose, tiny Llama); its cache is `<root>/cache`."""
    root = tmp_path_factory.mktemp("gen")
    assert main(["--preset", "tiny", "--output-dir", str(root / "out"), "--cache-dir", str(root / "cache")]) == 0
    (path,) = (root / "out" / "generation").iterdir()
    return path
