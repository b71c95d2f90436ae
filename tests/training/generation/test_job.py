"""The generation job end to end on the tiny preset (synthetic prose, tiny Llama), and its helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from models.core.artifacts import Manifest, verify_artifact, write_artifact
from models.core.base import save_model
from models.core.predictor import MCRequest, PredictorOptions
from models.generation.mc import capture_layer_input
from models.generation.model import build_tiny_llama, dropout_layers, train_tiny_tokenizer
from models.generation.predictor import GenerationPredictor
from training.core.config import make_config
from training.generation import evaluation
from training.generation.batches import BlockBatches, subset
from training.generation.evaluation import (
    TOKEN_MEASURES,
    GenEvalSettings,
    sequence_measures_of,
    sequence_report,
    token_report,
)
from training.generation.job import PRESETS, GenerationConfig, main, prepare_model
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
    auroc = token["auroc_error"]  # what is written: the best is the argmax, its gain is over 1 − p
    assert token["best_measure"] == max(auroc, key=auroc.__getitem__)
    assert token["best_minus_baseline"] == pytest.approx(auroc[token["best_measure"]] - auroc["one_minus_p"])
    seq = metrics["sequence_uncertainty"]
    assert seq["counts"]["in_domain"] == 6 and set(seq["ood_auroc"]) == {"expected_nll", "total_uncertainty", "mi",
                                                                         "reverse_mi"}
    compared = metrics["last_k_comparison"]["1"]  # the tiny model has 2 layers: last-1 vs the full default
    assert set(compared["token_auroc_error"]) == set(TOKEN_MEASURES) and "mi" in compared["sequence_ood_auroc"]
    reports = json.loads((artifact / "reports" / "metrics.json").read_text(), parse_constant=pytest.fail)
    assert reports["history"]["losses"]


def test_the_artifact_serves_with_live_dropout(artifact: Path) -> None:
    predictor = GenerationPredictor.load(artifact, PredictorOptions(device="cpu", dtype="float32"))
    item = predictor.prepare("Elizabeth walked slowly",
                             {"max_new_tokens": 8, "temperature": 0.0, "return_tokens": True})
    out, again, plain = predictor.predict([item, item, item], [MCRequest(4, 1), MCRequest(4, 1), MCRequest(0, 0)])
    assert out.text and out == again  # the seed fixes the dropout masks
    assert plain.uncertainty is None and plain.text == out.text  # MC scores the greedy text, it does not change it
    mi = [token.mutual_information for token in out.tokens]
    # The trained dropout is live at MC time: the T passes disagree, so MI > 0 (it is 0 with dropout off).
    assert min(mi) > 0 and out.uncertainty.max_token_mutual_information == pytest.approx(max(mi))
    assert out.uncertainty.mean_token_mutual_information == pytest.approx(sum(mi) / len(mi))


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
    manifest = Manifest(task="generation", version="v1", model_class=type(model).__name__,
                        dropout={"mc_sites": ["hidden"]})
    artifact = write_artifact(tmp_path, manifest, lambda staging: save_model(model, tokenizer, staging))
    # The serving loader: verified artifact, then the predictor re-installs the saved dropout.
    loaded = GenerationPredictor.load(artifact, PredictorOptions()).model
    assert loaded.config.residual_dropout == 0.3 and loaded.config.attention_dropout == 0.2
    for layer in loaded.model.layers:  # attention dropout off: only the restored residual hooks can vary
        layer.self_attn.attention_dropout = 0.0
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
    picked = lp[0, torch.arange(4), torch.tensor([0, 1, 2, 3])]
    assert m["expected_nll"] == pytest.approx(-float(picked.mean()), abs=1e-5)


SETTINGS = GenEvalSettings(mc_samples=2, last_k=1, batch_size=4, seed=0, device=torch.device("cpu"), dtype="float32")


def _entropy(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p)


def _stub_passes(monkeypatch: pytest.MonkeyPatch, items: list[torch.Tensor]) -> None:
    """evaluation.mc_log_probs yields `items` (one constructed [1 + T, n, V] log-distribution per sequence)."""

    def passes(model: nn.Module, sequences: list[list[int]], s: GenEvalSettings, seed: int):
        assert len(sequences) == len(items)
        yield from items

    monkeypatch.setattr(evaluation, "mc_log_probs", passes)


# Per position: the deterministic distribution (the greedy guess is token 0 either way) and T = 2 samples.
# Right guesses: less sure deterministically, samples agree. Wrong guesses: surer, but the samples disagree.
RIGHT = ([0.6, 0.3, 0.1], [[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]])
WRONG = ([0.9, 0.05, 0.05], [[0.3, 0.6, 0.1], [0.9, 0.05, 0.05]])


def test_token_report_labels_greedy_errors_and_ranks_the_measures(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = torch.tensor([[0, 0, 1, 0, 0], [0, 2, 0, 0, 1]])  # next tokens: 3 of the 8 are not 0
    items = []
    for block in blocks:
        cases = [WRONG if token else RIGHT for token in block[1:].tolist()]
        det = torch.tensor([case[0] for case in cases])
        samples = torch.tensor([[case[1][t] for case in cases] for t in range(2)])
        items.append(torch.cat([det[None], samples]).log())
    _stub_passes(monkeypatch, items)
    report = token_report(nn.Identity(), blocks, SETTINGS)
    assert report["tokens"] == 8 and report["greedy_error_rate"] == pytest.approx(3 / 8)
    # MI alone ranks every wrong guess above every right one; the other measures rank them all below.
    assert report["auroc_error"] == pytest.approx({**dict.fromkeys(TOKEN_MEASURES, 0.0), "mi": 1.0})
    assert report["best_measure"] == "mi" and report["best_minus_baseline"] == pytest.approx(1.0)


def test_sequence_report_tables_on_constructed_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tokenizer:  # every text is three tokens 0
        eos_token_id = 0

        def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
            return {"input_ids": [0, 0, 0]}

    # Every sample gives the text's token 0 probability 0.5 (expected NLL ln 2 for all); in "bible" texts
    # the two samples split the rest differently (MI > 0), elsewhere they agree (MI 0).
    agree = torch.tensor([[[0.5, 0.25, 0.25]] * 3] * 3).log()
    disagree = torch.tensor([[[0.5, 0.25, 0.25]] * 3, [[0.5, 0.4, 0.1]] * 3, [[0.5, 0.1, 0.4]] * 3]).log()
    kinds = ["in_domain"] * 3 + ["bible"] * 2 + ["news"] * 2
    _stub_passes(monkeypatch, [disagree if kind == "bible" else agree for kind in kinds])
    report = sequence_report(nn.Identity(), Tokenizer(), [f"text {i}" for i in range(7)], kinds, SETTINGS)
    assert report["counts"] == {"in_domain": 3, "bible": 2, "news": 2}
    ood = report["ood_auroc"]
    # bible is told apart perfectly, news not at all (ties: 0.5); overall (6 × 1 + 6 × 0.5) / 12 pairs
    assert ood["mi"] == pytest.approx({"all": 0.75, "bible": 1.0, "news": 0.5})
    assert ood["reverse_mi"] == pytest.approx({"all": 0.75, "bible": 1.0, "news": 0.5})
    assert ood["expected_nll"] == pytest.approx({"all": 0.5, "bible": 0.5, "news": 0.5})
    mi = _entropy([0.5, 0.25, 0.25]) - _entropy([0.5, 0.4, 0.1])  # H[p̄] − E_t H[p_t], the same at each token
    reverse = 0.5 * (math.log(0.25) - (math.log(0.4) + math.log(0.1)) / 2)  # Σ_v p̄ (log p̄ − mean_t log p_t)
    means = report["measure_means"]
    assert means["mi"] == pytest.approx({"bible": mi, "in_domain": 0.0, "news": 0.0}, abs=1e-6)
    assert means["reverse_mi"] == pytest.approx({"bible": reverse, "in_domain": 0.0, "news": 0.0}, abs=1e-6)
    assert means["expected_nll"] == pytest.approx(dict.fromkeys(("bible", "in_domain", "news"), math.log(2)))


def test_bad_arguments_exit_with_usage() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--preset", "tiny", "--mc-samples", "1"])
    assert info.value.code == 2
