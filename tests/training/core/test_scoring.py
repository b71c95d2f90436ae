"""Metrics against small examples computed by hand."""

import math

import pytest
import torch

import training.core.scoring as metrics

PROBS = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], dtype=torch.float64)
LABELS = torch.tensor([0, 1, 1, 1])


def test_accuracy_nll_brier_by_hand() -> None:
    assert metrics.accuracy(PROBS, LABELS) == pytest.approx(0.75)
    assert metrics.nll(PROBS, LABELS) == pytest.approx(-math.log(0.9 * 0.8 * 0.4 * 0.7) / 4)
    # Σ_c (p_c − y_c)²: 2·0.01, 2·0.04, 2·0.36, 2·0.09
    assert metrics.brier(PROBS, LABELS) == pytest.approx((0.02 + 0.08 + 0.72 + 0.18) / 4)


def test_nll_of_a_confident_mistake_is_large_not_infinite() -> None:
    assert metrics.nll(torch.tensor([[1.0, 0.0]]), torch.tensor([1])) == pytest.approx(-math.log(1e-12))


def test_ece_by_hand() -> None:
    # confidences 0.9, 0.8, 0.6, 0.7 fall in four different 15-bins; accuracies 1, 1, 0, 1
    expected = (abs(1 - 0.9) + abs(1 - 0.8) + abs(0 - 0.6) + abs(1 - 0.7)) / 4
    assert metrics.ece(PROBS, LABELS) == pytest.approx(expected, abs=1e-6)
    # two bins: [0.5, 1] holds everything → |mean acc − mean conf|
    assert metrics.ece(PROBS, LABELS, n_bins=2) == pytest.approx(abs(0.75 - 0.75), abs=1e-6)


def test_reliability_bins_reproduce_torchmetrics_ece() -> None:
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(500, 3, generator=generator) * 2, dim=1)
    labels = torch.randint(0, 3, (500,), generator=generator)
    bins = metrics.reliability_bins(probs, labels)
    total = sum(bins["count"])
    rows = zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True)
    ece = sum(n / total * abs(a - c) for n, a, c in rows if n)
    assert total == 500
    assert ece == pytest.approx(metrics.ece(probs, labels), abs=1e-5)


def test_misclassification_auroc() -> None:
    errors = torch.tensor([False, False, True, True])
    assert metrics.misclassification_auroc(torch.tensor([0.1, 0.2, 0.8, 0.9]), errors) == pytest.approx(1.0)
    assert metrics.misclassification_auroc(torch.tensor([0.9, 0.8, 0.2, 0.1]), errors) == pytest.approx(0.0)
    # one error ranked above one of the two correct ones: 3 of 4 pairs ordered right
    assert metrics.misclassification_auroc(torch.tensor([0.1, 0.5, 0.4, 0.9]), errors) == pytest.approx(0.75)
    assert math.isnan(metrics.misclassification_auroc(torch.tensor([0.1, 0.2]), torch.tensor([False, False])))


def test_aurc_and_curve_by_hand() -> None:
    scores = torch.tensor([0.3, 0.1, 0.4, 0.2])
    errors = torch.tensor([False, False, True, True])  # sorted by score: ok, err, ok, err
    assert metrics.aurc(scores, errors) == pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4)
    curve = metrics.risk_coverage_curve(scores, errors)
    assert curve["coverage"] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert curve["risk"] == pytest.approx([0, 1 / 2, 1 / 3, 1 / 2])
    assert curve["threshold"] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_ties_are_kept_or_rejected_together() -> None:
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5])
    errors = torch.tensor([True, False, False, False])
    assert metrics.aurc(scores, errors) == pytest.approx(0.25)  # any tie order: expected risk 1/4 everywhere
    curve = metrics.risk_coverage_curve(scores, errors)
    assert curve["coverage"] == [1.0] and curve["risk"] == pytest.approx([0.25])
    # the order of tied examples in the input does not matter
    assert metrics.aurc(scores, errors.flip(0)) == pytest.approx(metrics.aurc(scores, errors))


def test_coverage_at_risk() -> None:
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    errors = torch.tensor([False, False, False, True, True])
    got = metrics.coverage_at_risk(scores, errors, target_risk=0.25)
    assert got == {"coverage": pytest.approx(0.8), "threshold": pytest.approx(0.4),
                   "achieved_risk": pytest.approx(0.25)}
    none = metrics.coverage_at_risk(torch.tensor([0.1, 0.2]), torch.tensor([True, False]), 0.1)
    assert none["coverage"] == 0.0 and none["threshold"] < 0.1 and math.isnan(none["achieved_risk"])


def test_downsample_curve_keeps_ends() -> None:
    curve = {"coverage": [i / 99 for i in range(100)], "risk": list(range(100))}
    small = metrics.downsample_curve(curve, 10)
    assert len(small["coverage"]) == 10 and small["risk"][0] == 0 and small["risk"][-1] == 99


def test_prr_is_one_for_the_oracle_zero_for_no_information_and_negative_when_inverted() -> None:
    from training.core.scoring import prr

    losses = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0, 0.0, 0.2, 0.7])
    assert prr(losses, losses) == pytest.approx(1.0)
    assert prr(torch.zeros(8), losses) == pytest.approx(0.0, abs=1e-12)  # one tie group = random order
    assert prr(-losses, losses) < -0.9
    assert math.isnan(prr(torch.arange(4.0), torch.ones(4)))
    partial = prr(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert 0.0 < partial < 1.0
