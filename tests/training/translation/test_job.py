"""The translation job end to end on the tiny preset, its evaluation helpers, and the OOD probe builder."""

import json
import random
from pathlib import Path

import pytest
import torch

from models.core.artifacts import list_artifacts, verify_artifact
from training.core.config import make_config
from training.translation.batches import IGNORE, collate_pairs
from training.translation.decoding import new_token_cap
from training.translation.evaluation import (
    ORIENTATION,
    abstain_outcome,
    fit_abstain,
    measures_from_scores,
    sampling_subset,
)
from training.translation.job import PRESETS, TranslationConfig, main
from training.translation.probes import KINDS, build_probe_set, modern_sentences, shuffle_words


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-translation")
    status = main(["--preset", "tiny", "--output-dir", str(root / "artifacts"), "--cache-dir", str(root / "cache")])
    assert status == 0
    (path,) = list_artifacts(root / "artifacts", "translation")
    return path


def test_artifact_verifies_and_has_every_section(artifact: Path) -> None:
    manifest = verify_artifact(artifact)
    assert manifest.task == "translation" and manifest.model_class == "MarianMTModel"
    assert manifest.default_mc_samples == PRESETS["tiny"]["mc_samples"]
    assert {"torch", "transformers", "tokenizers"} <= set(manifest.libraries)
    source = manifest.data["sources"][0]
    assert len(source["sha256"]) == 64 and source["held_out_books"]["test"] == [{"number": 6, "name": "6"}]
    assert manifest.data["splits"] == {"train": 396, "validation": 99, "test": 100}
    assert manifest.training_config["preset"] == "tiny" and manifest.training_config["label_smoothing"] == 0.1
    dropout = manifest.dropout
    assert dropout["sites"] == {"hidden": 0.1, "attention": 0.1, "activation": 0.1}
    assert dropout["mc_sites"] == ["hidden"] and dropout["mc_last_k"] == dropout["num_layers"] == 1
    pre = manifest.preprocessing
    assert pre["max_input_tokens"] == 128 and pre["max_new_tokens"] == 24
    assert pre["token_conventions"]["specials"] == {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    metrics = manifest.metrics
    assert metrics["test_n"] == 40 and set(metrics["quality"]) == {"greedy", "beam4"}
    assert [metrics["quality"][mode]["num_beams"] for mode in ("greedy", "beam4")] == [1, 4]
    assert metrics["quality"]["greedy"]["chrf"] > 40  # the toy grammar is learnt, not guessed
    # collapse guard: different sources get different translations
    assert metrics["distinct_output_ratio"] > 0.5 and metrics["collapsed"] is False
    assert metrics["last_k_comparison"] == {}  # one decoder layer: last-1 is the full MC default
    rule = manifest.calibration["abstain"]
    assert rule["measure"] == "mean_token_entropy" and rule["target_rate"] == 0.1 and rule["fitted_n"] == 30
    assert set(rule["test"]) == {"in_domain_abstain_rate", "probe_abstain_rate", "chrf_kept", "chrf_abstained"}
    unc = metrics["uncertainty"]
    assert unc["probe_counts"] == {"in_domain": 40, "shuffled": 8, "german": 8, "modern": 8}
    expected = {"tp", "tp_per_token", "d_tp", "d_tp_per_token", "d_var", "entropy", "mi"}
    assert set(unc["correlation_with_sentence_chrf"]) == expected == set(unc["ood_auroc"])
    for row in unc["ood_auroc"].values():
        assert set(row) == {"all", *KINDS}
    means = unc["measure_means"]
    assert set(means) == expected and all(set(row) == {"in_domain", *KINDS} for row in means.values())
    # the trained dropout is live when scoring: the T passes disagree, so D-Var and MI are > 0 (0 without it)
    assert all(means[m][kind] > 0 for m in ("d_var", "mi") for kind in ("in_domain", *KINDS))
    sampling = unc["sampling"]  # lex_sim on the sub-subset: 12 test inputs and 4 of each probe kind
    assert sampling["samples"] == 3
    assert sampling["probe_counts"] == {"in_domain": 12, "shuffled": 4, "german": 4, "modern": 4}
    assert set(sampling["ood_auroc"]["lex_sim"]) == {"all", *KINDS}
    # defined (not NaN, written as null): the stochastic decodes agree more for some inputs than for others
    assert sampling["correlation_with_sentence_chrf"]["lex_sim"]["spearman"] is not None


def test_reports_are_written(artifact: Path) -> None:
    reports = artifact / "reports"
    metrics = json.loads((reports / "metrics.json").read_text(), parse_constant=pytest.fail)  # strict: no NaN
    assert metrics["history"]["losses"] and metrics["quality"]["greedy"]["bleu_signature"].startswith("nrefs:1")
    assert (reports / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (artifact / "model" / "model.safetensors").is_file() and (artifact / "model" / "tokenizer.json").is_file()


def test_bad_arguments_exit_with_usage() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--preset", "tiny", "--mc-samples", "1"])
    assert info.value.code == 2
    with pytest.raises(ValueError, match="unknown dropout sites"):
        make_config(TranslationConfig, PRESETS["tiny"], {"mc_sites": ("everything",)})


def test_collate_pairs_shifts_labels_behind_the_start_token() -> None:
    batch = collate_pairs([[5, 6, 2], [7, 2]], [[8, 9, 2], [4, 2]], pad_id=0, start_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 2], [7, 2, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[8, 9, 2], [4, 2, IGNORE]]
    assert batch["decoder_input_ids"].tolist() == [[1, 8, 9], [1, 4, 2]]


def test_measures_from_a_stub_scorer() -> None:
    rows = [{"sequence_log_prob": -4.0, "mc_log_prob_mean": -6.0, "mc_log_prob_var": 0.5,
             "mean_token_entropy": 1.0, "mean_token_mutual_information": 0.1}] * 2
    measures = measures_from_scores(rows, [2, 4])
    assert measures["tp_per_token"].tolist() == [-2.0, -1.0] and measures["d_tp_per_token"].tolist() == [-3.0, -1.5]
    assert set(measures) == set(ORIENTATION) - {"lex_sim"}
    assert new_token_cap(10, 160) == 25 and new_token_cap(200, 160) == 160
    kinds = ["in_domain"] * 5 + ["german"] * 3 + ["modern"] * 3
    assert sampling_subset(kinds, 3) == [0, 1, 2, 5, 8] and sampling_subset(kinds, None) == list(range(11))


def test_abstain_rule_flags_its_rate_and_reports_what_it_keeps() -> None:
    rule = fit_abstain(torch.arange(10, dtype=torch.float64), 0.1, "entropy")
    assert rule["measure"] == "mean_token_entropy" and rule["fitted_n"] == 10
    assert rule["threshold"] == pytest.approx(8.1)  # the 0.9 quantile: only the highest of ten is flagged
    with pytest.raises(ValueError, match="less sure"):
        fit_abstain(torch.arange(10.0), 0.1, "tp")  # higher TP means surer: flagging high values is wrong
    with pytest.raises(ValueError, match="rate"):
        fit_abstain(torch.arange(10.0), 0.0, "entropy")
    # three test outputs (chrF 80, 20, 70), then two probes; flagged: the second output and the first probe
    values = torch.tensor([0.1, 0.9, 0.2, 0.95, 0.3])
    outcome = abstain_outcome(values, 0.5, torch.tensor([80.0, 20.0, 70.0]), n_in_domain=3)
    assert outcome == pytest.approx({"in_domain_abstain_rate": 1 / 3, "probe_abstain_rate": 0.5,
                                     "chrf_kept": 75.0, "chrf_abstained": 20.0})


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
                   "--test-limit", "20", "--sampling-samples", "0"])
    (again,) = list_artifacts(tmp_path, "translation")
    manifest = verify_artifact(again)
    first = verify_artifact(artifact).metrics
    assert status == 0 and manifest.metrics["test_n"] == 20
    assert manifest.metrics["training"]["resumed_at"] == [first["training"]["steps"]]
    assert manifest.metrics["uncertainty"]["sampling"] == {"mode": "off"}
    assert manifest.metrics["training"]["steps"] == first["training"]["steps"]  # nothing left to train
