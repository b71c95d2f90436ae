"""Richer calibration than one temperature: maps of the top-label confidence, chosen by cross-validation.

Temperature scaling has one parameter; when a model's over-confidence differs between confidence levels
(in-domain IMDB: every reliability bin from 0.5 to 0.9 over-confident after τ), a monotone map of the top-label
probability fixes what τ cannot. Every map here is applied after τ ("τ, then the map"), to the top-label
probability of the temperature-scaled predictive mean, and keeps the predicted label (models/core/calibration.
ConfidenceMap, which serving applies from the JSON knots written here; serving needs no scikit-learn).

- `fit_map(kind, confidence, correct, num_classes, bins)`: "isotonic" (scikit-learn's IsotonicRegression of
  correctness on confidence, knots = its thresholds, so serving's interpolation reproduces its `predict`) or
  "histogram" (equal-mass bins, each mapped to its accuracy: a step function). Both stay within
  [1/C, n/(n+1)]: below 1/C another label would lead, and a map value of exactly 1 would make one confident
  mistake at test time cost an unbounded log-loss.
- `choose_calibration(logits [N, T, C], labels, kinds, folds, seed, criterion)`: K-fold stratified
  cross-validation on the calibration part of validation. In each fold τ and every map are fitted on the other
  folds and applied to this one; the pooled out-of-fold probabilities give each kind's ECE (15 bins), NLL and
  Brier; the kind with the lowest `criterion` wins (ties: the earlier kind, so "temperature" before a richer
  map); then τ and the winner are refitted on all of the part. "temperature" means τ alone (no map).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sklearn.isotonic import IsotonicRegression

from models.core.calibration import ConfidenceMap
from models.core.uncertainty import calibrated_probs
from training.core import scoring
from training.core.calibration_fit import fit_temperature
from training.core.splits import stratified_split

MAP_KINDS = ("temperature", "isotonic", "histogram")
CRITERIA = ("ece", "nll", "brier")


def top_label(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-label probability [N] and whether the top label is right [N] (float64 0/1) of probs [N, C]."""
    confidence, predicted = probs.double().max(dim=-1)
    return confidence, (predicted == labels).double()


def _bounds(n: int, num_classes: int) -> tuple[float, float]:
    return 1.0 / num_classes, n / (n + 1.0)


def fit_isotonic(confidence: torch.Tensor, correct: torch.Tensor, num_classes: int) -> ConfidenceMap:
    """Isotonic regression of `correct` on `confidence` (module docstring)."""
    low, high = _bounds(confidence.numel(), num_classes)
    model = IsotonicRegression(y_min=low, y_max=high, increasing=True, out_of_bounds="clip")
    model.fit(confidence.double().numpy(), correct.double().numpy())
    return ConfidenceMap("isotonic", tuple(float(v) for v in model.X_thresholds_),
                         tuple(float(v) for v in model.y_thresholds_))


def fit_histogram(confidence: torch.Tensor, correct: torch.Tensor, num_classes: int, bins: int = 15) -> ConfidenceMap:
    """Equal-mass histogram binning (module docstring): a step at each inner bin edge, stored as repeated knots."""
    low, high = _bounds(confidence.numel(), num_classes)
    c = confidence.double()
    quantiles = torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1]
    edges = torch.unique(torch.quantile(c, quantiles))  # tied confidences can merge bins
    index = torch.bucketize(c, edges, right=True)  # bin b holds edges[b-1] <= c < edges[b]
    count = torch.bincount(index, minlength=edges.numel() + 1).double()
    hits = torch.bincount(index, weights=correct.double(), minlength=edges.numel() + 1)
    values = (hits / count.clamp_min(1)).clamp(low, high)
    values = torch.where(count > 0, values, torch.full_like(values, math.nan))
    # an empty bin (all its mass tied onto an edge) takes its left neighbour's value, or the right one's first
    filled = values.tolist()
    for i in range(len(filled)):
        if math.isnan(filled[i]):
            filled[i] = filled[i - 1] if i else next(v for v in filled if not math.isnan(v))
    x: list[float] = []
    y: list[float] = []
    for b, edge in enumerate(edges.tolist()):
        x += [edge, edge]
        y += [filled[b], filled[b + 1]]
    if not x:  # every confidence equal: one bin
        return ConfidenceMap("histogram", (float(c[0]),), (filled[0],))
    return ConfidenceMap("histogram", tuple(x), tuple(y))


