"""Held-out spans of long documents, and token blocks for causal-LM training and evaluation.

Contract of `split_documents(documents, validation_fraction, test_fraction, seed)`:
- each document keeps ONE contiguous held-out block of about (validation + test) × its length, validation
  first and test right after it; everything before and after the block is train. The block's position is
  drawn per document from (seed, title), so adding a document does not move the others' blocks, and the
  held-out text is not all novel endings;
- cut points are snapped to the nearest paragraph start ("\n\n"), so no paragraph is split between sets;
- every piece is returned as its own segment: windows are cut within a split only, so no training block
  overlaps held-out text (random lines or overlapping windows would leak it);
- returns a `ProseSplit` with the segments per split, the character spans per document, and `record()`
  (fractions, seed, sizes in characters and optionally tokens) for the manifest.
Raises ValueError for fractions outside [0, 1) or summing to ≥ 1, or no documents.

`token_stream(segments, encode, eos_id)` tokenises each segment and ends it with `eos_id`;
`chunk_token_ids(ids, block_size)` packs such a stream into a [n, block_size] LongTensor (remainder dropped).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

SPLITS = ("train", "validation", "test")
_PARAGRAPH = "\n\n"


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of document `document` belong to split `split`."""

    document: str
    split: str
    start: int
    end: int


@dataclass(frozen=True)
class ProseSplit:
    """Contiguous segments per split (train/validation/test), the spans they came from, and the settings."""

    segments: dict[str, list[str]]
    spans: tuple[Span, ...]
    validation_fraction: float
    test_fraction: float
    seed: int
    method: str = "one contiguous held-out block per document, paragraph-aligned"  # how the held-out text was chosen

    def chars(self) -> dict[str, int]:
        return {name: sum(map(len, pieces)) for name, pieces in self.segments.items()}

    def token_counts(self, encode: Callable[[str], Sequence[int]]) -> dict[str, int]:
        """Tokens per split under `encode` (no special tokens added by this function)."""
        return {name: sum(len(encode(piece)) for piece in pieces) for name, pieces in self.segments.items()}

    def record(self, tokens: Mapping[str, int] | None = None) -> dict[str, object]:
        """Manifest record: settings, per-split segments/characters (and `tokens` if given), per-document spans."""
        chars = self.chars()
        splits = {name: {"segments": len(self.segments[name]), "chars": chars[name],
                         **({"tokens": int(tokens[name])} if tokens is not None else {})} for name in SPLITS}
        documents: dict[str, dict[str, list[int]]] = {}
        for span in self.spans:
            if span.split != "train":
                documents.setdefault(span.document, {})[span.split] = [span.start, span.end]
        return {"method": self.method,
                "validation_fraction": self.validation_fraction, "test_fraction": self.test_fraction,
                "seed": self.seed, "splits": splits, "held_out_spans": documents}


def snap_to_paragraph(text: str, position: int) -> int:
    """The paragraph start (0, len(text), or just after a blank line) nearest to `position`; ties go left."""
    if position <= 0:
        return 0
    if position >= len(text):
        return len(text)
    before = text.rfind(_PARAGRAPH, 0, position + 1)  # a break that starts at `position` - 1 still counts
    left = 0 if before < 0 else before + len(_PARAGRAPH)
    after = text.find(_PARAGRAPH, position)
    right = len(text) if after < 0 else after + len(_PARAGRAPH)
    if left > position:  # the break straddles `position`: both candidates collapse onto it
        return left
    return left if position - left <= right - position else right


def held_out_bounds(text: str, validation_fraction: float, test_fraction: float,
                    rng: random.Random) -> tuple[int, int, int]:
    """(start, validation end = test start, test end) of the held-out block of `text`, paragraph-aligned."""
    length = len(text)
    n_val, n_test = round(validation_fraction * length), round(test_fraction * length)
    start = rng.randint(0, length - n_val - n_test)
    a = snap_to_paragraph(text, start)
    b = snap_to_paragraph(text, start + n_val)
    c = snap_to_paragraph(text, start + n_val + n_test)
    return a, b, c


def split_documents(
    documents: Mapping[str, str], validation_fraction: float, test_fraction: float, seed: int
) -> ProseSplit:
    """Train/validation/test segments of `documents` (title → text); see module docstring."""
    if not documents:
        raise ValueError("no documents to split")
    if not (0 <= validation_fraction < 1 and 0 <= test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise ValueError(f"fractions must be in [0, 1) and sum to < 1, got {validation_fraction}, {test_fraction}")
    segments: dict[str, list[str]] = {name: [] for name in SPLITS}
    spans: list[Span] = []
    for title, text in documents.items():
        rng = random.Random(f"{seed}/{title}")  # str seeds hash with sha512: the same in every process
        a, b, c = held_out_bounds(text, validation_fraction, test_fraction, rng)
        for split, start, end in (("train", 0, a), ("validation", a, b), ("test", b, c), ("train", c, len(text))):
            piece = text[start:end].strip("\n")
            if piece:
                segments[split].append(piece)
                spans.append(Span(title, split, start, end))
    return ProseSplit(segments, tuple(spans), validation_fraction, test_fraction, seed)


def token_stream(segments: Sequence[str], encode: Callable[[str], Sequence[int]], eos_id: int | None) -> list[int]:
    """Token ids of every segment in order, each followed by `eos_id` (when not None) to mark the seam."""
    ids: list[int] = []
    for segment in segments:
        ids.extend(encode(segment))
        if eos_id is not None:
            ids.append(eos_id)
    return ids


def chunk_token_ids(ids: Sequence[int], block_size: int) -> torch.Tensor:
    """Consecutive, non-overlapping blocks of `block_size` ids as a [n, block_size] int64 tensor; the
    incomplete tail is dropped (so every block is full and needs no padding). ValueError if block_size < 2."""
    if block_size < 2:
        raise ValueError(f"block_size must be ≥ 2 for next-token prediction, got {block_size}")
    n = len(ids) // block_size
    return torch.tensor(list(ids[: n * block_size]), dtype=torch.long).view(n, block_size)
