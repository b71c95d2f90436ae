"""Your data: a user's sentence pairs for the translation job, TSV or JSONL (training/translation/data.py)."""

import json
from pathlib import Path

import pytest

from training.core.datafiles import DataFileError
from training.translation.data import PairFiles, load_pair_files, read_pairs


def files(train: Path, validation: Path | None = None, test: Path | None = None, **kw: object) -> PairFiles:
    settings: dict = {"source_column": "source", "target_column": "target", "validation_fraction": 0.1,
                      "test_fraction": 0.1, "seed": 3, **kw}
    return PairFiles(train, validation, test, **settings)


def test_tsv_pairs_with_or_without_a_header(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tsv"
    plain.write_text("Good morning.\tGuten Morgen.\n\nThank you.\tDanke.\n", "utf-8")
    headed = tmp_path / "headed.tsv"
    headed.write_text("source\ttarget\nGood morning.\tGuten Morgen.\n", "utf-8")
    assert read_pairs(plain, "source", "target") == ([("Good morning.", "Guten Morgen."), ("Thank you.", "Danke.")],
                                                     [1, 3])
    assert read_pairs(headed, "source", "target") == ([("Good morning.", "Guten Morgen.")], [2])


def test_jsonl_pairs_with_chosen_keys_and_a_seeded_hold_out(tmp_path: Path) -> None:
    train = tmp_path / "phrases.jsonl"
    train.write_text("".join(json.dumps({"en": f"phrase {i}", "fr": f"phrase {i} fr"}) + "\n" for i in range(40)),
                     "utf-8")
    data = load_pair_files(files(train, source_column="en", target_column="fr"))
    assert data.sizes() == {"train": 32, "validation": 4, "test": 4}
    assert sorted(data.splits["train"] + data.splits["validation"] + data.splits["test"]) == sorted(
        (f"phrase {i}", f"phrase {i} fr") for i in range(40))
    assert data.source["files"][0]["rows"] == 40 and data.source["held_out_of_train"]["seed"] == 3
    assert load_pair_files(files(train, source_column="en", target_column="fr")).splits == data.splits


def test_given_splits_are_used_as_they_are(tmp_path: Path) -> None:
    train, validation, test = (tmp_path / f"{name}.tsv" for name in ("train", "validation", "test"))
    train.write_text("a\tA\nb\tB\n", "utf-8")
    validation.write_text("c\tC\n", "utf-8")
    test.write_text("d\tD\n", "utf-8")
    data = load_pair_files(files(train, validation, test))
    assert data.splits == {"train": [("a", "A"), ("b", "B")], "validation": [("c", "C")], "test": [("d", "D")]}
    assert data.source["held_out_of_train"] is None


def test_bad_pair_files_name_file_line_and_problem(tmp_path: Path) -> None:
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("Hello.\tHallo.\nHello.\tHallo.\tHi.\n", "utf-8")
    with pytest.raises(DataFileError, match=r"pairs\.tsv, line 2: wrong number of TSV fields: expected 2 "
                                            r"\(source, target\) separated by tabs, got 3"):
        load_pair_files(files(tsv))
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"source": "Hi.", "target": "Hallo."}\n{"source": "Bye."}\n', "utf-8")
    with pytest.raises(DataFileError, match=r"pairs\.jsonl, line 2: missing key 'target'"):
        load_pair_files(files(jsonl))
    jsonl.write_text('{"source": "Hi.", "target": " "}\n', "utf-8")
    with pytest.raises(DataFileError, match=r"pairs\.jsonl, line 1: empty target text in column 'target'"):
        load_pair_files(files(jsonl))
    with pytest.raises(DataFileError, match=r"pairs\.csv: unknown file type '\.csv'; use one of \.jsonl, \.ndjson, "
                                            r"\.tab, \.tsv"):
        load_pair_files(files(tmp_path / "pairs.csv"))


def test_the_quick_presets_parts_shrink_to_a_small_file() -> None:
    from training.core.config import make_config
    from training.translation.config import TranslationConfig
    from training.translation.data import TranslationData
    from training.translation.job import PRESETS, held_out_parts

    config = make_config(TranslationConfig, PRESETS["quick"], {"data": "file", "train_file": "phrases.tsv"})
    pairs = {name: [(f"{name} {i}", f"{name} {i} de") for i in range(n)]
             for name, n in (("train", 80), ("validation", 10), ("test", 10))}
    parts = held_out_parts(config, TranslationData(pairs))
    assert {name: len(v) for name, v in parts.items()} == {  # quick wants 300 + 300 validation, 400 test pairs
        "validation_periodic": 5, "validation_calibration": 5, "test": 10, "probe_pool": 10}
