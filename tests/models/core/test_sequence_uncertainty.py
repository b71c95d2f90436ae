"""Sequence uncertainty measures: definitions on hand-made inputs and bounds on random ones."""

from __future__ import annotations

import math

import pytest
import torch

from models.core.sequence_uncertainty import mean_pairwise_chrf, sequence_measures, token_log_probs, token_measures


def _random_log_probs(t: int, n: int, v: int, seed: int, sharpness: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(sharpness * torch.randn(t, n, v, generator=g), dim=-1)


@pytest.mark.parametrize("seed", range(8))
def test_bounds_on_random_samples(seed: int) -> None:
    t, n, v = 1 + seed % 5, 2 + seed, 7
    lp = _random_log_probs(t, n, v, seed)
    targets = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(seed))
    m = token_measures(lp, targets)
    assert m.probability.shape == (n,) and m.sample_log_probs.shape == (t, n)
    assert ((m.probability >= 0) & (m.probability <= 1)).all()
    assert (m.mutual_information >= 0).all()
    assert (m.mutual_information <= m.predictive_entropy + 1e-12).all()
    assert (m.mutual_information <= math.log(t) + 1e-9).all()
    assert (m.predictive_entropy <= math.log(v) + 1e-9).all()
    s = sequence_measures(token_log_probs(lp[0], targets), m)
    assert s["mc_log_prob_var"] >= 0 and s["sequence_log_prob"] <= 0 and s["mc_log_prob_mean"] <= 0
    assert s["max_token_mutual_information"] >= s["mean_token_mutual_information"] >= 0


def test_definitions_on_a_hand_computed_case() -> None:
    # T = 2 samples, n = 1 token, V = 2: p_1 = (0.9, 0.1), p_2 = (0.5, 0.5); output token 0.
    probs = torch.tensor([[[0.9, 0.1]], [[0.5, 0.5]]], dtype=torch.float64)
    m = token_measures(probs.log(), torch.tensor([0]))
    h = lambda *p: -sum(x * math.log(x) for x in p)  # noqa: E731
    assert float(m.probability[0]) == pytest.approx(0.7)
    assert float(m.predictive_entropy[0]) == pytest.approx(h(0.7, 0.3))
    assert float(m.expected_entropy[0]) == pytest.approx((h(0.9, 0.1) + h(0.5, 0.5)) / 2)
    assert float(m.mutual_information[0]) == pytest.approx(h(0.7, 0.3) - (h(0.9, 0.1) + h(0.5, 0.5)) / 2)
    det = torch.tensor([math.log(0.8)], dtype=torch.float64)
    s = sequence_measures(det, m)
    assert s["sequence_log_prob"] == pytest.approx(math.log(0.8))
    assert s["mc_log_prob_mean"] == pytest.approx((math.log(0.9) + math.log(0.5)) / 2)
    assert s["mc_log_prob_var"] == pytest.approx(((math.log(0.9) - math.log(0.5)) / 2) ** 2)


def test_sequence_log_probs_are_sums_over_tokens() -> None:
    lp = _random_log_probs(3, 5, 11, 0)
    targets = torch.tensor([1, 4, 2, 2, 10])
    m = token_measures(lp, targets)
    s = sequence_measures(token_log_probs(lp[1], targets), m)
    per_sample = [sum(float(lp[t, j, targets[j]]) for j in range(5)) for t in range(3)]
    assert s["sequence_log_prob"] == pytest.approx(per_sample[1])
    assert s["mc_log_prob_mean"] == pytest.approx(sum(per_sample) / 3)
    assert s["mc_log_prob_var"] == pytest.approx(torch.tensor(per_sample).var(unbiased=False).item())


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_identical_samples_have_zero_mi_and_variance(dtype: torch.dtype, tolerance: float) -> None:
    lp = _random_log_probs(1, 4, 9, 3).to(dtype).expand(6, 4, 9)
    m = token_measures(lp, torch.tensor([0, 1, 2, 3]))
    assert float(m.mutual_information.max()) == pytest.approx(0.0, abs=tolerance)
    s = sequence_measures(token_log_probs(lp[0], torch.tensor([0, 1, 2, 3])), m)
    assert s["mc_log_prob_var"] == pytest.approx(0.0, abs=tolerance)
    assert s["mc_log_prob_mean"] == pytest.approx(s["sequence_log_prob"])


