"""What the sequence tasks' evaluations share: τ on a grid, the abstain rule for a quality target, PRR tables,
and running the serving predictor over many inputs (training/core/sequence_quality.py, predicting.py)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from models.core.calibration import Calibration
from models.core.predictor import PredictorOptions, SequenceUncertainty
from models.translation.predictor import TranslationPredictor
from tests import factories
from training.core.predicting import predict_all, prepare_all, rebuilt, score_all
from training.core.sequence_quality import (
    MEASURES,
    TemperatureGrid,
    measure_table,
    oriented,
    outcome,
    prr_table,
    select_rule,
)


def _overconfident(tokens: int, vocab: int, factor: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities [2, tokens, V] of a model whose logits are `factor` × the true ones (two identical MC
    rows), and targets drawn from the true distribution: the NLL-optimal τ is `factor`."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(tokens, vocab, generator=g) * 1.5
    targets = torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(-1)
    lp = torch.log_softmax(factor * logits, -1)
    return torch.stack([lp, lp]), targets


def test_temperature_grid_recovers_a_known_temperature_and_lowers_ece() -> None:
    lp, targets = _overconfident(6000, 12, 2.0, 0)
    grid = TemperatureGrid()
    for start in range(0, 6000, 1000):  # accumulated batch by batch, as the evaluation streams items
        grid.add(lp[:, start: start + 1000], targets[start: start + 1000])
    fit = grid.fit()
    assert fit["tokens"] == 6000 and not fit["at_bound"]
    assert fit["temperature"] == pytest.approx(2.0, rel=0.1)
    assert fit["nll"] < fit["nll_at_1"] and fit["nll"] <= min(grid.nll()) + 1e-9
    tracked = TemperatureGrid(taus=(1.0, fit["temperature"]), track=(1.0, fit["temperature"]))
    tracked.add(lp, targets)
    assert tracked.ece(fit["temperature"]) < tracked.ece(1.0) / 2  # overconfidence is what τ removes


def test_temperature_grid_is_the_nll_of_the_mc_mean() -> None:
    lp = torch.log_softmax(torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1)), -1)
    targets = torch.tensor([0, 4, 2, 2])
    grid = TemperatureGrid(taus=(0.5,))
    grid.add(lp, targets)
    mean = torch.softmax(lp / 0.5, -1).mean(0)  # p̄ at τ = 0.5
    assert grid.nll()[0] == pytest.approx(float(-mean[torch.arange(4), targets].log().mean()), rel=1e-5)


def _uncertainties(values: dict[str, list[float]]) -> list[SequenceUncertainty]:
    n = len(next(iter(values.values())))
    base = dict.fromkeys(MEASURES, 0.0)
    return [SequenceUncertainty(**{**base, **{k: v[i] for k, v in values.items()}}) for i in range(n)]


def test_the_rule_meets_its_target_in_the_direction_serving_reads() -> None:
    g = torch.Generator().manual_seed(2)
    quality = torch.rand(200, generator=g)  # higher = better output
    bad = (quality < 0.3).double()
    noise = 0.2 * torch.randn(200, generator=g)
    # a log-probability (low = uncertain) that tracks quality, and an entropy (high = uncertain) that does not
    values = {"sequence_log_prob_per_token": (quality + noise - 2.0).tolist(),
              "mean_token_entropy": torch.rand(200, generator=g).tolist()}
    measures = measure_table(_uncertainties(values), tuple(values))
    rule = select_rule(measures, bad, target_risk=0.1)
    assert rule["measure"] == "sequence_log_prob_per_token" and 0 < rule["coverage"] < 1
    assert rule["candidates"]["mean_token_entropy"]["coverage"] < rule["coverage"]
    serving = Calibration.from_manifest({"abstain": {"measure": rule["measure"], "threshold": rule["threshold"]}})
    abstain = torch.tensor([serving.abstains({rule["measure"]: v}) for v in values[rule["measure"]]])
    kept = ~abstain
    assert float(kept.double().mean()) == pytest.approx(rule["coverage"])  # the rule as served keeps that share
    assert float(bad[kept].mean()) == pytest.approx(rule["achieved_risk"]) and rule["achieved_risk"] <= 0.1
    report = outcome(abstain, 1 - quality, bad)
    assert report["bad_share_kept"] <= 0.1 < report["bad_share_all"] and report["loss_kept"] < report["loss_abstained"]
    prrs = prr_table(measures, 1 - quality)
    assert prrs["sequence_log_prob_per_token"] > 0.5 > abs(prrs["mean_token_entropy"])
    assert torch.equal(oriented("sequence_log_prob", torch.tensor([1.0])), torch.tensor([-1.0]))


def test_an_unreachable_target_abstains_on_everything() -> None:
    measures = {"mean_token_entropy": torch.tensor([0.1, 0.2, 0.3])}
    rule = select_rule(measures, torch.tensor([1.0, 1.0, 1.0]), target_risk=0.5)
    assert rule["coverage"] == 0.0 and all(v > rule["threshold"] for v in (0.1, 0.2, 0.3))


@pytest.fixture(scope="module")
def translation(tmp_path_factory: pytest.TempPathFactory) -> TranslationPredictor:
    path: Path = factories.make_tiny_translation_artifact(tmp_path_factory.mktemp("artifacts"))
    return TranslationPredictor.load(path, PredictorOptions())


def test_predictions_do_not_depend_on_the_batching(translation: TranslationPredictor) -> None:
    texts = ["The king saw the bread.", "Love is patient.", "the king " * 40, "The woman ate the fish."]
    items, kept = prepare_all(translation, texts, {})
    assert kept == [0, 1, 3]  # over the token limit: the server would refuse it, so the report leaves it out
    one = predict_all(translation, items, 3, 7, 1, "batch 1")
    three = predict_all(translation, items, 3, 7, 3, "batch 3")
    for a, b in zip(one, three, strict=True):  # item i's seed is mix_seed(7, i) whatever its batch
        assert a.translation == b.translation
        for name, value in dataclasses.asdict(a.uncertainty).items():
            if value is not None:
                assert getattr(b.uncertainty, name) == pytest.approx(value, rel=1e-4, abs=1e-6)
    lengths = score_all(translation, [item.input_ids for item in items], [p.output_ids for p in one], 3, 7, 2,
                        "score", lambda i, scored: (i, len(scored.det_log_probs)))
    assert lengths == [(i, p.output_tokens) for i, p in enumerate(one)]  # reductions come back in input order
    cooler = rebuilt(translation, calibration={"temperature": 2.0}, last_k=1)
    assert cooler.calibration.temperature == 2.0 and cooler.model is translation.model
    assert translation.calibration.temperature == 1.0 and math.isfinite(cooler.describe()["calibration"]["temperature"])


def test_a_rule_that_keeps_too_little_of_validation_is_turned_off() -> None:
    from training.core.sequence_quality import usable_rule

    measures = {"mean_token_entropy": torch.linspace(0.0, 1.0, 50)}
    losses = torch.full((50,), 0.7)  # every output equally bad: only an empty kept set meets 0.55
    rule = usable_rule(select_rule(measures, losses, 0.55), min_coverage=0.5)
    assert rule["threshold"] is None and "0.550" in rule["off"] and "50%" in rule["off"]
    good = select_rule(measures, torch.linspace(0.0, 1.0, 50), 0.3)  # low entropy = low loss
    assert usable_rule(good, min_coverage=0.2) is good and good["threshold"] is not None
