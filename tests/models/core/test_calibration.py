"""The one calibration object: manifest sections of every task, the abstain rule's direction, missing values."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest

from models.core.calibration import LOW_IS_UNCERTAIN, Calibration
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
