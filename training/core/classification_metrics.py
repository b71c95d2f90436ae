"""Evaluation of a classifier's (MC) logits: accuracy, calibration and uncertainty quality in one dict.

Contract of `classification_metrics(logits [N, T, C], labels [N], temperature, target_risk, confidence_map)`:
probabilities are softmax(logits_t / τ) per sample, averaged over T (docs/architecture.md §4), then passed
through the confidence map when one is given (models/core/calibration.ConfidenceMap; it keeps the predicted
label). Returns {n, mc_samples, temperature, confidence_map, accuracy, nll, brier, ece, auroc: {measure: v},
aurc: {measure: v}, prr: {measure: v}, coverage_at_risk: {measure: {coverage, threshold, achieved_risk}},
best_measure, best_auroc}. accuracy, NLL, Brier and ECE are of the served (mapped) probabilities; the
uncertainty measures are computed from the τ-scaled samples, as the service computes them. Measures are
those of models.core.uncertainty plus `one_minus_confidence` (1 − max p̄, the MSP); with T = 1 only
`predictive_entropy` and `one_minus_confidence` are reported (the others are identically 0).
AUROC is for detecting misclassifications (higher score = more likely wrong); AURC, PRR (scoring.prr, 0/1
losses) and coverage use the same scores (scoring.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch

import training.core.scoring as metrics
from models.core.calibration import ConfidenceMap
from models.core.uncertainty import MEASURES, calibrated_probs, classification_uncertainty

ALL_MEASURES = (*MEASURES, "one_minus_confidence")
DETERMINISTIC_MEASURES = ("predictive_entropy", "one_minus_confidence")


def uncertainty_scores(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every measure for `probs` [N, T, C] (float64 [N] each); see module docstring for T = 1."""
    scores = classification_uncertainty(probs)
    scores["one_minus_confidence"] = 1.0 - probs.double().mean(dim=1).max(dim=1).values
    keep = ALL_MEASURES if probs.shape[1] > 1 else DETERMINISTIC_MEASURES
    return {name: scores[name] for name in keep}


def mean_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Predictive mean [N, C] of temperature-scaled per-sample softmaxes of `logits` [N, T, C]."""
    return calibrated_probs(logits, temperature).double().mean(dim=1)


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, target_risk: float = 0.05,
    confidence_map: ConfidenceMap | None = None,
) -> dict[str, Any]:
    """See module docstring. Raises ValueError on shape mismatch."""
    if logits.dim() != 3 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must be [N, T, C] matching labels [N]; got {tuple(logits.shape)}, "
                         f"{tuple(labels.shape)}")
    probs = calibrated_probs(logits, temperature)
    scaled = probs.double().mean(dim=1)
    mean = scaled if confidence_map is None else confidence_map.apply(scaled)
    errors = scaled.argmax(dim=1) != labels  # the map keeps the label
    scores = uncertainty_scores(probs)
    auroc = {name: metrics.misclassification_auroc(s, errors) for name, s in scores.items()}
    finite = {k: v for k, v in auroc.items() if not math.isnan(v)}
    best = max(finite, key=finite.__getitem__) if finite else None
    return {
        "n": int(labels.shape[0]),
        "mc_samples": int(logits.shape[1]),
        "temperature": float(temperature),
        "confidence_map": confidence_map.kind if confidence_map is not None else None,
        "accuracy": metrics.accuracy(mean, labels),
        "nll": metrics.nll(mean, labels),
        "brier": metrics.brier(mean, labels),
        "ece": metrics.ece(mean, labels),
        "auroc": auroc,
        "aurc": {name: metrics.aurc(s, errors) for name, s in scores.items()},
        "prr": {name: metrics.prr(s, errors) for name, s in scores.items()},
        "coverage_at_risk": {name: metrics.coverage_at_risk(s, errors, target_risk) for name, s in scores.items()},
        "target_risk": target_risk,
        "best_measure": best,
        "best_auroc": finite[best] if best else math.nan,
    }


def abstain_outcome(logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                    rule: dict[str, Any]) -> dict[str, float]:
    """How an abstain rule chosen on validation does on other data: coverage and selective risk."""
    probs = calibrated_probs(logits, temperature)
    errors = probs.double().mean(dim=1).argmax(dim=1) != labels
    scores = uncertainty_scores(probs)[rule["measure"]]
    kept = scores <= rule["threshold"]
    n_kept = int(kept.sum())
    return {
        "coverage": n_kept / max(1, labels.shape[0]),
        "selective_risk": float(errors[kept].double().mean()) if n_kept else math.nan,
        "risk_without_abstaining": float(errors.double().mean()),
    }
