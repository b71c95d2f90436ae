"""The translation job end to end on the tiny preset, its evaluation helpers, and the OOD probe builder."""

import json
import math
import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from models.core.artifacts import list_artifacts, verify_artifact
from models.core.calibration import LOW_IS_UNCERTAIN
from models.core.loading import CheckpointError
from models.core.predictor import MCRequest, PredictorOptions
from models.core.tokenizers import train_joint_tokenizer
from models.translation.predictor import TranslationPredictor
from tests.training.translation.conftest import RULE_ARGS
from training.core.config import make_config
from training.core.sequence_quality import MEASURES
from training.translation.batches import IGNORE, PairBatches, bpe_dropout_encoder, collate_pairs, encode_pairs
from training.translation.data import load_synthetic_translation
from training.translation.job import PRESETS, TranslationConfig, held_out_parts, main
from training.translation.probes import KINDS, build_probe_set, modern_sentences, shuffle_words
from training.translation.report import sampling_subset


def test_artifact_verifies_and_has_every_section(artifact: Path) -> None:
    manifest = verify_artifact(artifact)
    assert manifest.task == "translation" and manifest.model_class == "MarianMTModel"
    assert manifest.default_mc_samples == PRESETS["tiny"]["mc_samples"]
    assert {"torch", "transformers", "tokenizers"} <= set(manifest.libraries)
    source = manifest.data["sources"][0]
    assert len(source["sha256"]) == 64 and source["held_out_books"]["test"] == [{"number": 6, "name": "6"}]
    assert manifest.data["splits"] == {"train": 396, "validation": 99, "test": 100}
    assert manifest.data["used"] == {"train": 396, "validation_periodic": 60, "validation_calibration": 30,
                                     "test": 40, "probe_pool": 60}
    assert manifest.training_config["preset"] == "tiny" and manifest.training_config["label_smoothing"] == 0.1
    dropout = manifest.dropout
    assert dropout["sites"] == {"hidden": 0.1, "attention": 0.1, "activation": 0.1}
    # last-k counts decoder then encoder layers (1 + 1): validation chose decoder-full (1) or the whole model (2)
    assert dropout["mc_sites"] == ["hidden"] and dropout["num_layers"] == 2 and dropout["mc_last_k"] in (1, 2)
    pre = manifest.preprocessing
    assert pre["max_input_tokens"] == 128 and pre["max_new_tokens"] == 24
    assert pre["token_conventions"]["specials"] == {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    metrics = manifest.metrics
    assert metrics["test_n"] == 40 and set(metrics["quality"]) == {"greedy", "beam4"}
    assert [metrics["quality"][mode]["num_beams"] for mode in ("greedy", "beam4")] == [1, 4]
    assert metrics["quality"]["greedy"]["chrf"] > 40  # the toy grammar is learnt, not guessed
    # collapse guard: different sources get different translations
    assert metrics["distinct_output_ratio"] > 0.5 and metrics["collapsed"] is False
    unc = metrics["uncertainty"]
    assert unc["mc"]["mode"] == {1: "decoder-full", 2: "whole-model"}[dropout["mc_last_k"]]
    assert set(metrics["validation"]["last_k"]["candidates"]) == {"1", "2"}
    assert unc["mc"]["temperature"] == manifest.calibration["temperature"]
    assert unc["probe_counts"] == {"in_domain": 40, "shuffled": 8, "german": 8, "modern": 8}
    assert set(unc["prr"]) == set(MEASURES) == set(unc["correlation_with_sentence_chrf"]) == set(unc["ood_auroc"])
    assert all(-1.0 <= value <= 1.0 for value in unc["prr"].values())  # defined: the test chrF varies
    for row in unc["ood_auroc"].values():
        assert set(row) == {"all", *KINDS}
    means = unc["measure_means"]
    assert set(means) == set(MEASURES) and all(set(row) == {"in_domain", *KINDS} for row in means.values())
    # the trained dropout is live when scoring: the T passes disagree, so D-Var and MI are > 0 (0 without it)
    assert all(means[m][kind] > 0 for m in ("mc_log_prob_var", "mean_token_mutual_information")
               for kind in ("in_domain", *KINDS))
    sampling = unc["sampling"]  # lex_sim on the sub-subset: 12 test inputs and 4 of each probe kind
    assert sampling["samples"] == 3
    assert sampling["probe_counts"] == {"in_domain": 12, "shuffled": 4, "german": 4, "modern": 4}
    assert set(sampling["ood_auroc"]["sampling_chrf"]) == {"all", *KINDS}
    # defined (not NaN, written as null): the stochastic decodes agree more for some inputs than for others
    assert sampling["correlation_with_sentence_chrf"]["sampling_chrf"]["spearman"] is not None


def test_calibration_is_fitted_on_validation_and_reported_on_test(artifact: Path) -> None:
    manifest = verify_artifact(artifact)
    calibration, metrics = manifest.calibration, manifest.metrics
    fit = calibration["temperature_fit"]
    # τ minimises the validation NLL of the reference tokens: lower than at τ = 1 unless τ = 1 is the minimum
    assert calibration["temperature"] > 0 and fit["nll"] <= fit["nll_at_1"] + 1e-9
    grid = metrics["validation"]["temperature"]["grid"]
    assert fit["nll"] <= min(grid.values()) + 1e-6
    assert calibration["mc_last_k"] == manifest.dropout["mc_last_k"] and calibration["mc_samples"] == 4
    rule = calibration["abstain"]
    assert rule["measure"] in MEASURES and rule["target_risk"] == 0.3 and rule["bad_chrf"] == 65
    assert rule["fitted_n"] == 30 and math.isfinite(rule["threshold"])
    assert 0 < rule["coverage"] < 1 and rule["achieved_risk"] <= 0.3  # a real threshold, meeting its target
    # the report reads test once: the predictor's own abstain flags, and the references' NLL before/after τ
    outcome = metrics["abstain"]
    assert outcome["n"] == 40 and 0 <= outcome["abstain_rate"] <= 1 and 0 <= outcome["probe_abstain_rate"] <= 1
    reference = metrics["reference_calibration"]
    assert reference["temperature"] == calibration["temperature"] and reference["tokens"] > 0
    assert set(reference["nll"]) == set(reference["ece"]) == {"tau_1", "tau_fitted"}


def test_the_fitted_rule_abstains_on_an_uncertain_input_and_not_on_a_confident_one(artifact: Path) -> None:
    predictor = TranslationPredictor.load(artifact, PredictorOptions())
    rule = predictor.calibration
    assert rule.abstain_measure is not None and rule.abstain_threshold is not None
    data = load_synthetic_translation(1234)
    sources = [source for source, _ in data.splits["test"]] + ["zq vlorp ggg hhh", "Und der König ging hinauf."]
    items = [predictor.prepare(text, {}) for text in sources]
    out = predictor.predict(items, [MCRequest(4, i) for i in range(len(items))])
    sign = -1 if rule.abstain_measure in LOW_IS_UNCERTAIN else 1  # higher = less sure
    ranked = sorted(out, key=lambda p: sign * getattr(p.uncertainty, rule.abstain_measure))
    assert ranked[0].abstain is False and ranked[-1].abstain is True
    assert out[-2].abstain is True  # gibberish is past the validation threshold
    assert predictor.predict(items[-2:], [MCRequest(0, 0)] * 2)[0].abstain is False  # T = 0 never abstains


def test_held_out_parts_are_disjoint_by_construction() -> None:
    config = make_config(TranslationConfig, PRESETS["tiny"], {})
    data = load_synthetic_translation(config.split_seed)
    parts = held_out_parts(config, data)
    assert len(parts["validation_calibration"]) == 30 and len(parts["validation_periodic"]) == 60

    def shared(a: list, b: list, split: list) -> set:
        """Pairs in both parts beyond those the split itself holds twice (the toy grammar repeats sentences)."""
        return (set(a) & set(b)) - {pair for pair in split if split.count(pair) > 1}

    validation, test = data.splits["validation"], data.splits["test"]
    assert not shared(parts["validation_calibration"], parts["validation_periodic"], validation)
    assert not shared(parts["test"], parts["probe_pool"], test)
    assert sorted(parts["test"] + parts["probe_pool"]) == sorted(test)  # a partition of the test split
    # other books: a pair in both a validation and a test part is one the corpus has in both books
    both = set(validation) & set(test)
    assert (set(parts["validation_calibration"]) | set(parts["validation_periodic"])) & set(parts["test"]) <= both
    again = held_out_parts(make_config(TranslationConfig, PRESETS["tiny"], {"calibration_size": 20}), data)
    assert again["validation_periodic"] == parts["validation_periodic"]  # allocated first: a resume keeps it
    with pytest.raises(ValueError, match="need"):
        held_out_parts(make_config(TranslationConfig, PRESETS["tiny"], {"calibration_size": 60}), data)


def test_reports_are_written(artifact: Path) -> None:
    reports = artifact / "reports"
    metrics = json.loads((reports / "metrics.json").read_text(), parse_constant=pytest.fail)  # strict: no NaN
    assert metrics["history"]["losses"] and metrics["quality"]["greedy"]["bleu_signature"].startswith("nrefs:1")
    assert (reports / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (reports / "risk_coverage.png").read_bytes()[:4] == b"\x89PNG"  # every measure's curve on test
    # the learning curve: greedy validation chrF at every periodic validation, against training wall-clock
    evals = metrics["history"]["evals"]
    assert len(evals) >= 2 and all(0 <= e["chrf"] <= 100 and e["train_seconds"] >= 0 for e in evals)
    assert evals[-1]["chrf"] > evals[0]["chrf"]  # the tiny model learns its toy grammar while training
    assert (reports / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (artifact / "model" / "model.safetensors").is_file() and (artifact / "model" / "tokenizer.json").is_file()


def test_bad_arguments_exit_with_usage() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--preset", "tiny", "--mc-samples", "1"])
    assert info.value.code == 2
    with pytest.raises(ValueError, match="unknown dropout sites"):
        make_config(TranslationConfig, PRESETS["tiny"], {"mc_sites": ("everything",)})


def test_token_dropout_is_reproducible_keeps_the_end_and_drops_about_its_rate() -> None:
    sources = [[10 + i for i in range(n)] + [2] for n in range(5, 45)]
    targets = [[7, 2]] * len(sources)
    batches = PairBatches(sources, targets, 8, 0, 1, seed=3, token_dropout=0.25, unk_id=3)
    first, again = list(batches), list(batches)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, again, strict=True))
    ids = torch.cat([b["input_ids"][b["attention_mask"].bool()] for b in first])
    assert 0.18 < float((ids == 3).double().mean()) < 0.32
    ends = [row[mask.bool()][-1] for b in first for row, mask in zip(b["input_ids"], b["attention_mask"], strict=True)]
    assert all(int(end) == 2 for end in ends)  # </s> is never dropped
    plain = list(PairBatches(sources, targets, 8, 0, 1, seed=3))
    assert not any(bool((b["input_ids"] == 3).any()) for b in plain)


def test_bpe_dropout_resegments_each_batch_and_keeps_the_text_the_order_and_the_served_tokenizer() -> None:
    pairs = [(f"And the king {w} went up to Jerusalem {i}.", f"Und der König {w} ging hinauf nach Jerusalem {i}.")
             for i, w in enumerate(["David", "Solomon", "Hezekiah", "Josiah"] * 12)]
    tokenizer = train_joint_tokenizer([t for pair in pairs for t in pair], 400)
    config = make_config(TranslationConfig, PRESETS["tiny"], {"bpe_dropout": 0.5})
    sources, targets = encode_pairs(tokenizer, pairs, config)
    batches = PairBatches(sources, targets, 8, 0, 1, seed=3, resegment=bpe_dropout_encoder(tokenizer, pairs, config))
    plain = PairBatches(sources, targets, 8, 0, 1, seed=3)
    noisy, again, fixed = list(batches), list(batches), list(plain)
    for batch, reference in zip(noisy, fixed, strict=True):
        # The same pairs in the same order (grouped by the plain lengths); each side decodes to its text.
        decode = lambda ids: tokenizer.batch_decode(ids.clamp_min(0), skip_special_tokens=True)  # noqa: E731
        assert decode(batch["input_ids"]) == decode(reference["input_ids"])
        assert decode(batch["labels"]) == decode(reference["labels"])
    count = lambda bs, key: sum(int((b[key] > 2).sum()) for b in bs)  # noqa: E731
    assert count(noisy, "input_ids") > count(fixed, "input_ids") and count(noisy, "labels") > count(fixed, "labels")
    assert any(not torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(noisy, again, strict=True))
    assert encode_pairs(tokenizer, pairs, config) == (sources, targets)  # the served tokenizer is untouched


def test_bpe_dropout_is_refused_out_of_range_and_for_a_tokenizer_without_merges() -> None:
    with pytest.raises(ValueError, match="bpe_dropout must be in"):
        make_config(TranslationConfig, PRESETS["tiny"], {"bpe_dropout": 1.0})
    words = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")))
    config = make_config(TranslationConfig, PRESETS["tiny"], {"bpe_dropout": 0.1})
    with pytest.raises(CheckpointError, match="needs a byte-pair-encoding tokenizer; this one is WordLevel"):
        bpe_dropout_encoder(words, [("a", "a")], config)


def test_collate_pairs_shifts_labels_behind_the_start_token() -> None:
    batch = collate_pairs([[5, 6, 2], [7, 2]], [[8, 9, 2], [4, 2]], pad_id=0, start_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 2], [7, 2, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[8, 9, 2], [4, 2, IGNORE]]
    assert batch["decoder_input_ids"].tolist() == [[1, 8, 9], [1, 4, 2]]


def test_sampling_subset_takes_a_third_as_many_of_each_probe_kind() -> None:
    kinds = ["in_domain"] * 5 + ["german"] * 3 + ["modern"] * 3
    assert sampling_subset(kinds, 3) == [0, 1, 2, 5, 8] and sampling_subset(kinds, None) == list(range(11))


def test_probe_set_properties() -> None:
    english = [f"And the {w} went up to the house of the LORD number {i}." for i, w in enumerate(["king", "man"] * 30)]
    german = [f"Und der König ging hinauf {i}." for i in range(60)]
    probes = build_probe_set(english[:10], english, german, per_kind=20, seed=3)
    assert probes.counts() == {"in_domain": 10, "shuffled": 20, "german": 20, "modern": 20}
    assert probes.labels == [int(k != "in_domain") for k in probes.kinds]
    assert probes.texts[:10] == english[:10]
    shuffled = [t for t, k in zip(probes.texts, probes.kinds, strict=True) if k == "shuffled"]
    for text in shuffled:  # same words, another order
        assert text not in english and any(sorted(text.split()) == sorted(e.split()) for e in english)
    assert all(t in german for t, k in zip(probes.texts, probes.kinds, strict=True) if k == "german")
    again = build_probe_set(english[:10], english, german, per_kind=20, seed=3)
    assert again == probes  # deterministic
    modern = modern_sentences(50, seed=1)
    assert len(set(modern)) == 50 and all(s.endswith(".") for s in modern)
    with pytest.raises(ValueError):
        modern_sentences(10**6, seed=1)
    assert shuffle_words("one", random.Random(0)) == "one"


@pytest.mark.data
def test_quick_preset_data_and_tokenizer_on_the_bible(tmp_path: Path) -> None:
    from training.translation.job import DATASETS, build_tokenizer, encode_pairs

    config = make_config(TranslationConfig, PRESETS["quick"], {})
    data = DATASETS["bible"](config, Path(".cache"))
    assert data.source["held_out_books"]["test"][1]["number"] == 43
    tokenizer = build_tokenizer(config, data.splits["train"], tmp_path)
    assert len(tokenizer) == 8000
    src, tgt = encode_pairs(tokenizer, data.splits["test"][:50], config)
    assert all(ids[-1] == tokenizer.eos_token_id and len(ids) <= 128 for ids in src + tgt)


def test_token_limits_must_fit_the_positions() -> None:
    with pytest.raises(ValueError, match="positions"):
        make_config(TranslationConfig, PRESETS["tiny"], {"max_new_tokens": 128})  # tiny has 128 positions
    assert make_config(TranslationConfig, PRESETS["quick"], {}).max_new_tokens == 160


def test_resume_reuses_the_finished_checkpoint(artifact: Path, tmp_path: Path) -> None:
    cache = artifact.parents[2] / "cache"
    status = main(["--preset", "tiny", "--output-dir", str(tmp_path), "--cache-dir", str(cache), "--resume", "true",
                   "--test-limit", "20", "--sampling-samples", "0", *RULE_ARGS])
    (again,) = list_artifacts(tmp_path, "translation")
    manifest = verify_artifact(again)
    first = verify_artifact(artifact).metrics
    assert status == 0 and manifest.metrics["test_n"] == 20
    assert manifest.metrics["training"]["resumed_at"] == [first["training"]["steps"]]
    assert manifest.metrics["uncertainty"]["sampling"] == {"mode": "off"}
    assert manifest.metrics["training"]["steps"] == first["training"]["steps"]  # nothing left to train
