"""Temperature fitting recovers a known temperature; the abstain threshold meets its risk."""

import pytest
import torch

from training.core.calibration_fit import choose_abstain_threshold, fit_temperature, mc_nll, select_abstain_rule


def _sample_labels(probs: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)).squeeze(1)


@pytest.mark.parametrize("true_tau", [0.5, 2.5])
def test_recovers_temperature_of_deterministic_logits(true_tau: float) -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(10000, 3, generator=generator, dtype=torch.float64) * 3
    labels = _sample_labels(torch.softmax(logits / true_tau, dim=1), 2)
    tau = fit_temperature(logits[:, None, :], labels)
    assert tau == pytest.approx(true_tau, rel=0.06)
    assert fit_temperature(logits, labels) == pytest.approx(tau)  # [N, C] is [N, 1, C]


def test_recovers_temperature_of_mc_logits() -> None:
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(6000, 1, 2, generator=generator, dtype=torch.float64) * 4
    mc = base + torch.randn(6000, 10, 2, generator=generator, dtype=torch.float64)  # T = 10 noisy samples
    true_tau = 1.8
    labels = _sample_labels(torch.softmax(mc / true_tau, dim=-1).mean(dim=1), 4)
    tau = fit_temperature(mc, labels)
    assert tau == pytest.approx(true_tau, rel=0.08)
    assert mc_nll(mc, labels, tau) <= min(mc_nll(mc, labels, t) for t in (tau * 0.9, tau * 1.1, 1.0))


def test_temperature_stays_in_bounds() -> None:
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])[:, None, :]
    # all right: sharpen as far as allowed (the NLL is flat at 0 near the bound, so "near")
    assert 0.05 <= fit_temperature(logits, torch.tensor([0, 1])) < 0.075
    assert 19.0 < fit_temperature(logits, torch.tensor([1, 0])) <= 20.0  # all wrong: flatten
    with pytest.raises(ValueError):
        fit_temperature(torch.zeros(0, 1, 2), torch.zeros(0, dtype=torch.long))


def test_abstain_threshold_meets_the_risk_at_the_largest_coverage() -> None:
    generator = torch.Generator().manual_seed(5)
    scores = torch.rand(2000, generator=generator, dtype=torch.float64)
    correct = torch.rand(2000, generator=generator, dtype=torch.float64) > scores * 0.4  # error rate grows with score
    rule = choose_abstain_threshold(scores, correct, target_risk=0.05, measure="m")
    kept = scores <= rule["threshold"]
    risk = float((~correct[kept]).double().mean())
    assert rule["measure"] == "m" and rule["target_risk"] == 0.05
    assert risk <= 0.05 and risk == pytest.approx(rule["achieved_risk"])
    assert rule["coverage"] == pytest.approx(float(kept.double().mean()))
    # keeping one more example would break the target
    nxt = scores[~kept].min()
    wider = scores <= nxt
    assert float((~correct[wider]).double().mean()) > 0.05
    assert 0.2 < rule["coverage"] < 1.0


def test_abstain_threshold_when_nothing_meets_the_risk() -> None:
    rule = choose_abstain_threshold(torch.tensor([0.1, 0.2]), torch.tensor([False, False]), 0.05)
    assert rule["coverage"] == 0.0
    assert not bool((torch.tensor([0.1, 0.2]) <= rule["threshold"]).any())
    with pytest.raises(ValueError):
        choose_abstain_threshold(torch.tensor([0.1]), torch.tensor([True]), 0.0)


def test_select_abstain_rule_prefers_the_measure_with_more_coverage() -> None:
    correct = torch.tensor([True] * 8 + [False] * 2)
    good = torch.arange(10, dtype=torch.float64)  # errors have the highest scores
    bad = good.flip(0)  # errors have the lowest scores
    rule = select_abstain_rule({"bad": bad, "good": good}, correct, 0.1)
    assert rule["measure"] == "good" and rule["coverage"] == pytest.approx(0.8)
    assert rule["threshold"] == 7.0  # keeps the scores 0..7, the eight correct ones