def test_float32_reduction_matches_the_float64_definition() -> None:
    # MI from E_t KL(p_t || p_mean) in float32 must match H[p_mean] - E_t H[p_t] computed in float64.
    lp64 = _random_log_probs(10, 12, 8000, 5, sharpness=4.0).to(torch.float64)
    targets = torch.randint(0, 8000, (12,), generator=torch.Generator().manual_seed(1))
    m = token_measures(lp64.float(), targets)
    p = lp64.exp()
    total = -(p.mean(0) * p.mean(0).log()).sum(-1)
    aleatoric = -(p * lp64).sum(-1).mean(0)
    assert m.mutual_information.dtype == torch.float64
    assert torch.allclose(m.expected_entropy, aleatoric, atol=1e-4)
    assert torch.allclose(m.predictive_entropy, total, atol=1e-4)
    assert torch.allclose(m.mutual_information, (total - aleatoric).clamp_min(0), atol=2e-6)


def test_underflowed_probabilities_do_not_make_nan() -> None:
    lp = torch.full((2, 1, 3), -math.inf, dtype=torch.float64)
    lp[:, 0, 0] = 0.0
    m = token_measures(lp, torch.tensor([0]))
    assert float(m.expected_entropy[0]) == 0.0 and float(m.mutual_information[0]) == 0.0


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        token_measures(torch.zeros(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError):
        token_measures(torch.zeros(2, 3, 4), torch.tensor([0, 1]))


def test_pairwise_chrf() -> None:
    assert mean_pairwise_chrf(["der König sah das Brot."] * 3) == pytest.approx(1.0)
    assert mean_pairwise_chrf(["one"]) == 1.0
    mixed = mean_pairwise_chrf(["der König sah das Brot.", "die Frau aß den Fisch."])
    assert 0.0 <= mixed < 0.6


def test_per_token_measures_divide_out_the_length() -> None:
    lp = _random_log_probs(4, 6, 9, 5)
    targets = torch.tensor([0, 3, 8, 1, 1, 7])
    s = sequence_measures(token_log_probs(lp[0], targets), token_measures(lp, targets))
    per_sample_means = torch.tensor([sum(float(lp[t, j, targets[j]]) for j in range(6)) / 6 for t in range(4)])
    assert s["sequence_log_prob_per_token"] == pytest.approx(s["sequence_log_prob"] / 6)
    assert s["mc_log_prob_mean_per_token"] == pytest.approx(float(per_sample_means.mean()))
    # the variance over the T samples of each sample's mean per-token log-probability, not D-Var / n
    assert s["mc_log_prob_var_per_token"] == pytest.approx(float(per_sample_means.var(unbiased=False)))
    assert s["mc_log_prob_var_per_token"] == pytest.approx(s["mc_log_prob_var"] / 36)
    # the same per-token log-probabilities twice over: the sums double, the per-token measures do not move
    doubled = torch.cat([lp, lp], dim=1)
    twice = torch.cat([targets, targets])
    d = sequence_measures(token_log_probs(doubled[0], twice), token_measures(doubled, twice))
    assert d["sequence_log_prob"] == pytest.approx(2 * s["sequence_log_prob"])
    assert d["mc_log_prob_var"] == pytest.approx(4 * s["mc_log_prob_var"])
    for name in ("sequence_log_prob_per_token", "mc_log_prob_mean_per_token", "mc_log_prob_var_per_token"):
        assert d[name] == pytest.approx(s[name])
