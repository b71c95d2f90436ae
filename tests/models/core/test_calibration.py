"""The one calibration object: manifest sections of every task, the confidence map (serving's interpolation, the
label it keeps), the abstain rule's direction, missing values."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
import torch

from models.core.calibration import LOW_IS_UNCERTAIN, Calibration, ConfidenceMap, interpolate
from models.core.predictor import SequenceUncertainty

SENTIMENT = {"temperature": 1.5, "deterministic_temperature": 0.8, "mc_samples": 20, "mc_last_k": 1,
             "abstain": {"measure": "predictive_entropy", "threshold": 0.4, "target_risk": 0.05, "coverage": 0.8}}
SEQUENCE = {"temperature": 2.0, "mc_samples": 4,
            "abstain": {"measure": "mean_token_entropy", "threshold": 1.2, "target_rate": 0.1, "fitted_n": 50}}


def test_sentiment_section_loads_with_its_deterministic_temperature() -> None:
    calibration = Calibration.from_manifest(SENTIMENT, deterministic=True)
    assert calibration == Calibration(1.5, 0.8, "predictive_entropy", 0.4)
    assert calibration.temperature_for(0) == 0.8 and calibration.temperature_for(20) == 1.5
    assert calibration.describe() == {"temperature": 1.5, "deterministic_temperature": 0.8,
                                      "abstain_measure": "predictive_entropy", "abstain_threshold": 0.4}
    # An older sentiment artifact without a deterministic τ uses τ for both, and says so.
    older = Calibration.from_manifest({"temperature": 1.5}, deterministic=True)
    assert older.temperature_for(0) == 1.5 and older.describe()["deterministic_temperature"] == 1.5


def test_sequence_section_loads_without_a_deterministic_temperature() -> None:
    calibration = Calibration.from_manifest({**SEQUENCE, "deterministic_temperature": 9.0})
    assert calibration == Calibration(2.0, None, "mean_token_entropy", 1.2)
    assert calibration.temperature_for(0) == 2.0
    assert calibration.describe() == {"temperature": 2.0, "abstain_measure": "mean_token_entropy",
                                      "abstain_threshold": 1.2}


def test_the_rule_abstains_on_the_uncertain_side_of_the_threshold() -> None:
    high = Calibration(abstain_measure="mean_token_entropy", abstain_threshold=1.2)
    assert high.abstains({"mean_token_entropy": 1.3}) and not high.abstains({"mean_token_entropy": 1.1})
    assert not high.abstains({"mean_token_entropy": 1.2}), "at the threshold is kept"
    low = Calibration(abstain_measure="sequence_log_prob", abstain_threshold=-5.0)
    assert low.abstains({"sequence_log_prob": -6.0}) and not low.abstains({"sequence_log_prob": -4.0})
    agree = Calibration(abstain_measure="sampling_chrf", abstain_threshold=0.5)
    assert agree.abstains({"sampling_chrf": 0.2}) and not agree.abstains({"sampling_chrf": 0.9})
    assert LOW_IS_UNCERTAIN <= {f.name for f in fields(SequenceUncertainty)}, "names of real measures"


@pytest.mark.parametrize("measure", ["sampling_chrf", "mutual_information"])  # low and high = uncertain
@pytest.mark.parametrize("value", ["missing", None, math.nan])
def test_a_value_that_was_not_computed_never_abstains(measure: str, value: object) -> None:
    measures = {} if value == "missing" else {measure: value}
    for threshold in (-math.inf, 0.5, math.inf):
        assert Calibration(abstain_measure=measure, abstain_threshold=threshold).abstains(measures) is False


@pytest.mark.parametrize("abstain", [None, {}, {"measure": "mutual_information"},
                                     {"measure": "mutual_information", "threshold": None},
                                     {"measure": "mutual_information", "threshold": math.inf},
                                     {"measure": "mutual_information", "threshold": math.nan}],
                         ids=["none", "empty", "no-threshold", "null", "inf", "nan"])
def test_no_usable_threshold_is_no_rule(abstain: dict | None) -> None:
    calibration = Calibration.from_manifest({"temperature": 1.0, "abstain": abstain})
    assert calibration.abstain_threshold is None and calibration.describe()["abstain_threshold"] is None
    assert calibration.abstains({"mutual_information": 1e9}) is False


def test_defaults_and_refusals() -> None:
    assert Calibration.from_manifest(None) == Calibration.from_manifest({}) == Calibration(1.0, None, None, None)
    with pytest.raises(ValueError, match="abstain measure 'entropy'"):
        Calibration.from_manifest({"abstain": {"measure": "entropy", "threshold": 1.0}},
                                  measures={"mean_token_entropy"})
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="positive"):
            Calibration.from_manifest({"temperature": bad})


ISOTONIC = {"kind": "isotonic", "x": [0.55, 0.7, 0.9, 0.99], "y": [0.52, 0.6, 0.85, 0.97]}


@pytest.mark.parametrize("x, y", [([0.5, 0.7, 0.9], [0.5, 0.6, 0.95]),
                                  ([0.6, 0.6, 0.8, 0.8], [0.55, 0.7, 0.7, 0.9]),  # steps: repeated knots
                                  ([0.75], [0.8])])
def test_interpolation_is_numpy_interp(x: list[float], y: list[float]) -> None:
    probe = np.concatenate([np.linspace(0.0, 1.0, 401), np.array(x)])
    knots = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    ours = interpolate(torch.from_numpy(probe), *knots)
    reference = np.interp(probe, x, y)
    steps = np.isin(probe, x[1:-1]) if len(set(x)) < len(x) else np.zeros_like(probe, dtype=bool)
    # at a step's own x the value is the right-hand one; np.interp does not define which
    np.testing.assert_allclose(ours.numpy()[~steps], reference[~steps], atol=1e-12)
    assert ours[steps].tolist() == [y[x.index(v) + 1] for v in probe[steps]]


def test_the_map_replaces_the_top_probability_and_keeps_the_label() -> None:
    confidence_map = ConfidenceMap.from_section(ISOTONIC)
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2000, 3, generator=generator, dtype=torch.float64) * 3, dim=-1)
    probs[:5] = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.4, 0.35, 0.25], [1 / 3] * 3, [0.0, 0.2, 0.8]])
    mapped = confidence_map.apply(probs)
    torch.testing.assert_close(mapped.sum(dim=-1), torch.ones(2000, dtype=torch.float64))
    assert (mapped >= 0).all()
    strict = probs.topk(2, dim=-1).values.diff(dim=-1).squeeze(-1) < 0  # rows with a unique top label
    assert torch.equal(mapped.argmax(dim=-1)[strict], probs.argmax(dim=-1)[strict])
    top = probs.max(dim=-1).values
    wanted = confidence_map.confidence(top)
    free = wanted > probs.topk(2, dim=-1).values[:, 1] + 0.05  # rows where the bound does not bite
    torch.testing.assert_close(mapped.max(dim=-1).values[free], wanted[free])
    # the other labels keep their ratio
    others = mapped[2, 1:] / probs[2, 1:]
    assert float(others[0]) == pytest.approx(float(others[1]))
    assert mapped[1].tolist() == pytest.approx([0.97, 0.015, 0.015]), "a certain row gives the rest out evenly"


def test_maps_load_from_the_manifest_and_old_sections_serve_temperature_only() -> None:
    section = {**SENTIMENT, "confidence_map": ISOTONIC,
               "deterministic_confidence_map": {**ISOTONIC, "kind": "histogram"}}
    calibration = Calibration.from_manifest(section, deterministic=True)
    assert calibration.map_for(20).kind == "isotonic" and calibration.map_for(0).kind == "histogram"
    assert calibration.describe()["confidence_map"] == "isotonic"
    assert calibration.describe()["deterministic_confidence_map"] == "histogram"
    probs = torch.tensor([[[0.8, 0.2], [0.6, 0.4]]], dtype=torch.float64)  # [1, T = 2, C]
    served = calibration.calibrated_mean(probs, 2)
    assert served[0].tolist() == pytest.approx([0.6, 0.4])  # the mean's top 0.7 is a knot: mapped to 0.6
    older = Calibration.from_manifest(SENTIMENT, deterministic=True)
    assert older.map_for(20) is None and older.map_for(0) is None and "confidence_map" not in older.describe()
    torch.testing.assert_close(older.calibrated_mean(probs, 2), probs.mean(dim=1))
    no_map = Calibration.from_manifest({**SENTIMENT, "confidence_map": None}, deterministic=True)
    assert no_map.confidence_map is None
    sequence = Calibration.from_manifest({**SEQUENCE, "deterministic_confidence_map": ISOTONIC})
    assert sequence.deterministic_confidence_map is None, "only a task with deterministic passes reads it"
    assert ConfidenceMap.from_section(ConfidenceMap.from_section(ISOTONIC).to_section()).x == tuple(ISOTONIC["x"])


@pytest.mark.parametrize("bad", [{"x": [], "y": []}, {"x": [0.5, 0.6], "y": [0.5]},
                                 {"x": [0.7, 0.6], "y": [0.5, 0.6]}, {"x": [0.5], "y": [1.5]},
                                 {"x": [math.nan], "y": [0.5]}])
def test_a_malformed_map_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="confidence map"):
        Calibration.from_manifest({"temperature": 1.0, "confidence_map": {"kind": "isotonic", **bad}})
