"""The generation job end to end on the tiny preset (synthetic prose, tiny Llama), and its helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from models.core.artifacts import Manifest, verify_artifact, write_artifact
from models.core.base import save_model
from models.core.calibration import LOW_IS_UNCERTAIN
from models.core.predictor import MCRequest, PredictorOptions, ScoredOutput
from models.generation.mc import capture_layer_input
from models.generation.model import build_tiny_llama, dropout_layers, train_tiny_tokenizer
from models.generation.predictor import GenerationPredictor
from training.core.config import make_config
from training.core.sequence_choices import ChoiceSettings
from training.core.sequence_quality import MEASURES
from training.generation.batches import BlockBatches, subset
from training.generation.evaluation import (
    TOKEN_MEASURES,
    GenEvalSettings,
    sequence_measures_of,
    sequence_report,
    token_report,
)
from training.generation.job import PRESETS, GenerationConfig, held_out_blocks, main, prepare_model
from training.generation.prompts import prompt_items, token_errors, windows
from training.generation.synthetic import synthetic_documents


@pytest.fixture(scope="module")
def served(artifact: Path) -> GenerationPredictor:
    return GenerationPredictor.load(artifact, PredictorOptions(device="cpu", dtype="float32"))


def test_artifact_manifest_and_reports(artifact: Path) -> None:
    manifest = verify_artifact(artifact)
    assert manifest.task == "generation" and manifest.model_class == "LlamaForCausalLM"
    assert manifest.dropout["mc_sites"] == ["hidden"] and manifest.dropout["sites"]["hidden"] == 0.1
    split = manifest.data["split"]
    assert split["splits"]["test"]["chars"] > 0 and split["held_out_spans"]  # contiguous spans named
    # tiny: 19 validation blocks (8 periodic, 11 for the choices), 22 test blocks (8 perplexity, 14 prompts)
    assert manifest.data["used_blocks"] == {"validation_periodic": 8, "validation_calibration": 11,
                                            "test_perplexity": 8, "test_prompts": 14}
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
    # the tiny model has 2 layers with dropout: last-1 and last-2 are scored on validation prompts
    last_k = metrics["validation"]["last_k"]
    assert set(last_k["candidates"]) == {"1", "2"} and last_k["chosen"] == manifest.dropout["mc_last_k"]
    assert all(set(row["prr"]) == set(MEASURES) for row in last_k["candidates"].values())
    prompts = metrics["prompt_uncertainty"]
    assert prompts["n"] > 0 and set(prompts["prr"]) == set(MEASURES) and 0 < prompts["mean_loss"] < 1
    assert 0 <= prompts["abstain"]["abstain_rate"] <= 1
    assert set(prompts["reference_calibration"]["ece"]) == {"tau_1", "tau_fitted"}
    reports = json.loads((artifact / "reports" / "metrics.json").read_text(), parse_constant=pytest.fail)
    assert reports["history"]["losses"]
    assert (artifact / "reports" / "risk_coverage.png").read_bytes()[:4] == b"\x89PNG"


def test_calibration_is_fitted_on_validation_prompts(artifact: Path) -> None:
    calibration = verify_artifact(artifact).calibration
    fit = calibration["temperature_fit"]
    assert calibration["temperature"] > 0 and fit["nll"] <= fit["nll_at_1"] + 1e-9
    rule = calibration["abstain"]
    assert rule["measure"] in MEASURES and rule["target_risk"] == 0.55 and math.isfinite(rule["threshold"])
    assert rule["fitted_n"] > 0 and "token error rate" in rule["loss"]
    assert rule["coverage"] == 0 or rule["achieved_risk"] <= rule["target_risk"]


def test_the_fitted_rule_abstains_on_an_uncertain_prompt_and_not_on_a_confident_one(
        served: GenerationPredictor) -> None:
    rule = served.calibration
    assert rule.abstain_measure is not None and rule.abstain_threshold is not None
    prompts = [*list(synthetic_documents(seed=5).values())[0].split("\n\n")[:6], "zq zq zq 0 0 0 xx ]]] {{{ ~~"]
    items = [served.prepare(text[:60], {"max_new_tokens": 8}) for text in prompts]
    out = served.predict(items, [MCRequest(4, i) for i in range(len(items))])
    sign = -1 if rule.abstain_measure in LOW_IS_UNCERTAIN else 1  # higher = less sure
    ranked = sorted(out, key=lambda p: sign * getattr(p.uncertainty, rule.abstain_measure))
    assert ranked[0].abstain is False and ranked[-1].abstain is True


def test_held_out_blocks_are_disjoint_by_construction() -> None:
    config = make_config(GenerationConfig, PRESETS["tiny"], {})
    blocks = {"validation": torch.arange(19 * 4).view(19, 4), "test": torch.arange(100, 100 + 22 * 4).view(22, 4)}
    parts = held_out_blocks(config, blocks)
    assert {name: len(v) for name, v in parts.items()} == {"validation_periodic": 8, "validation_calibration": 11,
                                                           "test_perplexity": 8, "test_prompts": 14}
    rows = {name: {tuple(r) for r in v.tolist()} for name, v in parts.items()}  # every block is unique here
    assert not rows["validation_periodic"] & rows["validation_calibration"]
    assert not rows["test_perplexity"] & rows["test_prompts"]
    assert sum(map(len, rows.values())) == len(set().union(*rows.values())) == 19 + 22
    smaller = held_out_blocks(make_config(GenerationConfig, PRESETS["tiny"], {"calibration_prompts": 3}), blocks)
    assert torch.equal(smaller["validation_periodic"], parts["validation_periodic"])  # allocated first


def test_windows_prompt_items_and_token_errors(served: GenerationPredictor) -> None:
    blocks = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 2, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    assert windows(blocks, 2, 3, eos_id=2) == [([5, 6], [7, 8, 9]), ([11, 12], [13, 14, 15])]  # eos: skipped
    with pytest.raises(ValueError, match="fit"):
        windows(blocks, 4, 3, eos_id=2)
    prompt = served.tokenizer("Elizabeth walked slowly", add_special_tokens=False)["input_ids"]
    (item,) = prompt_items(served, [prompt], 6)
    assert item.input_ids == tuple(prompt) and item.parameters["sampling"].max_new_tokens == 6
    plain = {"max_new_tokens": 6, "temperature": 0.0, "repetition_penalty": 1.0}  # argmax, unpenalised
    greedy = served.predict([served.prepare("Elizabeth walked slowly", plain)],
                            [MCRequest(0, 0)])[0].output_ids
    other = [t + 1 for t in greedy]
    errors = token_errors(served, [prompt, prompt], [list(greedy), other], seed=0, batch_size=2, phase="test")
    # the greedy decode is, position by position, the deterministic argmax: 0 errors; a shifted one misses
    assert errors[0] == 0.0 and errors[1] > 0.5


def test_the_artifact_serves_with_live_dropout(served: GenerationPredictor) -> None:
    predictor = served
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


SETTINGS = GenEvalSettings(torch.device("cpu"), "float32", 4, ChoiceSettings(
    mc_samples=2, last_k=None, candidates=(1,), tolerance=0.02, target_risk=0.5, batch_size=4, seed=0))


def _entropy(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p)


class StubPredictor:
    """`score` returns, item by item in call order (training.core.predicting keeps the input order for
    equal-length items), ScoredOutputs built from constructed [1 + T, n, V] distributions: row 0 the
    deterministic one, the rest the T samples."""

    last_k, pad_id = 1, 0

    def __init__(self, items: list[torch.Tensor], tokenizer: object = None) -> None:
        self.items, self.tokenizer = list(items), tokenizer

    def score(self, prompts: list, outputs: list, requests: list) -> list[ScoredOutput]:
        out = []
        for output in outputs:
            lp = self.items.pop(0)
            det = lp[0]
            top_lp, top = det.max(dim=-1)
            out.append(ScoredOutput(det_log_probs=det[torch.arange(len(output)), torch.tensor(output)].tolist(),
                                    det_top=top.tolist(), det_top_log_probs=top_lp.tolist(),
                                    det_entropies=(-(det.exp() * det).sum(-1)).tolist(), mc_log_probs=lp[1:]))
        return out


# Per position: the deterministic distribution (the greedy guess is token 0 either way) and T = 2 samples.
# Right guesses: less sure deterministically, samples agree. Wrong guesses: surer, but the samples disagree.
RIGHT = ([0.6, 0.3, 0.1], [[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]])
WRONG = ([0.9, 0.05, 0.05], [[0.3, 0.6, 0.1], [0.9, 0.05, 0.05]])


def test_token_report_labels_greedy_errors_and_ranks_the_measures() -> None:
    blocks = torch.tensor([[0, 0, 1, 0, 0], [0, 2, 0, 0, 1]])  # next tokens: 3 of the 8 are not 0
    items = []
    for block in blocks:
        cases = [WRONG if token else RIGHT for token in block[1:].tolist()]
        det = torch.tensor([case[0] for case in cases])
        samples = torch.tensor([[case[1][t] for case in cases] for t in range(2)])
        items.append(torch.cat([det[None], samples]).log())
    report = token_report(StubPredictor(items), blocks, SETTINGS)
    assert report["tokens"] == 8 and report["greedy_error_rate"] == pytest.approx(3 / 8)
    # MI alone ranks every wrong guess above every right one; the other measures rank them all below.
    assert report["auroc_error"] == pytest.approx({**dict.fromkeys(TOKEN_MEASURES, 0.0), "mi": 1.0})
    assert report["best_measure"] == "mi" and report["best_minus_baseline"] == pytest.approx(1.0)


def test_sequence_report_tables_on_constructed_scores() -> None:
    class Tokenizer:  # every text is three tokens 0
        eos_token_id = 0

        def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
            return {"input_ids": [0, 0, 0]}

    # Every sample gives the text's token 0 probability 0.5 (expected NLL ln 2 for all); in "bible" texts
    # the two samples split the rest differently (MI > 0), elsewhere they agree (MI 0).
    agree = torch.tensor([[[0.5, 0.25, 0.25]] * 3] * 3).log()
    disagree = torch.tensor([[[0.5, 0.25, 0.25]] * 3, [[0.5, 0.4, 0.1]] * 3, [[0.5, 0.1, 0.4]] * 3]).log()
    kinds = ["in_domain"] * 3 + ["bible"] * 2 + ["news"] * 2
    stub = StubPredictor([disagree if kind == "bible" else agree for kind in kinds], Tokenizer())
    report = sequence_report(stub, [f"text {i}" for i in range(7)], kinds, SETTINGS)
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
