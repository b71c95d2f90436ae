"""The evaluation makes every choice on validation: the test labels (or reviews) change the report, never a choice."""

from __future__ import annotations

import torch

from models.sentiment.model import build_tiny_classifier
from training.sentiment.evaluation import EvalSets, evaluate_and_calibrate
from training.sentiment.modes import Encoded, EvalSettings


def _reviews(n: int, seed: int) -> Encoded:
    generator = torch.Generator().manual_seed(seed)
    ids = [[2, *torch.randint(5, 60, (int(length),), generator=generator).tolist(), 3]
           for length in torch.randint(4, 20, (n,), generator=generator)]
    # labels that follow the first token a little, so the tiny model's confidence means something
    labels = torch.tensor([int(review[1] % 2 == 0) ^ int(torch.rand(1, generator=generator) < 0.3) for review in ids])
    return Encoded(ids, labels)


def _settings() -> EvalSettings:
    return EvalSettings(mc_samples=6, last_k_candidates=(1,), sites=frozenset({"hidden", "head"}), target_risk=0.3,
                        tolerance=0.01, batch_rows=256, seed=0, device=torch.device("cpu"), dtype="float32", folds=3)


def test_choices_do_not_depend_on_the_test_set() -> None:
    model = build_tiny_classifier(64, ("negative", "positive"), num_layers=2, dropout=0.2, seed=1)
    selection, calibration, headline = _reviews(60, 1), _reviews(60, 2), _reviews(50, 3)
    flipped = Encoded(headline.ids, 1 - headline.labels)
    results = [evaluate_and_calibrate(model, 0, EvalSets(selection, range(30), calibration, test, range(0, 50, 2)),
                                      _settings())
               for test in (headline, flipped)]
    choices = []
    for result in results:
        section = {k: v for k, v in result.calibration.items() if k != "abstain"}
        del section["fitted_on"]["seconds"]  # wall time, not a choice
        rule = {k: v for k, v in result.calibration["abstain"].items() if k != "test"}
        choices.append((section, rule, result.mc_last_k, result.evidence, result.choices))
    assert choices[0] == choices[1]
    assert results[0].metrics["headline"]["accuracy"] + results[1].metrics["headline"]["accuracy"] == 1.0
    record = results[0].choices
    assert {r["split"] for r in record.values()} == {"validation"}
    assert record["mc_last_k"]["n"] == 30 and record["abstain_rule"]["n"] == 60
    assert record["temperature_and_confidence_map"] == {"split": "validation", "part": "calibration", "n": 60,
                                                        "cross_validation_folds": 3, "criterion": "ece"}
    metrics = results[0].metrics
    assert metrics["test_n"] == 25 and metrics["headline"]["test_n"] in (25, 50)
    for mode in metrics["modes"].values():
        assert mode["reviews"] in (25, 50)
    assert {"deterministic/one_minus_confidence", "deterministic/predictive_entropy"} <= set(
        metrics["uncertainty"]["measures"])
    assert set(metrics["risk_coverage"]["curves"]) == set(metrics["uncertainty"]["measures"])
