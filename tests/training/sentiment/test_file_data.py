"""Your data: the classification job on a user's multi-class file (examples/support_tickets.csv, 4 labels), end
to end with a tiny random model, and the bad files it refuses before training anything."""

import json
from pathlib import Path

import pytest
import torch

from models.core.artifacts import list_artifacts, verify_artifact
from models.core.predictor import MCRequest, PredictorOptions
from models.sentiment.predictor import SentimentPredictor
from training.core.datafiles import DataFileError
from training.sentiment.data import LabelledFiles, load_labelled_files
from training.sentiment.job import main

EXAMPLE = Path(__file__).parents[3] / "examples" / "support_tickets.csv"
LABELS = ["account", "billing", "shipping", "technical"]


def files(train: Path, validation: Path | None = None, test: Path | None = None, **kw: object) -> LabelledFiles:
    settings: dict = {"text_column": "text", "label_column": "label", "validation_fraction": 0.2,
                      "test_fraction": 0.2, "seed": 1, **kw}
    return LabelledFiles(train, validation, test, **settings)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tickets")
    status = main(["--preset", "tiny", "--data", "file", "--train-file", str(EXAMPLE), "--name", "support-tickets",
                   "--epochs", "12", "--output-dir", str(root / "artifacts"), "--cache-dir", str(root / "cache")])
    assert status == 0
    (path,) = list_artifacts(root / "artifacts", "support-tickets")
    return path


def test_the_example_trains_a_named_multiclass_model_that_serves_its_own_labels(artifact: Path) -> None:
    manifest = verify_artifact(artifact)
    assert artifact.parent.name == "support-tickets" and manifest.name == "support-tickets"
    assert manifest.task == "classification" and manifest.labels == LABELS
    source = manifest.data["sources"][0]
    assert source["splits"] == {"train": 156, "validation": 52, "test": 52}
    assert source["labels"]["test"] == dict.fromkeys(LABELS, 13)  # stratified: every label in every split
    assert source["files"][0]["name"] == "support_tickets.csv" and len(source["files"][0]["sha256"]) == 64
    assert manifest.metrics["headline"]["accuracy"] > 0.3  # above chance (0.25) on held-out tickets
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    items = [predictor.prepare(t, {}) for t in ("I was charged twice this month.", "My parcel never arrived.")]
    for out in predictor.predict(items, [MCRequest(20, 3), MCRequest(0, 0)]):
        assert list(out.probabilities) == LABELS and out.label in LABELS
        assert sum(out.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert predictor.describe()["labels"] == LABELS


def test_label_names_come_from_the_training_file_sorted(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"body": f"text {i}", "topic": t}) + "\n"
                             for i, t in enumerate(["z", "a", "m"] * 4)), "utf-8")
    test = tmp_path / "test.tsv"
    test.write_text("body\ttopic\nanother\tm\n", "utf-8")
    data = load_labelled_files(files(train, None, test, text_column="body", label_column="topic"))
    assert data.label_names == ("a", "m", "z") and data.sizes() == {"train": 9, "validation": 3, "test": 1}
    assert data.splits["test"].labels == [1] and torch.tensor(data.splits["validation"].labels).unique().numel() == 3


def test_an_unknown_validation_label_names_file_and_line(tmp_path: Path) -> None:
    validation = tmp_path / "val.csv"
    validation.write_text("text,label\nwhere is my refund,billing\nthe app is slow,performance\n", "utf-8")
    with pytest.raises(DataFileError, match=r"val\.csv, line 3: unknown label 'performance': the training file "
                                            r".*support_tickets\.csv has only account, billing, shipping, technical"):
        load_labelled_files(files(EXAMPLE, validation))


def test_a_bad_file_stops_the_job_before_anything_is_written(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "tickets.csv"
    bad.write_text(EXAMPLE.read_text("utf-8") + ",billing\n", "utf-8")
    status = main(["--preset", "tiny", "--data", "file", "--train-file", str(bad), "--name", "tickets",
                   "--output-dir", str(tmp_path / "artifacts"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert f"error: {bad}, line 262: empty text in column 'text'" in err
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "cache").exists()  # no artifact, no checkpoint


def test_a_missing_label_column_and_a_tiny_validation_split(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--preset", "tiny", "--data", "file", "--output-dir", str(tmp_path / "a"), "--cache-dir", str(tmp_path)]
    assert main([*args, "--train-file", str(EXAMPLE), "--label-column", "category"]) == 1
    assert "support_tickets.csv, line 1: missing column 'category' (the header has: text, label)" in \
        capsys.readouterr().err
    small = tmp_path / "small.csv"
    small.write_text("text,label\n" + "".join(f"ticket {i},{'ab'[i % 2]}\n" for i in range(12)), "utf-8")
    assert main([*args, "--train-file", str(small)]) == 1
    assert "small.csv: too few validation examples: 2 leave 0 for calibration" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_file_options_need_data_file() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--preset", "tiny", "--train-file", str(EXAMPLE)])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--data", "file"])
    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--name", "../escape"])
