"""Builders of tiny, random but complete artifacts for tests (about a second each, offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.artifacts import Manifest, library_versions, new_version_id, write_artifact
from models.sentiment import save_sentiment_model
from models.sentiment_model import build_tiny_classifier, train_wordpiece_tokenizer

LABELS = ["negative", "positive"]
CORPUS = [
    "a quiet moving film with a wonderful cast",
    "the plot was dull and the acting was terrible",
    "I loved every minute of this brilliant story",
    "boring, predictable and far too long",
    "an average movie with some good moments",
] * 4


def make_tiny_sentiment_artifact(
    root: Path,
    *,
    dropout: float = 0.1,
    num_layers: int = 2,
    mc_last_k: int | None = None,
    mc_sites: list[str] | None = None,
    calibration: dict[str, Any] | None = None,
    max_length: int = 64,
    seed: int = 0,
) -> Path:
    """Write `root/sentiment/<version>/` holding a random tiny BERT classifier and return its path."""
    tokenizer = train_wordpiece_tokenizer(CORPUS, vocab_size=200)
    model = build_tiny_classifier(len(tokenizer), LABELS, num_layers=num_layers, dropout=dropout, seed=seed)
    manifest = Manifest(
        task="sentiment",
        version=new_version_id(),
        model_class=type(model).__name__,
        labels=LABELS,
        libraries=library_versions(),
        dropout={
            "rate": dropout,
            "mc_sites": mc_sites or ["hidden", "head"],
            "mc_last_k": mc_last_k or num_layers,
            "num_layers": num_layers,
        },
        default_mc_samples=8,
        preprocessing={"max_length": max_length, "head_tokens": max_length // 4},
        calibration=calibration
        or {
            "temperature": 1.0,
            "mc_samples": 8,
            "abstain": {"measure": "predictive_entropy", "threshold": 0.69, "target_risk": 0.05},
        },
    )
    return write_artifact(Path(root), manifest, lambda staging: save_sentiment_model(model, tokenizer, staging))
