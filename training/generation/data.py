"""Public-domain English prose for the generation task, read straight out of pinned archives (DATA.md); the
readers live in training/core/prose.py (the OOD probes of every task read the same texts) and are re-exported here.

The built-in loaders (`load_austen`, `load_shakespeare`, `load_bible_english`) and their `Corpus` contract are
documented in training/core/prose.py.

Contract of `load_text_files(files)` (a user's prose, `--data file`) → (Corpus, ProseSplit): a `.txt` file is ONE
document (UTF-8; blank lines separate its paragraphs); a `.jsonl` file holds one document per line, under the
`text_key`. Every given file is read and checked first (training.core.datafiles: invalid UTF-8, malformed JSON,
missing key, empty text). A held-out split that was not given comes from the training file: of a `.txt`, one
contiguous paragraph-aligned block per document (`split_documents`); of a `.jsonl`, whole documents at random
(seeded). `check_blocks` raises DataFileError when a split has too little text for one token block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from training.core.datafiles import (
    DataFileError,
    field_text,
    file_format,
    file_record,
    holdout_split,
    read_records,
    read_text,
)
from training.core.prose import (  # noqa: F401  (re-exported: the generation job's names)
    AUSTEN,
    AUSTEN_TITLES,
    SHAKESPEARE,
    SHAKESPEARE_POEMS,
    WEB,
    Corpus,
    austen_text,
    bible_books,
    load_austen,
    load_bible_english,
    load_bible_verses,
    load_shakespeare,
    normalise_text,
    read_r_lazyload,
    read_shakespeare,
    unwrap_paragraphs,
)
from training.generation.split import SPLITS, ProseSplit, split_documents

WHOLE_DOCUMENTS = "whole documents held out at random"


@dataclass(frozen=True)
class TextFiles:
    """A user's prose files and how to read and split them (module docstring); None: held out of `train`."""

    train: Path
    validation: Path | None
    test: Path | None
    text_key: str
    validation_fraction: float
    test_fraction: float
    seed: int

    def blamed(self, split: str) -> Path:
        """The file a split's text came from."""
        return {"validation": self.validation, "test": self.test}.get(split) or self.train


def read_documents(path: Path, text_key: str) -> dict[int, str]:
    """First line → text of each document of a `.txt` (one document) or `.jsonl` file (one per line)."""
    if file_format(path, ("text", "jsonl")) == "text":
        text = normalise_text(read_text(path))
        if not text:
            raise DataFileError(path, "the file holds no text")
        return {1: text}
    return {r.line: normalise_text(field_text(r, text_key, path, "text")) for r in read_records(path, "jsonl")}


def load_text_files(files: TextFiles) -> tuple[Corpus, ProseSplit]:
    """The training documents and the train/validation/test segments of a user's files (module docstring)."""
    given = {name: path for name, path in zip(SPLITS, (files.train, files.validation, files.test), strict=True)
             if path is not None}
    read = {name: read_documents(path, files.text_key) for name, path in given.items()}
    one_document = file_format(files.train, ("text", "jsonl")) == "text"
    documents = {files.train.name if one_document else f"{files.train.name}, line {line}": text
                 for line, text in read["train"].items()}
    fractions = {name: fraction for name, fraction in (("validation", files.validation_fraction),
                                                       ("test", files.test_fraction))
                 if name not in read and fraction > 0}  # 0: that split is not wanted (calibration's validation)
    held = {name: list(read[name].values()) for name in ("validation", "test") if name in read}
    if not fractions:
        split = ProseSplit({"train": list(documents.values()), **held}, (), 0.0, 0.0, files.seed, "given files")
    elif one_document:
        split = split_documents(documents, fractions.get("validation", 0.0), fractions.get("test", 0.0), files.seed)
        split = replace(split, segments={**split.segments, **held})
    else:
        lines = list(read["train"])
        index = holdout_split(None, fractions, files.seed, files.train, lines)
        segments = {name: [read["train"][lines[i]] for i in index[name]] for name in ("train", *fractions)}
        split = ProseSplit({**segments, **held}, (), fractions.get("validation", 0.0), fractions.get("test", 0.0),
                           files.seed, WHOLE_DOCUMENTS)
    source = {"name": "your files", "files": [file_record(path, name, file_format(path, ("text", "jsonl")),
                                                          len(read[name])) for name, path in given.items()],
              "text_key": files.text_key, "documents": {name: len(docs) for name, docs in read.items()},
              "held_out_of_train": {**fractions, "seed": files.seed, "method": split.method} if fractions else None}
    return Corpus(documents, source), split


def check_blocks(blocks: dict[str, int], block_size: int, files: TextFiles) -> None:
    """DataFileError when a split has no complete block of `block_size` tokens (blocks: split → count)."""
    for name in SPLITS:
        if blocks[name] < 1:
            hint = ("add text (a .txt needs paragraphs separated by blank lines to hold a block out), give the "
                    "split's own file or lower --block-size") if name != "train" else "add text or lower --block-size"
            raise DataFileError(files.blamed(name), f"too little {name} text: not one block of {block_size} tokens; "
                                                    f"{hint}")
