"""Builders of tiny, random but complete artifacts for tests (about a second each, offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.core.artifacts import Manifest, library_versions, new_version_id, write_artifact
from models.core.base import save_model
from models.core.tokenizers import train_joint_tokenizer
from models.generation.model import build_tiny_llama, train_tiny_tokenizer
from models.sentiment.model import build_tiny_classifier, train_wordpiece_tokenizer
from models.translation.model import build_marian_preset
from training.translation.data import make_parallel_corpus

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
    labels: list[str] | None = None,
    name: str | None = None,
) -> Path:
    """Write `root/<name>/<version>/` (name default: sentiment) holding a random tiny BERT classifier over `labels`
    (default: negative, positive) and return its path."""
    labels = labels or LABELS
    tokenizer = train_wordpiece_tokenizer(CORPUS, vocab_size=200)
    model = build_tiny_classifier(len(tokenizer), labels, num_layers=num_layers, dropout=dropout, seed=seed)
    manifest = Manifest(
        task="classification",
        name=name,
        version=new_version_id(),
        model_class=type(model).__name__,
        labels=labels,
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
    return write_artifact(Path(root), manifest, lambda staging: save_model(model, tokenizer, staging))


def make_tiny_translation_artifact(
    root: Path,
    *,
    dropout: float = 0.1,
    decoder_layers: int = 2,
    mc_last_k: int | None = None,
    mc_sites: list[str] | None = None,
    calibration: dict[str, Any] | None = None,
    max_input_tokens: int = 48,
    max_new_tokens: int = 24,
    default_max_new_tokens: int = 12,
    seed: int = 0,
) -> Path:
    """Write `root/translation/<version>/` holding an untrained tiny Marian (preset "tiny", joint BPE
    vocabulary trained on the synthetic Bible-like corpus) and return its path."""
    pairs = make_parallel_corpus(60, seed=seed)
    tokenizer = train_joint_tokenizer([t for p in pairs for t in (p.source, p.target)], vocab_size=300)
    model = build_marian_preset(
        "tiny", vocab_size=len(tokenizer), decoder_layers=decoder_layers, dropout=dropout,
        attention_dropout=dropout, activation_dropout=dropout, seed=seed,
    )
    manifest = Manifest(
        task="translation",
        version=new_version_id(),
        model_class=type(model).__name__,
        libraries=library_versions(),
        dropout={
            "rates": {"hidden": dropout, "attention": dropout, "activation": dropout},
            "mc_sites": mc_sites or ["hidden"],
            "mc_last_k": mc_last_k or decoder_layers,
            "num_layers": decoder_layers,
        },
        default_mc_samples=4,
        preprocessing={"max_input_tokens": max_input_tokens, "max_new_tokens": max_new_tokens,
                       "default_max_new_tokens": default_max_new_tokens},
        calibration=calibration or {"temperature": 1.0, "mc_samples": 4},
    )
    return write_artifact(Path(root), manifest, lambda staging: save_model(model, tokenizer, staging))


GENERATION_CORPUS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.",
    "The evening passed quietly, and the sisters walked together in the garden until the light was gone.",
    "She could not help smiling at the thought of his letter, however little she wished to admit it.",
    "Mr. Darcy said nothing, but his silence was observed by every person in the room.",
] * 3


def make_tiny_generation_artifact(
    root: Path,
    *,
    dropout: float = 0.1,
    layers: int = 3,
    mc_last_k: int | None = None,
    calibration: dict[str, Any] | None = None,
    max_input_tokens: int = 64,
    max_new_tokens: int = 24,
    default_max_new_tokens: int = 12,
    seed: int = 0,
) -> Path:
    """Write `root/generation/<version>/` holding an untrained tiny Llama with residual and attention
    dropout (byte-level BPE trained on a few Austen-like sentences) and return its path."""
    tokenizer = train_tiny_tokenizer(GENERATION_CORPUS, vocab_size=300)
    model = build_tiny_llama(len(tokenizer), layers=layers, attention_dropout=dropout, hidden_dropout=dropout,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, seed=seed)
    manifest = Manifest(
        task="generation",
        version=new_version_id(),
        model_class=type(model).__name__,
        libraries=library_versions(),
        dropout={"rates": {"hidden": dropout, "attention": dropout}, "mc_sites": ["hidden"],
                 "mc_last_k": mc_last_k or layers, "num_layers": layers},
        default_mc_samples=4,
        preprocessing={"max_input_tokens": max_input_tokens, "max_new_tokens": max_new_tokens,
                       "default_max_new_tokens": default_max_new_tokens},
        calibration=calibration or {"temperature": 1.0, "mc_samples": 4},
    )
    return write_artifact(Path(root), manifest, lambda staging: save_model(model, tokenizer, staging))
