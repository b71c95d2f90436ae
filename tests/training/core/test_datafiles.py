"""Reading a user's files (training/core/datafiles.py): every kind of bad file names the file, the line and the
problem; the hold-out split keeps every label in every split."""

from pathlib import Path

import pytest

from training.core.datafiles import (
    DataFileError,
    field_text,
    file_format,
    holdout_split,
    read_jsonl,
    read_records,
    read_table,
    read_text,
    read_tsv_columns,
)


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_csv_keeps_quoted_commas_and_counts_lines_of_multiline_records(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", 'text,label\n"Hi, my card was charged twice",billing\n\n"two\nlines",x\nlast,y\n')
    columns, records = read_table(path, "csv")
    assert columns == ["text", "label"]
    assert [(r.line, r.values["text"]) for r in records] == [
        (2, "Hi, my card was charged twice"), (4, "two\nlines"), (6, "last")]


def test_tsv_and_jsonl_records(tmp_path: Path) -> None:
    _, records = read_table(write(tmp_path / "a.tsv", 'text\tlabel\nsaid "hi"\tgreeting\n'), "tsv")
    assert records[0].values == {"text": 'said "hi"', "label": "greeting"}  # TSV has no quoting
    pairs = read_tsv_columns(write(tmp_path / "p.tsv", "source\ttarget\nHello.\tHallo.\n"), ("source", "target"))
    assert [(r.line, r.values["target"]) for r in pairs] == [(2, "Hallo.")]  # the header line is skipped
    lines = read_jsonl(write(tmp_path / "a.jsonl", '{"text": "a", "label": 3}\n\n{"text": "b", "label": "x"}\n'))
    assert [r.line for r in lines] == [1, 3] and field_text(lines[0], "label", tmp_path / "a.jsonl") == "3"


def test_a_missing_column_names_the_header_line(tmp_path: Path) -> None:
    from training.core.datafiles import require_columns

    path = write(tmp_path / "t.csv", "body,label\nhello,x\n")
    columns, _ = read_table(path, "csv")
    with pytest.raises(DataFileError, match=r"t\.csv, line 1: missing column 'text' \(the header has: body, label\); "
                                            r"name the right one with --text-column"):
        require_columns(path, columns, {"text": "--text-column", "label": "--label-column"})


def test_a_missing_key_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", '{"text": "a", "label": "x"}\n{"txt": "b", "label": "y"}\n')
    second = read_jsonl(path)[1]
    with pytest.raises(DataFileError, match=r"t\.jsonl, line 2: missing key 'text'"):
        field_text(second, "text", path)


def test_empty_text_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,label\nfine,x\n   ,y\n")
    _, records = read_table(path, "csv")
    with pytest.raises(DataFileError, match=r"t\.csv, line 3: empty text in column 'text'"):
        field_text(records[1], "text", path)


def test_invalid_utf8_names_line_and_byte(tmp_path: Path) -> None:
    path = write(tmp_path / "latin1.csv", b"text,label\ngood,x\n" + "café,y\n".encode("latin-1"))
    with pytest.raises(DataFileError, match=r"latin1\.csv, line 3: not valid UTF-8 \(byte 0xe9 at column 4\)"):
        read_text(path)
    assert read_text(write(tmp_path / "bom.csv", b"\xef\xbb\xbftext\n")) == "text\n"  # a BOM is dropped


def test_malformed_json_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", '{"text": "a"}\n{"text": "b",}\n')
    with pytest.raises(DataFileError, match=r"t\.jsonl, line 2: malformed JSON: .* \(column \d+\)"):
        read_jsonl(path)
    with pytest.raises(DataFileError, match=r"line 1: expected a JSON object, got list"):
        read_jsonl(write(tmp_path / "l.jsonl", '["a"]\n'))


def test_wrong_number_of_tsv_fields_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "text\tlabel\na\tx\nb\tx\textra\n")
    with pytest.raises(DataFileError, match=r"t\.tsv, line 3: wrong number of TSV fields: expected 2 \(text, label\), "
                                            r"got 3"):
        read_table(path, "tsv")
    with pytest.raises(DataFileError, match=r"p\.tsv, line 1: wrong number of TSV fields: expected 2"):
        read_tsv_columns(write(tmp_path / "p.tsv", "no tab here\n"), ("source", "target"))


def test_malformed_csv_and_empty_or_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"q\.csv, line 2: malformed CSV"):
        read_table(write(tmp_path / "q.csv", 'text,label\n"open quote,x\n'), "csv")
    with pytest.raises(DataFileError, match=r"h\.csv: no records"):
        read_records(write(tmp_path / "h.csv", "text,label\n\n"), "csv")
    with pytest.raises(DataFileError, match=r"gone\.csv: no such file"):
        read_text(tmp_path / "gone.csv")
    with pytest.raises(DataFileError, match=r"t\.xlsx: unknown file type '\.xlsx'; use one of \.csv"):
        file_format(tmp_path / "t.xlsx", ("csv", "tsv", "jsonl"))


def test_holdout_split_keeps_every_label_in_every_split_and_is_seeded(tmp_path: Path) -> None:
    labels = ["a"] * 10 + ["b"] * 3 + ["c"] * 20
    lines = list(range(2, 2 + len(labels)))
    fractions = {"validation": 0.2, "test": 0.2}
    index = holdout_split(labels, fractions, 7, tmp_path / "f.csv", lines)
    assert sorted(i for part in index.values() for i in part) == list(range(len(labels)))
    for part in index.values():
        assert {labels[i] for i in part} == {"a", "b", "c"}
    assert [sum(labels[i] == "c" for i in index[name]) for name in ("train", "validation", "test")] == [12, 4, 4]
    assert index == holdout_split(labels, fractions, 7, tmp_path / "f.csv", lines)
    assert index != holdout_split(labels, fractions, 8, tmp_path / "f.csv", lines)


def test_too_few_examples_of_a_label_for_a_stratified_split(tmp_path: Path) -> None:
    labels = ["a"] * 10 + ["rare"] * 2
    with pytest.raises(DataFileError, match=r"f\.csv: too few examples for a stratified split: 2 examples of label "
                                            r"'rare' \(lines 12, 13\); train, validation, test need at least 3 each"):
        holdout_split(labels, {"validation": 0.2, "test": 0.2}, 0, tmp_path / "f.csv", list(range(2, 14)))
