"""A tiny random sentiment artifact for the benches' smoke modes (`--tiny`), made by the real training job's
`tiny` preset (seconds, offline), so the benches need nothing from `tests/`."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from training.sentiment.job import main as train_sentiment


def tiny_sentiment_artifacts(workdir: Path) -> Path:
    """Train the `tiny` sentiment preset into `workdir/artifacts` and return that artifact root."""
    root = Path(workdir) / "artifacts"
    with contextlib.redirect_stdout(io.StringIO()):  # the job prints the artifact path; keep bench output clean
        status = train_sentiment(["--preset", "tiny", "--output-dir", str(root),
                                  "--cache-dir", str(Path(workdir) / "cache")])
    if status:
        raise RuntimeError(f"the tiny sentiment preset failed with status {status}")
    return root