def fit_map(kind: str, confidence: torch.Tensor, correct: torch.Tensor, num_classes: int,
            bins: int = 15) -> ConfidenceMap | None:
    """The map of `kind` fitted to (confidence, correct); None for "temperature" (no map)."""
    if kind == "temperature":
        return None
    if kind == "isotonic":
        return fit_isotonic(confidence, correct, num_classes)
    if kind == "histogram":
        return fit_histogram(confidence, correct, num_classes, bins)
    raise ValueError(f"unknown calibration map {kind!r}; choose from {MAP_KINDS}")


def fit_calibration(logits: torch.Tensor, labels: torch.Tensor, kind: str,
                    bins: int = 15) -> tuple[float, ConfidenceMap | None]:
    """τ fitted on `logits` [N, T, C] (training.core.calibration_fit), then the map of `kind` on the τ-scaled
    predictive mean."""
    tau = fit_temperature(logits, labels)
    mean = calibrated_probs(logits, tau).double().mean(dim=1)
    confidence, correct = top_label(mean, labels)
    return tau, fit_map(kind, confidence, correct, logits.shape[-1], bins)


def calibrate(logits: torch.Tensor, tau: float, confidence_map: ConfidenceMap | None) -> torch.Tensor:
    """Served probabilities [N, C] of `logits` [N, T, C]: τ-scaled predictive mean, then the map if any."""
    mean = calibrated_probs(logits, tau).double().mean(dim=1)
    return mean if confidence_map is None else confidence_map.apply(mean)


@dataclass(frozen=True)
class CalibrationChoice:
    """τ and the map refitted on the whole part, the chosen kind, and the cross-validation evidence."""

    kind: str
    temperature: float
    confidence_map: ConfidenceMap | None
    cross_validation: dict[str, dict[str, float]]
    folds: int
    criterion: str

    def record(self) -> dict[str, Any]:
        """JSON-ready evidence for the manifest (the map itself is written separately)."""
        return {"chosen": self.kind, "criterion": self.criterion, "folds": self.folds,
                "out_of_fold": self.cross_validation}


def _scores(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {"ece": scoring.ece(probs, labels), "nll": scoring.nll(probs, labels), "brier": scoring.brier(probs, labels)}


def choose_calibration(logits: torch.Tensor, labels: torch.Tensor, kinds: Sequence[str] = MAP_KINDS,
                       folds: int = 5, seed: int = 0, criterion: str = "ece", bins: int = 15) -> CalibrationChoice:
    """See module docstring. Raises ValueError for an unknown kind or criterion, or fewer than 2 items per fold."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if not kinds or any(k not in MAP_KINDS for k in kinds):
        raise ValueError(f"calibration maps must be among {MAP_KINDS}, got {tuple(kinds)}")
    n = int(labels.shape[0])
    if folds < 2 or n < 2 * folds:
        raise ValueError(f"{folds}-fold cross-validation needs folds >= 2 and >= {2 * folds} items, got {n}")
    sizes: dict[str, int | None] = {f"fold{i}": n // folds for i in range(folds - 1)}
    sizes[f"fold{folds - 1}"] = None
    out_of_fold = {kind: torch.empty(n, logits.shape[-1], dtype=torch.float64) for kind in kinds}
    for held in stratified_split(labels.tolist(), sizes, seed).values():
        held_index = torch.tensor(sorted(held))
        train_index = torch.ones(n, dtype=torch.bool)
        train_index[held_index] = False
        tau = fit_temperature(logits[train_index], labels[train_index])
        train_mean = calibrated_probs(logits[train_index], tau).double().mean(dim=1)
        confidence, correct = top_label(train_mean, labels[train_index])
        for kind in kinds:
            confidence_map = fit_map(kind, confidence, correct, logits.shape[-1], bins)
            out_of_fold[kind][held_index] = calibrate(logits[held_index], tau, confidence_map)
    evidence = {kind: _scores(probs, labels) for kind, probs in out_of_fold.items()}
    chosen = min(kinds, key=lambda kind: evidence[kind][criterion])  # min keeps the first of equals
    tau, confidence_map = fit_calibration(logits, labels, chosen, bins)
    return CalibrationChoice(chosen, tau, confidence_map, evidence, folds, criterion)
