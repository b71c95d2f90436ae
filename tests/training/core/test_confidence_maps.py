"""Confidence maps fitted at training time: what serving reads back reproduces the fit, the bounds hold, and the
cross-validated choice prefers a richer map only when temperature cannot fix the calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.isotonic import IsotonicRegression

from models.core.calibration import ConfidenceMap
from training.core import scoring
from training.core.confidence_maps import (
    calibrate,
    choose_calibration,
    fit_histogram,
    fit_isotonic,
    fit_map,
    top_label,
)


def _binary(n: int, seed: int, true_confidence) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic logits [N, 1, 2] whose softmax top label is right with probability true_confidence(p)."""
    generator = torch.Generator().manual_seed(seed)
    margin = torch.rand(n, generator=generator, dtype=torch.float64) * 6.0
    p = torch.sigmoid(margin)  # the model's top-label probability, in [0.5, 1)
    right = torch.rand(n, generator=generator, dtype=torch.float64) < true_confidence(p)
    predicted = torch.randint(0, 2, (n,), generator=generator)
    labels = torch.where(right, predicted, 1 - predicted)
    sign = torch.where(predicted == 1, 1.0, -1.0).double()
    logits = torch.stack([-sign * margin / 2, sign * margin / 2], dim=-1)[:, None, :]
    return logits, labels


def test_isotonic_knots_reproduce_scikit_learn_predict() -> None:
    generator = torch.Generator().manual_seed(0)
    confidence = 0.5 + 0.5 * torch.rand(500, generator=generator, dtype=torch.float64)
    correct = (torch.rand(500, generator=generator, dtype=torch.float64) < confidence ** 2).double()
    fitted = fit_isotonic(confidence, correct, num_classes=2)
    reference = IsotonicRegression(y_min=0.5, y_max=500 / 501, out_of_bounds="clip").fit(confidence.numpy(),
                                                                                          correct.numpy())
    probe = np.concatenate([np.linspace(0.3, 1.0, 301), confidence.numpy()[:50]])
    ours = fitted.confidence(torch.from_numpy(probe)).numpy()
    np.testing.assert_allclose(ours, reference.predict(probe), rtol=0, atol=1e-12)
    assert np.all(np.diff(ours[:301]) >= -1e-12), "monotone"
    assert 0.5 <= ours.min() and ours.max() <= 500 / 501, "never certain: one test mistake would cost unbounded NLL"


def test_histogram_is_a_step_per_equal_mass_bin() -> None:
    confidence = torch.tensor([0.55, 0.6, 0.65, 0.7, 0.8, 0.85, 0.9, 0.95], dtype=torch.float64)
    correct = torch.tensor([0, 1, 1, 0, 1, 1, 1, 1], dtype=torch.float64)
    fitted = fit_histogram(confidence, correct, num_classes=2, bins=2)
    assert fitted.kind == "histogram"
    values = fitted.confidence(torch.tensor([0.5, 0.6, 0.74, 0.75, 0.99], dtype=torch.float64)).tolist()
    # bins below and from the median 0.75: accuracies 2/4 and 4/4 (capped at n/(n+1) = 8/9)
    assert values == pytest.approx([0.5, 0.5, 0.5, 8 / 9, 8 / 9])
    tied = fit_histogram(torch.full((10,), 0.9, dtype=torch.float64), torch.ones(10, dtype=torch.float64), 2)
    assert tied.confidence(torch.tensor([0.6, 0.99], dtype=torch.float64)).tolist() == [10 / 11] * 2
    assert fit_map("temperature", confidence, correct, 2) is None
    with pytest.raises(ValueError, match="unknown calibration map"):
        fit_map("platt", confidence, correct, 2)


def test_cross_validation_prefers_a_map_where_temperature_cannot_fix_the_shape() -> None:
    # Over-confident in the middle, right at the top: no single τ fixes both, a monotone map does.
    logits, labels = _binary(6000, 1, lambda p: torch.where(p < 0.9, 0.5 + 0.5 * (p - 0.5), p))
    choice = choose_calibration(logits, labels, folds=5, seed=0)
    evidence = choice.cross_validation
    assert set(evidence) == {"temperature", "isotonic", "histogram"}
    assert choice.kind != "temperature" and choice.confidence_map is not None
    assert evidence[choice.kind]["ece"] == min(v["ece"] for v in evidence.values())
    assert evidence[choice.kind]["ece"] < 0.6 * evidence["temperature"]["ece"]
    served = calibrate(logits, choice.temperature, choice.confidence_map)
    scaled = calibrate(logits, choice.temperature, None)
    assert torch.equal(served.argmax(dim=1), scaled.argmax(dim=1)), "the map keeps every label"
    assert scoring.ece(served, labels) < scoring.ece(scaled, labels)
    assert choice.record()["chosen"] == choice.kind and choice.record()["folds"] == 5


def test_cross_validation_keeps_temperature_when_it_is_enough() -> None:
    # Calibrated at τ = 2: a richer map can only add estimation noise, and NLL says so.
    logits, labels = _binary(3000, 2, lambda p: torch.sigmoid(torch.logit(p) / 2))
    choice = choose_calibration(logits, labels, folds=5, seed=0, criterion="nll")
    assert choice.kind == "temperature" and choice.confidence_map is None
    assert choice.temperature == pytest.approx(2.0, rel=0.15)


def test_choose_calibration_refuses_bad_arguments() -> None:
    logits, labels = _binary(40, 3, lambda p: p)
    with pytest.raises(ValueError, match="criterion"):
        choose_calibration(logits, labels, criterion="accuracy")
    with pytest.raises(ValueError, match="maps"):
        choose_calibration(logits, labels, kinds=("beta",))
    with pytest.raises(ValueError, match="items"):
        choose_calibration(logits[:9], labels[:9], folds=5)


def test_top_label() -> None:
    confidence, correct = top_label(torch.tensor([[0.2, 0.8], [0.7, 0.3]]), torch.tensor([1, 1]))
    assert confidence.tolist() == pytest.approx([0.8, 0.7]) and correct.tolist() == [1.0, 0.0]
    assert not math.isnan(float(ConfidenceMap("isotonic", (0.5, 1.0), (0.5, 0.9)).confidence(confidence)[0]))
