"""The classification report on MC logits, and the MC-mode bookkeeping of the sentiment evaluation."""

import pytest
import torch

from training.core.classification_metrics import (
    ALL_MEASURES,
    DETERMINISTIC_MEASURES,
    abstain_outcome,
    classification_metrics,
)
from training.sentiment.modes import MCMode, modes_for
from training.sentiment.selection import choose_last_k


def test_report_on_mc_logits() -> None:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(300, 1, 2, generator=generator) * 3
    logits = base + torch.randn(300, 8, 2, generator=generator)
    labels = torch.randint(0, 2, (300,), generator=generator)
    report = classification_metrics(logits, labels, temperature=2.0, target_risk=0.1)
    assert report["n"] == 300 and report["mc_samples"] == 8 and report["temperature"] == 2.0
    assert set(report["auroc"]) == set(report["aurc"]) == set(report["prr"]) == set(ALL_MEASURES)
    assert set(report["coverage_at_risk"]) == set(ALL_MEASURES) and report["confidence_map"] is None
    assert report["best_auroc"] == max(report["auroc"].values())
    mean = torch.softmax(logits / 2.0, dim=-1).mean(dim=1)
    assert report["accuracy"] == pytest.approx(float((mean.argmax(1) == labels).float().mean()))
    picked = mean[torch.arange(300), labels]  # NLL and Brier of the temperature-scaled MC mean, by hand
    assert report["nll"] == pytest.approx(float(-picked.log().mean()), rel=1e-5)
    assert report["brier"] == pytest.approx(float(((mean - torch.eye(2)[labels]) ** 2).sum(dim=1).mean()), rel=1e-5)


def test_a_confidence_map_changes_the_probabilities_scored_but_not_the_labels_or_the_measures() -> None:
    from models.core.calibration import ConfidenceMap

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(400, 4, 2, generator=generator) * 2 + torch.randn(400, 1, 2, generator=generator) * 3
    labels = torch.randint(0, 2, (400,), generator=generator)
    shrink = ConfidenceMap("isotonic", (0.5, 1.0), (0.5, 0.75))  # halves every margin above 1/2
    plain = classification_metrics(logits, labels, 1.5, 0.1)
    mapped = classification_metrics(logits, labels, 1.5, 0.1, shrink)
    assert mapped["confidence_map"] == "isotonic" and mapped["accuracy"] == plain["accuracy"]
    assert mapped["nll"] != plain["nll"] and mapped["ece"] != plain["ece"]
    for key in ("auroc", "aurc", "prr", "coverage_at_risk"):
        assert mapped[key] == plain[key], "measures come from the τ-scaled samples, before the map"


def test_prr_of_the_report_orders_measures_like_aurc() -> None:
    logits = torch.tensor([[[3.0, 0.0]], [[0.2, 0.0]], [[0.0, 2.5]], [[0.0, 0.1]], [[1.5, 0.0]]])
    report = classification_metrics(logits, torch.tensor([0, 1, 1, 0, 0]))
    assert report["prr"]["one_minus_confidence"] == pytest.approx(1.0)  # both errors are the least confident


def test_deterministic_report_has_only_meaningful_measures() -> None:
    logits = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.0]], [[0.0, 3.0]]])
    report = classification_metrics(logits, torch.tensor([0, 1, 1, 1]))
    assert set(report["auroc"]) == set(DETERMINISTIC_MEASURES)
    assert report["auroc"]["one_minus_confidence"] == pytest.approx(1.0)  # the error is the least confident
    with pytest.raises(ValueError):
        classification_metrics(logits[:, 0], torch.tensor([0, 1, 1, 1]))


def test_abstain_outcome() -> None:
    logits = torch.tensor([[[4.0, 0.0]], [[0.1, 0.0]], [[0.0, 4.0]]])
    rule = {"measure": "one_minus_confidence", "threshold": 0.1}
    out = abstain_outcome(logits, torch.tensor([0, 1, 1]), 1.0, rule)
    assert out["coverage"] == pytest.approx(2 / 3) and out["selective_risk"] == 0.0
    assert out["risk_without_abstaining"] == pytest.approx(1 / 3)


def test_modes_and_cost() -> None:
    modes = modes_for(6, 20, (2, 1, 6, 9))
    assert [m.name for m in modes] == ["deterministic", "mc_full", "mc_last_1", "mc_last_2"]
    assert MCMode("x", 20, 1).relative_cost(6) == pytest.approx(25 / 6)
    assert MCMode("x", 20, None).relative_cost(6) == pytest.approx(20)
    assert MCMode("x", 0, None).relative_cost(6) == 1.0


def test_choose_last_k_rule() -> None:
    modes = modes_for(6, 20, (1, 2))
    results = {"mc_full": {"best_auroc": 0.85}, "mc_last_1": {"best_auroc": 0.83}, "mc_last_2": {"best_auroc": 0.845}}
    k, evidence = choose_last_k(results, modes, 6, tolerance=0.01)
    assert k == 2 and evidence["chosen"] == 2
    assert evidence["best_auroc_by_mode"] == {"mc_full": 0.85, "mc_last_1": 0.83, "mc_last_2": 0.845}
    results["mc_last_2"]["best_auroc"] = 0.80
    assert choose_last_k(results, modes, 6, tolerance=0.01)[0] == 6  # none close enough: full MC
    results["mc_last_1"]["best_auroc"] = 0.86
    assert choose_last_k(results, modes, 6, tolerance=0.01)[0] == 1
