"""Statistics of uncertainty reports shared by the evaluation jobs: rank correlation and OOD AUROC tables.

Orientation: each measure has a sign, +1 when a higher value means "more confident" (it should rise with
quality), −1 when higher means "less sure". Tables report raw correlations with the expected sign next to
them, and AUROCs of the measure oriented so that higher = less sure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N (float64) with ties given their average rank (as scipy.stats.rankdata)."""
    x = x.double().flatten()
    values, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average = ends - (counts.double() - 1) / 2  # mean of the ranks end−count+1 .. end
    return average[inverse]


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two equal-length vectors; NaN when either is constant or N < 2."""
    x, y = x.double().flatten(), y.double().flatten()
    if x.numel() != y.numel():
        raise ValueError(f"lengths differ: {x.numel()} vs {y.numel()}")
    if x.numel() < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum()) / denom if denom > 0 else math.nan


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation (Pearson of average ranks); NaN when either is constant."""
    return pearson(rankdata(x), rankdata(y))


def ood_auroc(score: torch.Tensor, labels: torch.Tensor) -> float:
    """AUROC of `score` (higher = more likely OOD) for labels 1; NaN with a single class.

    Rank-based (Mann-Whitney U, ties count one half): torchmetrics' binary_auroc passes scores outside [0, 1]
    through a sigmoid, which saturates to 1.0 for every score above ~37 (a Mahalanobis distance, a sequence's
    summed log-probability in nats) and turns a perfect separation into 0.5."""
    positive = labels.bool().flatten()
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos in (0, positive.numel()):
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def correlation_table(measures: Mapping[str, torch.Tensor], quality: torch.Tensor,
                      orientation: Mapping[str, int]) -> dict[str, dict[str, float]]:
    """Pearson/Spearman of each measure [N] with a per-item quality [N], and the expected sign."""
    return {name: {"pearson": pearson(v, quality), "spearman": spearman(v, quality), "expected_sign": orientation[name]}
            for name, v in measures.items()}


def ood_table(measures: Mapping[str, torch.Tensor], labels: torch.Tensor, kinds: Sequence[str],
              orientation: Mapping[str, int]) -> dict[str, dict[str, float]]:
    """AUROC per measure (oriented: higher = less sure) overall and for "in_domain" vs each probe kind."""
    table: dict[str, dict[str, float]] = {}
    for name, values in measures.items():
        score = -orientation[name] * values
        row = {"all": ood_auroc(score, labels)}
        for kind in sorted(set(kinds) - {"in_domain"}):
            keep = torch.tensor([k in ("in_domain", kind) for k in kinds])
            row[kind] = ood_auroc(score[keep], labels[keep])
        table[name] = row
    return table
