"""The distance arithmetic of the out-of-distribution detectors (models/core/ood.py says what each method is and
why): pooling a hidden state, a method's distance to fitted statistics, the length term and its slope, fitting
the statistics, the flag threshold (pooled or per group, and the rate that holds on a group left out). Pure
functions of tensors; the detector, its files and the hybrid live in models/core/ood.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

FEATURE_METHODS = ("knn_cosine", "mahalanobis")
POOLINGS = ("mean", "mean_skip_first")


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """L2-normalised mean of `hidden` [B, L, d] over the positions where `mask` [B, L] is true, float32 [B, d].
    "mean_skip_first" leaves out each row's first real position when the row has more than one."""
    keep = mask.bool()
    if pooling == "mean_skip_first":
        first = keep.int().argmax(dim=1)
        later = keep.clone()
        rows = torch.arange(keep.shape[0], device=keep.device)
        later[rows, first] = False
        keep = torch.where(later.any(dim=1, keepdim=True), later, keep)
    elif pooling != "mean":
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    weights = keep.to(torch.float32)[..., None]
    summed = (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
    return torch.nn.functional.normalize(summed, dim=-1)


def distances(method: str, tensors: Mapping[str, torch.Tensor], features: torch.Tensor, k: int) -> torch.Tensor:
    """Raw distance [B] (float32) of L2-normalised `features` [B, d] to the fitted statistics (module docstring)."""
    x = features.float()
    if method == "knn_cosine":
        bank = tensors["bank"]
        similarity = x @ bank.to(x.device).T  # [B, N]
        return 1.0 - similarity.topk(min(k, bank.shape[0]), dim=1).values[:, -1]
    if method == "mahalanobis":
        centred = x - tensors["mean"].to(x.device)
        return ((centred @ tensors["precision"].to(x.device)) * centred).sum(dim=1)
    raise ValueError(f"method must be one of {FEATURE_METHODS}, got {method!r}")


def length_adjusted(raw: torch.Tensor, lengths: Sequence[int] | None, coef: float) -> torch.Tensor:
    """`raw` distances [B] minus `coef` × ln(tokens) of each input (module docstring); `raw` when coef is 0.
    Raises ValueError when the lengths are missing or do not match."""
    if coef == 0.0:
        return raw
    if lengths is None or len(lengths) != raw.shape[0]:
        raise ValueError(f"{raw.shape[0]} distances but lengths {lengths!r}")
    logs = torch.tensor(lengths, dtype=torch.float32, device=raw.device).clamp_min(1.0).log()
    return raw - coef * logs


def fit_statistics(method: str, bank: torch.Tensor, shrinkage: float = 1e-3) -> dict[str, torch.Tensor]:
    """The tensors `distances` needs, from training features `bank` [N, d] (L2-normalised). Mahalanobis: mean and
    the inverse of the covariance + `shrinkage` × its mean variance × I (computed in float64; N < d stays
    invertible)."""
    if bank.ndim != 2 or bank.shape[0] < 2:
        raise ValueError(f"need a [N >= 2, d] feature bank, got {tuple(bank.shape)}")
    if method == "knn_cosine":
        return {"bank": bank.float().contiguous()}
    if method == "mahalanobis":
        x = bank.double()
        mean = x.mean(dim=0)
        covariance = torch.cov((x - mean).T)
        covariance += shrinkage * covariance.diagonal().mean() * torch.eye(x.shape[1], dtype=x.dtype)
        return {"mean": mean.float(), "precision": torch.linalg.inv(covariance).float().contiguous()}
    raise ValueError(f"method must be one of {FEATURE_METHODS}, got {method!r}")


def flag_threshold(in_domain: torch.Tensor, max_flag_rate: float) -> float:
    """The smallest observed distance t such that at most floor(`max_flag_rate` × n) of the in-domain distances
    are > t: flagging `distance > t` flags at most that share of these inputs, by construction."""
    values = torch.sort(in_domain.double().flatten()).values
    n = values.numel()
    if n == 0:
        raise ValueError("no in-domain distances to fit a threshold on")
    allowed = math.floor(max_flag_rate * n)
    return float(values[n - allowed - 1])


def group_threshold(values: torch.Tensor, groups: Sequence[str], max_flag_rate: float,
                    min_group: int) -> tuple[float, dict[str, float]]:
    """(threshold, each counted group's own threshold): the largest of `flag_threshold` over the groups of
    `min_group` texts or more and over all texts pooled, so no such group, nor the whole set, has more than
    `max_flag_rate` of its distances above it. One group: the pooled threshold."""
    if len(groups) != values.numel():
        raise ValueError(f"{values.numel()} distances but {len(groups)} groups")
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    own = {group: flag_threshold(values[index], max_flag_rate) for group, index in members.items()
           if len(index) >= min_group}
    return max([flag_threshold(values, max_flag_rate), *own.values()]), own


def transfer_rate(values: torch.Tensor, groups: Sequence[str], max_flag_rate: float, min_group: int,
                  rates: Sequence[float]) -> tuple[float, dict[str, float]]:
    """(rate, each left-out group's flag rate at it): the largest of `rates` (each <= `max_flag_rate`) whose
    `group_threshold`, fitted on all counted groups but one, flags at most `max_flag_rate` of the one left out, for
    every counted group (leave one group out: how a threshold fitted on these sources holds on a new one); the
    smallest rate when none does. Fewer than two groups of `min_group` texts or more: (`max_flag_rate`, {})."""
    if len(groups) != values.numel():
        raise ValueError(f"{values.numel()} distances but {len(groups)} groups")
    if not rates or any(not 0.0 <= r <= max_flag_rate for r in rates):
        raise ValueError(f"rates {list(rates)} must be non-empty and within [0, {max_flag_rate}]")
    counted = [g for g in dict.fromkeys(groups) if groups.count(g) >= min_group]
    if len(counted) < 2:
        return max_flag_rate, {}
    splits = {group: (torch.tensor([g == group for g in groups]), [g for g in groups if g != group])
              for group in counted}  # (the group's rows, the others' groups)
    held_out: dict[str, float] = {}
    for rate in sorted(rates, reverse=True):
        held_out = {}
        for group, (inside, others) in splits.items():
            threshold, _ = group_threshold(values[~inside], others, rate, min_group)
            held_out[group] = float((values[inside] > threshold).double().mean())
        if max(held_out.values()) <= max_flag_rate:
            return rate, held_out
    return rate, held_out


def length_slope(distance: torch.Tensor, lengths: torch.Tensor) -> float:
    """Least-squares slope of `distance` on ln(`lengths`) (0 when every length is the same)."""
    x = lengths.double().clamp_min(1.0).log()
    variance = float(((x - x.mean()) ** 2).sum())
    if not variance:
        return 0.0
    return float(((x - x.mean()) * (distance.double() - distance.double().mean())).sum()) / variance
