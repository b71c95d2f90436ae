"""Your base model (`--base-model`): tiny random checkpoints of each supported family saved to disk, fine-tuned by
each job on a user's file (a few steps), then loaded and served; unusable checkpoints get a clear error."""

import json
from pathlib import Path

import pytest

from models.core.artifacts import list_artifacts, verify_artifact
from models.core.predictor import MCRequest, PredictorOptions
from models.generation.predictor import GenerationPredictor
from models.sentiment.predictor import SentimentPredictor
from models.translation.predictor import TranslationPredictor
from tests.checkpoints import PAIRS, TEXTS, save_classifier, save_llama, save_marian
from training.generation.job import main as generation_main
from training.sentiment.job import main as sentiment_main
from training.translation.job import main as translation_main

TICKETS = Path(__file__).parents[2] / "examples" / "support_tickets.csv"
FAST = ["--max-steps", "3", "--epochs", "1"]


def _only(root: Path, name: str) -> Path:
    (path,) = list_artifacts(root, name)
    return path


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "albert"])
def test_classification_fine_tunes_a_checkpoint_and_serves_its_own_labels(tmp_path: Path, family: str) -> None:
    base = save_classifier(tmp_path / "ckpt", family)  # labels LABEL_0/1: the head starts afresh for 4 labels
    status = sentiment_main(["--preset", "tiny", "--base-model", str(base), "--data", "file", "--train-file",
                             str(TICKETS), "--name", f"tickets-{family}", "--output-dir", str(tmp_path / "a"),
                             "--cache-dir", str(tmp_path / "c"), *FAST])
    assert status == 0
    artifact = _only(tmp_path / "a", f"tickets-{family}")
    manifest = verify_artifact(artifact)
    assert manifest.labels == ["account", "billing", "shipping", "technical"]
    base_record = manifest.data["sources"][1]
    assert base_record["role"] == "base_model" and base_record["mc_path"] == ("generic" if family == "albert"
                                                                              else family)
    assert manifest.dropout["mc_path"].startswith("generic" if family == "albert" else family)
    predictor = SentimentPredictor.load(artifact, PredictorOptions())
    item = predictor.prepare("I was charged twice this month.", {})
    seeded = predictor.predict([item, item], [MCRequest(5, 3), MCRequest(0, 0)])
    assert list(seeded[0].probabilities) == manifest.labels and seeded[0].uncertainty is not None
    assert predictor.predict([item, item], [MCRequest(5, 3), MCRequest(0, 0)])[0] == seeded[0]  # seed fixes masks
    # Alone in a batch the same seed gives the same masks; only the kernels' summation order may differ.
    alone = predictor.predict([item], [MCRequest(5, 3)])[0]
    assert alone.label == seeded[0].label
    assert alone.probabilities == pytest.approx(seeded[0].probabilities, abs=1e-6)
    described = predictor.describe()["mc"]
    assert described["path"] == ("generic" if family == "albert" else family)
    assert ("warning" in described) == (family == "albert")


def test_classification_keeps_a_head_trained_for_the_same_labels(tmp_path: Path) -> None:
    from models.sentiment.model import load_pretrained_classifier

    labels = ("account", "billing", "shipping", "technical")
    base = save_classifier(tmp_path / "ckpt", "roberta", labels=labels, seed=5)
    kept = load_pretrained_classifier(base, labels)
    renamed = load_pretrained_classifier(base, ("a", "b", "c", "d"))
    assert kept.classifier.out_proj.weight.equal(load_pretrained_classifier(base, labels).classifier.out_proj.weight)
    assert not kept.classifier.out_proj.weight.equal(renamed.classifier.out_proj.weight)


def test_translation_fine_tunes_a_marian_checkpoint_with_its_sentencepiece_tokenizer(tmp_path: Path) -> None:
    base = save_marian(tmp_path / "opus-mt-tiny")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS * 3), "utf-8")
    status = translation_main(["--preset", "tiny", "--base-model", str(base), "--data", "file", "--train-file",
                               str(pairs), "--name", "phrasebook", "--output-dir", str(tmp_path / "a"),
                               "--cache-dir", str(tmp_path / "c"), "--sampling-samples", "0", *FAST])
    assert status == 0
    artifact = _only(tmp_path / "a", "phrasebook")
    assert (artifact / "model" / "source.spm").is_file()
    predictor = TranslationPredictor.load(artifact, PredictorOptions())
    assert type(predictor.tokenizer).__name__ == "MarianTokenizer" and predictor.max_input_tokens <= 64
    (out,) = predictor.predict([predictor.prepare("the dog is warm", {"max_new_tokens": 8})], [MCRequest(4, 1)])
    assert out.uncertainty is not None and out.output_tokens >= 1


def test_generation_fine_tunes_a_llama_checkpoint_without_dropout(tmp_path: Path) -> None:
    base = save_llama(tmp_path / "llama")
    assert json.loads((base / "config.json").read_text())["attention_dropout"] == 0.0
    text = tmp_path / "notes.txt"
    text.write_text("\n\n".join(TEXTS * 6), "utf-8")
    status = generation_main(["--preset", "tiny", "--base-model", str(base), "--data", "file", "--train-file",
                              str(text), "--name", "notes-lm", "--output-dir", str(tmp_path / "a"), "--cache-dir",
                              str(tmp_path / "c"), "--block-size", "16", *FAST])
    assert status == 0
    artifact = _only(tmp_path / "a", "notes-lm")
    assert verify_artifact(artifact).data["sources"][1]["role"] == "base_model"
    predictor = GenerationPredictor.load(artifact, PredictorOptions())
    assert predictor.rates.hidden > 0  # dropout added, then fine-tuned with it
    (out,) = predictor.predict([predictor.prepare("the plot", {"max_new_tokens": 4})], [MCRequest(3, 2)])
    assert out.uncertainty is not None


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing", "no such directory"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no config.json"),
    (lambda d: _pickle_only(d), "pickle is refused"),
])
def test_unusable_checkpoints_are_refused_with_a_clear_message(tmp_path: Path, capsys, make, message: str) -> None:
    base = make(tmp_path)
    capsys.readouterr()  # building the checkpoint prints progress bars
    status = sentiment_main(["--preset", "tiny", "--base-model", str(base), "--output-dir",
                             str(tmp_path / "a"), "--cache-dir", str(tmp_path / "c")])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --base-model ") and message in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()


def test_a_checkpoint_of_another_architecture_is_refused_by_translation(tmp_path: Path, capsys) -> None:
    base = save_classifier(tmp_path / "bert", "bert")
    status = translation_main(["--preset", "tiny", "--base-model", str(base), "--output-dir", str(tmp_path / "a"),
                               "--cache-dir", str(tmp_path / "c")])
    assert status == 1 and "MarianMT" in capsys.readouterr().err


def _pickle_only(root: Path) -> Path:
    path = save_classifier(root / "pickled", "bert")
    for weights in path.glob("*.safetensors"):
        weights.rename(weights.with_name("pytorch_model.bin"))
    return path
