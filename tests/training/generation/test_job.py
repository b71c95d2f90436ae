"""The generation job end to end on the tiny preset (synthetic prose, tiny Llama), and its helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.core.artifacts import verify_artifact
from models.core.predictor import MCRequest, PredictorOptions
from models.generation.mc import capture_layer_input
from models.generation.model import build_tiny_llama, dropout_layers, load_llama, train_tiny_tokenizer
from models.generation.predictor import GenerationPredictor
from training.core.config import make_config
from training.generation.evaluation import TOKEN_MEASURES, sequence_measures_of
from training.generation.job import PRESETS, BlockBatches, GenerationConfig, main, prepare_model, subset
from training.generation.synthetic import synthetic_documents


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gen")
    assert main(["--preset", "tiny", "--output-dir", str(root / "out"), "--cache-dir", str(root / "cache")]) == 0
    (path,) = (root / "out" / "generation").iterdir()
    return path


def test_artifact_manifest_and_reports(artifact: Path) -> None:
    manifest = verify_artifact(artifact)
    assert manifest.task == "generation" and manifest.model_class == "LlamaForCausalLM"
    assert manifest.dropout["mc_sites"] == ["hidden"] and manifest.dropout["sites"]["hidden"] == 0.1
    split = manifest.data["split"]
    assert split["splits"]["test"]["chars"] > 0 and split["held_out_spans"]  # contiguous spans named
    metrics = manifest.metrics
    before, after = metrics["perplexity"]["before"], metrics["perplexity"]["after"]
    assert after["perplexity"] < before["perplexity"] / 2  # fine-tuning learnt the grammar
    token = metrics["token_uncertainty"]
    assert set(token["auroc_error"]) == set(TOKEN_MEASURES) and token["tokens"] > 0
    assert all(0 <= v <= 1 for v in token["auroc_error"].values())
    assert token["best_minus_baseline"] >= 0
    seq = metrics["sequence_uncertainty"]
    assert seq["counts"]["in_domain"] == 6 and set(seq["ood_auroc"]) == {"expected_nll", "total_uncertainty", "mi",
                                                                         "reverse_mi"}
    compared = metrics["last_k_comparison"]["1"]  # the tiny model has 2 layers: last-1 vs the full default
    assert set(compared["token_auroc_error"]) == set(TOKEN_MEASURES) and "mi" in compared["sequence_ood_auroc"]
    reports = json.loads((artifact / "reports" / "metrics.json").read_text(), parse_constant=pytest.fail)
    assert reports["history"]["losses"]


def test_the_artifact_serves_with_uncertainty(artifact: Path) -> None:
    predictor = GenerationPredictor.load(artifact, PredictorOptions(device="cpu", dtype="float32"))
    out = predictor.predict([predictor.prepare("Elizabeth walked slowly", {"max_new_tokens": 8, "temperature": 0.0})],
                            [MCRequest(4, 1)])[0]
    assert out.text and out.uncertainty is not None and out.uncertainty.mean_token_mutual_information >= 0


def test_dropout_only_in_the_top_layers_and_frozen_lower_layers() -> None:
    tokenizer = train_tiny_tokenizer(synthetic_documents(documents=1, paragraphs=5).values(), vocab_size=300)
    model = build_tiny_llama(len(tokenizer), layers=3, attention_dropout=0.0, hidden_dropout=0.0)
    config = make_config(GenerationConfig, PRESETS["tiny"], {"dropout_layers": 1, "train_layers": 1, "dropout": 0.5})
    prepare_model(model, config)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("model.layers.2.", "model.norm")) for name in trainable)
    assert dropout_layers(model) == 1
    assert [layer.self_attn.attention_dropout for layer in model.model.layers] == [0.0, 0.0, 0.5]
    model.train()
    ids = torch.tensor([tokenizer("Jane smiled in the garden.", add_special_tokens=False)["input_ids"]])
    runs = []
    for _ in range(2):
        with capture_layer_input(model, 2) as chunks:
            logits = model(input_ids=ids).logits
        runs.append((chunks[0], logits))
    assert torch.equal(runs[0][0], runs[1][0])  # layers 0-1: no dropout even in training mode
    assert not torch.allclose(runs[0][1], runs[1][1])  # the top layer's dropout is live


def test_save_and_load_keep_the_dropout(tmp_path: Path) -> None:
    tokenizer = train_tiny_tokenizer(synthetic_documents(documents=1, paragraphs=5).values(), vocab_size=300)
    model = build_tiny_llama(len(tokenizer), layers=2, attention_dropout=0.2, hidden_dropout=0.3)
    model.save_pretrained(tmp_path)
    loaded = load_llama(tmp_path)
    assert loaded.config.residual_dropout == 0.3 and loaded.config.attention_dropout == 0.2
    loaded.train()
    ids = torch.tensor([[5, 6, 7, 8]])
    assert not torch.allclose(loaded(input_ids=ids).logits, loaded(input_ids=ids).logits)
    loaded.eval()
    assert torch.equal(loaded(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_block_batches_and_subsets() -> None:
    blocks = torch.arange(50).view(10, 5)
    batches = BlockBatches(blocks, 4, seed=0)
    assert len(batches) == 3
    first = torch.cat(list(batches))
    assert sorted(first[:, 0].tolist()) == list(range(0, 50, 5))  # every block once
    batches.set_epoch(1)
    assert not torch.equal(torch.cat(list(batches)), first)  # reshuffled per epoch
    assert len(subset(blocks, 3, 0)) == 3 and torch.equal(subset(blocks, 30, 0), blocks)


def test_sequence_measures_on_identical_samples() -> None:
    lp = torch.log_softmax(torch.randn(1, 4, 9), dim=-1).expand(5, 4, 9)
    m = sequence_measures_of(lp, torch.tensor([0, 1, 2, 3]))
    assert m["mi"] == pytest.approx(0.0, abs=1e-6) and m["reverse_mi"] == pytest.approx(0.0, abs=1e-6)
    assert m["expected_nll"] == pytest.approx(-float(lp[0, torch.arange(4), torch.tensor([0, 1, 2, 3])].mean()), abs=1e-5)


def test_bad_arguments_exit_with_usage() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--preset", "tiny", "--mc-samples", "1"])
    assert info.value.code == 2
