"""Properties of the uncertainty measures (natural logs) on random and hand-built MC samples."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.core.uncertainty import calibrated_probs, classification_uncertainty, entropy


def random_probs(seed: int, batch: int, samples: int, classes: int, sharpness: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, samples, classes, generator=generator, dtype=torch.float64) * sharpness
    return torch.softmax(logits, dim=-1)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    samples=st.integers(1, 30),
    classes=st.integers(2, 6),
    sharpness=st.floats(0.01, 20.0),
)
def test_mutual_information_bounds(seed: int, samples: int, classes: int, sharpness: float) -> None:
    probs = random_probs(seed, 4, samples, classes, sharpness)
    u = classification_uncertainty(probs)
    tol = 1e-9
    assert torch.all(u["mutual_information"] >= 0)
    assert torch.all(u["mutual_information"] <= u["predictive_entropy"] + tol)
    assert torch.all(u["mutual_information"] <= math.log(samples) + tol)
    assert torch.all(u["predictive_entropy"] <= math.log(classes) + tol)
    assert torch.allclose(u["predictive_entropy"], u["expected_entropy"] + u["mutual_information"], atol=1e-9)
    assert torch.all((u["variation_ratio"] >= 0) & (u["variation_ratio"] <= 1 - 1 / samples + tol))


def test_identical_samples_have_zero_epistemic_uncertainty() -> None:
    one = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    u = classification_uncertainty(one.expand(1, 12, 3))
    assert u["mutual_information"].item() == pytest.approx(0.0, abs=1e-12)
    assert u["variation_ratio"].item() == 0.0
    assert u["probability_std"].item() == pytest.approx(0.0, abs=1e-12)
    assert u["predictive_entropy"].item() == pytest.approx(entropy(one).item())


def test_uniform_predictive_has_entropy_ln_c() -> None:
    u = classification_uncertainty(torch.full((2, 5, 4), 0.25))
    assert torch.allclose(u["predictive_entropy"], torch.full((2,), math.log(4), dtype=torch.float64))


def test_disagreeing_confident_samples_are_epistemic() -> None:
    # Half the samples say class 0 with certainty, half class 1: MI = H[p̄] = ln 2, aleatoric = 0.
    probs = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5).unsqueeze(0)
    u = classification_uncertainty(probs)
    assert u["mutual_information"].item() == pytest.approx(math.log(2))
    assert u["expected_entropy"].item() == pytest.approx(0.0)
    assert u["variation_ratio"].item() == pytest.approx(0.5)
    assert u["probability_std"].item() == pytest.approx(0.5)


def test_temperature_flattens_and_validates() -> None:
    logits = torch.tensor([[2.0, -1.0]])
    hot = calibrated_probs(logits, 3.0)
    assert hot.max() < calibrated_probs(logits, 1.0).max()
    with pytest.raises(ValueError):
        calibrated_probs(logits, 0.0)


def test_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError):
        classification_uncertainty(torch.tensor([0.5, 0.5]))
