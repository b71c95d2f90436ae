"""Uncertainty from T Monte-Carlo samples of a categorical distribution (docs/architecture.md §4).

All functions take probabilities `probs` of shape [..., T, C] (T samples, C classes, each row summing to
1) and reduce over the sample axis (-2). Natural logs throughout, so entropies are in nats:
- predictive mean p̄ = mean_t p_t                       [..., C]
- predictive entropy H[p̄] (total)                       [...]
- expected entropy E_t H[p_t] (aleatoric)                [...]
- mutual information H[p̄] − E_t H[p_t] (epistemic)      [...], clamped ≥ 0 (rounding can make it −ε)
- variation ratio 1 − (count of the modal argmax) / T    [...]
- probability std: std over t of p_t at argmax p̄         [...] (population std, 0 for T = 1)
Bounds that hold (and are tested): 0 ≤ MI ≤ min(H[p̄], ln T); H[p̄] ≤ ln C.
"""

from __future__ import annotations

import torch

MEASURES = (
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "variation_ratio",
    "probability_std",
)


def entropy(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats along `dim`; 0·log 0 is taken as 0."""
    return -torch.special.xlogy(probs, probs).sum(dim=dim)


def predictive_mean(probs: torch.Tensor) -> torch.Tensor:
    """p̄ over the sample axis: [..., T, C] → [..., C]."""
    return probs.mean(dim=-2)


def classification_uncertainty(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every measure of the module docstring for `probs` [..., T, C]; each value has shape [...].

    Computed in float64 so that MI, a small difference of two similar entropies, is not rounding noise.
    """
    if probs.dim() < 2:
        raise ValueError(f"probs must be [..., T, C], got shape {tuple(probs.shape)}")
    p = probs.to(torch.float64)
    mean = p.mean(dim=-2)
    total = entropy(mean)
    aleatoric = entropy(p).mean(dim=-1)
    mutual = (total - aleatoric).clamp_min(0.0)
    n_samples = p.shape[-2]
    top = mean.argmax(dim=-1)
    votes = torch.nn.functional.one_hot(p.argmax(dim=-1), p.shape[-1]).sum(dim=-2)
    variation = 1.0 - votes.max(dim=-1).values.to(torch.float64) / n_samples
    at_top = torch.gather(p, -1, top[..., None, None].expand(*p.shape[:-1], 1)).squeeze(-1)
    std = at_top.std(dim=-1, unbiased=False)
    return {
        "predictive_entropy": total,
        "expected_entropy": aleatoric,
        "mutual_information": mutual,
        "variation_ratio": variation,
        "probability_std": std,
    }


def calibrated_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax of each sample's logits divided by τ (temperature scaling before the softmax)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.softmax(logits.float() / temperature, dim=-1)
