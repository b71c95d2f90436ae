"""Classification and selective-prediction metrics on probabilities (torch tensors in, floats out).

Inputs: `probs` [N, C] (rows sum to 1), `labels` [N] int, `scores` [N] an uncertainty (higher = less
sure), `errors` [N] bool (prediction wrong). Natural logs.
- accuracy, ECE (torchmetrics): top-label ECE with `n_bins` equal-width confidence bins, L1 norm
- nll: mean −ln p[label] (probabilities clamped at 1e-12 so one confident mistake is large, not inf)
- brier: mean over examples of Σ_c (p_c − onehot_c)² (multi-class form: twice the binary Brier when C = 2)
- misclassification_auroc: AUROC of `scores` for detecting errors; NaN when all or none are wrong
- selective prediction: keep the examples with the lowest scores. The risk-coverage curve is evaluated
  at every coverage k/N; examples with tied scores are kept or abstained together, so within a tie group
  the curve is the expectation over random orderings (linear interpolation of the errors). AURC is the
  mean of that risk over k = 1..N (Geifman et al. 2019), so it does not depend on how ties are sorted.
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.classification import binary_auroc, multiclass_accuracy, multiclass_calibration_error

ECE_BINS = 15


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float(multiclass_accuracy(probs, labels, num_classes=probs.shape[-1], average="micro"))


def nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    picked = probs.double().gather(1, labels.long()[:, None]).squeeze(1)
    return float(-picked.clamp_min(1e-12).log().mean())


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    onehot = torch.nn.functional.one_hot(labels.long(), probs.shape[-1]).double()
    return float(((probs.double() - onehot) ** 2).sum(dim=1).mean())


def ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    return float(
        multiclass_calibration_error(probs.float(), labels, num_classes=probs.shape[-1], n_bins=n_bins, norm="l1")
    )


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per equal-width confidence bin [lo, hi) (the last bin includes 1): mean confidence, accuracy and
    count; empty bins have NaN means. ECE = Σ count/N · |accuracy − confidence|."""
    confidence, predicted = probs.double().max(dim=1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    index = (torch.bucketize(confidence, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).double()
    conf_sum = torch.bincount(index, weights=confidence, minlength=n_bins)
    acc_sum = torch.bincount(index, weights=correct, minlength=n_bins)
    safe = count.clamp_min(1)
    nan = torch.full_like(count, math.nan)
    return {
        "lower": edges[:-1].tolist(),
        "upper": edges[1:].tolist(),
        "confidence": torch.where(count > 0, conf_sum / safe, nan).tolist(),
        "accuracy": torch.where(count > 0, acc_sum / safe, nan).tolist(),
        "count": count.tolist(),
    }


def misclassification_auroc(scores: torch.Tensor, errors: torch.Tensor) -> float:
    n_err = int(errors.sum())
    if n_err in (0, errors.numel()):
        return math.nan  # undefined with a single class
    return float(binary_auroc(scores.double(), errors.long()))


def _sorted_groups(scores: torch.Tensor, errors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted scores, and for each position k (1-based) the expected cumulative errors among the k
    lowest-score examples under random order within ties; also the group-end mask."""
    order = torch.argsort(scores.double(), stable=True)
    s = scores.double()[order]
    e = errors.double()[order]
    n = s.numel()
    end = torch.ones(n, dtype=torch.bool)
    end[:-1] = s[1:] != s[:-1]  # position i closes a tie group
    group = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), end[:-1].long()]), 0)
    n_groups = int(group[-1]) + 1
    g_count = torch.bincount(group, minlength=n_groups).double()
    g_err = torch.bincount(group, weights=e, minlength=n_groups)
    before = torch.cumsum(g_err, 0) - g_err  # errors in earlier groups
    start = torch.cumsum(g_count, 0) - g_count  # examples in earlier groups
    position = torch.arange(1, n + 1, dtype=torch.float64)
    expected = before[group] + (position - start[group]) * (g_err / g_count)[group]
    return s, expected, end


def risk_coverage_curve(scores: torch.Tensor, errors: torch.Tensor) -> dict[str, list[float]]:
    """Coverage, selective risk and the score threshold at each tie-group boundary, coverage ascending.
    Keeping the examples with score ≤ threshold[i] gives coverage[i] and risk[i]."""
    s, expected, end = _sorted_groups(scores, errors)
    k = torch.arange(1, s.numel() + 1, dtype=torch.float64)
    return {
        "coverage": (k[end] / s.numel()).tolist(),
        "risk": (expected[end] / k[end]).tolist(),
        "threshold": s[end].tolist(),
    }


def aurc(scores: torch.Tensor, errors: torch.Tensor) -> float:
    s, expected, _ = _sorted_groups(scores, errors)
    k = torch.arange(1, s.numel() + 1, dtype=torch.float64)
    return float((expected / k).mean())


def prr(scores: torch.Tensor, losses: torch.Tensor) -> float:
    """Prediction rejection ratio (Malinin et al. 2017; the headline metric of LM-Polygraph): how much of the
    gap between random rejection and the oracle (rejecting the highest losses first) the uncertainty `scores`
    close, from the areas under their risk-coverage curves: (AURC_random − AURC_scores) / (AURC_random −
    AURC_oracle). 1 = oracle, 0 = random, < 0 worse than random; NaN when every loss is equal. `losses` are any
    per-item losses (0/1 errors, 1 − chrF, ...), higher = worse; `scores` higher = less certain."""
    losses = losses.double()
    random = float(losses.mean())
    oracle = aurc(losses, losses)
    if random - oracle <= 1e-12:
        return math.nan
    return (random - aurc(scores, losses)) / (random - oracle)


def coverage_at_risk(scores: torch.Tensor, errors: torch.Tensor, target_risk: float) -> dict[str, float]:
    """The largest coverage whose selective risk is ≤ `target_risk` (abstain when score > threshold).

    Returns {coverage, threshold, achieved_risk}; coverage 0 (threshold just below the lowest score,
    achieved_risk NaN) when even the most certain group is too risky.
    """
    curve = risk_coverage_curve(scores, errors)
    best = None
    for coverage, risk, threshold in zip(curve["coverage"], curve["risk"], curve["threshold"], strict=True):
        if risk <= target_risk:
            best = {"coverage": coverage, "threshold": threshold, "achieved_risk": risk}
    if best is None:
        lowest = curve["threshold"][0]
        # Clearly below (not one ulp below: float32 scores would round back up onto it).
        return {"coverage": 0.0, "threshold": lowest - 1e-6 * max(1.0, abs(lowest)), "achieved_risk": math.nan}
    return best


def downsample_curve(curve: dict[str, list[float]], points: int = 50) -> dict[str, list[float]]:
    """At most `points` entries of a curve (evenly spaced, last kept) for compact reports."""
    n = len(curve["coverage"])
    if n <= points:
        return curve
    picks = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
    return {key: [values[i] for i in picks] for key, values in curve.items()}
