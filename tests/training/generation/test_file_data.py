"""Your data: a user's prose for the generation job, plain text or JSONL (training/generation/data.py)."""

import json
from pathlib import Path

import pytest

from training.core.datafiles import DataFileError
from training.generation.data import TextFiles, check_blocks, load_text_files


def files(train: Path, validation: Path | None = None, test: Path | None = None, **kw: object) -> TextFiles:
    settings: dict = {"text_key": "text", "validation_fraction": 0.1, "test_fraction": 0.1, "seed": 5, **kw}
    return TextFiles(train, validation, test, **settings)


def test_a_text_file_is_one_document_with_a_paragraph_aligned_held_out_block(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    paragraphs = [f"Paragraph {i} says something about the weather, line one.\nAnd line two." for i in range(30)]
    path.write_text("\r\n\r\n".join(paragraphs) + "\n\n\n", "utf-8")
    corpus, split = load_text_files(files(path))
    assert list(corpus.documents) == ["notes.txt"] and corpus.source["documents"] == {"train": 1}
    assert corpus.documents["notes.txt"] == "\n\n".join(paragraphs)  # newlines normalised, paragraphs kept
    held = split.segments["validation"] + split.segments["test"]
    assert held and all(p in paragraphs for segment in held for p in segment.split("\n\n"))  # whole paragraphs
    assert split.record()["method"].startswith("one contiguous held-out block")


def test_a_jsonl_file_holds_one_document_per_line_and_whole_documents_are_held_out(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps({"body": f"Answer number {i}."}) + "\n" for i in range(20)), "utf-8")
    corpus, split = load_text_files(files(path, text_key="body"))
    assert len(corpus.documents) == 20 and "answers.jsonl, line 3" in corpus.documents
    assert {name: len(v) for name, v in split.segments.items()} == {"train": 16, "validation": 2, "test": 2}
    assert sorted(sum(split.segments.values(), [])) == sorted(f"Answer number {i}." for i in range(20))
    assert split.record()["method"] == "whole documents held out at random"


def test_given_validation_and_test_files(tmp_path: Path) -> None:
    train, validation, test = tmp_path / "train.txt", tmp_path / "val.jsonl", tmp_path / "test.txt"
    train.write_text("Once upon a time.\n\nThe end.\n", "utf-8")
    validation.write_text('{"text": "A validation story."}\n', "utf-8")
    test.write_text("A test story.\n", "utf-8")
    corpus, split = load_text_files(files(train, validation, test))
    assert split.segments == {"train": ["Once upon a time.\n\nThe end."], "validation": ["A validation story."],
                              "test": ["A test story."]}
    assert split.record()["method"] == "given files" and corpus.source["held_out_of_train"] is None


def test_bad_text_files_name_file_line_and_problem(tmp_path: Path) -> None:
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"text": "broken\n', "utf-8")
    with pytest.raises(DataFileError, match=r"docs\.jsonl, line 2: malformed JSON"):
        load_text_files(files(jsonl))
    jsonl.write_text('{"text": "fine"}\n{"text": ""}\n', "utf-8")
    with pytest.raises(DataFileError, match=r"docs\.jsonl, line 2: empty text in column 'text'"):
        load_text_files(files(jsonl))
    text = tmp_path / "latin1.txt"
    text.write_bytes("fine\nna\xefve\n".encode("latin-1"))
    with pytest.raises(DataFileError, match=r"latin1\.txt, line 2: not valid UTF-8 \(byte 0xef at column 3\)"):
        load_text_files(files(text))
    few = tmp_path / "few.jsonl"
    few.write_text('{"text": "one"}\n{"text": "two"}\n', "utf-8")
    with pytest.raises(DataFileError, match=r"few\.jsonl: too few examples for a stratified split: 2 examples"):
        load_text_files(files(few))
    with pytest.raises(DataFileError, match=r"few\.jsonl: too little validation text: not one block of 32 tokens"):
        check_blocks({"train": 3, "validation": 0, "test": 1}, 32, files(few))
