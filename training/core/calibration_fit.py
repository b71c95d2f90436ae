"""Post-hoc calibration fitted on validation: temperature scaling of MC logits and the abstain rule.

- `fit_temperature(mc_logits [N, T, C], labels [N])` → τ ∈ [0.05, 20] minimising the NLL of the
  MC-averaged probabilities p̄ = mean_t softmax(logits_t / τ) (docs/architecture.md §4: τ divides each sample's logits
  before the softmax, so it must be fitted on the same T and MC mode the service runs). [N, C] or
  [N, 1, C] logits give ordinary (deterministic) temperature scaling.
- `choose_abstain_threshold(scores, correct, target_risk)` → the threshold on an uncertainty score with
  the largest validation coverage whose selective risk is ≤ target (abstain when score > threshold).
- `select_abstain_rule(measures, correct, target_risk)` applies that to several measures and keeps the
  one with the largest coverage (ties: higher misclassification AUROC).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from training.core.scoring import coverage_at_risk, misclassification_auroc

TEMPERATURE_BOUNDS = (0.05, 20.0)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def mc_nll(mc_logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """NLL (nats, mean over N) of mean_t softmax(logits_t / τ) at the true labels."""
    logits = mc_logits if mc_logits.dim() == 3 else mc_logits[:, None, :]
    log_probs = torch.log_softmax(logits.double() / temperature, dim=-1)  # [N, T, C]
    at_label = log_probs.gather(2, labels.long()[:, None, None].expand(-1, logits.shape[1], 1)).squeeze(2)
    if logits.shape[1] == 1:
        return float(-at_label.mean())
    log_mean = torch.logsumexp(at_label, dim=1) - math.log(logits.shape[1])  # log of the MC average
    return float(-log_mean.mean())


def fit_temperature(
    mc_logits: torch.Tensor, labels: torch.Tensor, bounds: tuple[float, float] = TEMPERATURE_BOUNDS, tol: float = 1e-4
) -> float:
    """τ minimising `mc_nll`: a log-spaced grid brackets the minimum, golden-section search refines it
    (on log τ; deterministic, no gradient). Raises ValueError on empty input or mismatched shapes."""
    if mc_logits.shape[0] == 0 or mc_logits.shape[0] != labels.shape[0]:
        raise ValueError(f"need matching non-empty logits {tuple(mc_logits.shape)} and labels {tuple(labels.shape)}")
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    grid = [lo + (hi - lo) * i / 30 for i in range(31)]  # steps of ×1.22 in τ
    values = [mc_nll(mc_logits, labels, math.exp(x)) for x in grid]
    best = min(range(len(grid)), key=values.__getitem__)
    a, b = grid[max(0, best - 1)], grid[min(len(grid) - 1, best + 1)]
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = mc_nll(mc_logits, labels, math.exp(c)), mc_nll(mc_logits, labels, math.exp(d))
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = mc_nll(mc_logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = mc_nll(mc_logits, labels, math.exp(d))
    x = (a + b) / 2
    # The grid point wins if the refinement did not improve on it (flat or edge minima).
    return math.exp(x) if mc_nll(mc_logits, labels, math.exp(x)) <= values[best] else math.exp(grid[best])


def choose_abstain_threshold(
    scores: torch.Tensor, correct: torch.Tensor, target_risk: float, measure: str = ""
) -> dict[str, float | str]:
    """{measure, threshold, target_risk, coverage, achieved_risk} for abstaining when score > threshold.

    Coverage is the largest at which the selective risk (error rate among kept examples) is ≤
    `target_risk` on these examples; tied scores are kept or rejected together. Coverage 0 when no
    threshold achieves the risk.
    """
    if not 0.0 < target_risk < 1.0:
        raise ValueError(f"target_risk must be in (0, 1), got {target_risk}")
    chosen = coverage_at_risk(scores, ~correct.bool(), target_risk)
    return {"measure": measure, "target_risk": target_risk, **chosen}


def select_abstain_rule(
    measures: Mapping[str, torch.Tensor], correct: torch.Tensor, target_risk: float
) -> dict[str, float | str]:
    """The `choose_abstain_threshold` result of the measure with the largest coverage (tie: AUROC)."""
    candidates = []
    for name, scores in measures.items():
        rule = choose_abstain_threshold(scores, correct, target_risk, measure=name)
        auroc = misclassification_auroc(scores, ~correct.bool())
        candidates.append((float(rule["coverage"]), -math.inf if math.isnan(auroc) else auroc, name, rule))
    if not candidates:
        raise ValueError("no uncertainty measures given")
    return max(candidates, key=lambda c: (c[0], c[1]))[3]
