"""Every choice the sentiment job makes after training, made on validation parts (never on test).

`choose_on_validation(model, pad_id, selection, selection_modes, calibration, settings)` → Choices, in order:
1. last-k, on the `selection_modes` subset of the selection part: every MC mode's logits; the smallest
   candidate k whose best misclassification AUROC (before temperature) is within `tolerance` of full MC's,
   full MC (k = L) when none is (`choose_last_k`). A cost/quality choice of the serving mode.
2. calibration, on the calibration part: logits at the serving mode (T, chosen k) and deterministic logits;
   for each, τ and the confidence map chosen by cross-validation (training.core.confidence_maps).
3. the abstain rule, on the whole selection part at the serving mode + τ: the measure and threshold with the
   largest coverage at the target selective risk (training.core.calibration_fit.select_abstain_rule).
Each choice records the split, the part and how many reviews it used (`Choices.record`). The parts are
disjoint by construction (training.sentiment.data.plan_subsets), so no choice is scored on data it saw.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.core.uncertainty import calibrated_probs
from models.sentiment.mc import num_layers
from training.core.calibration_fit import mc_nll, select_abstain_rule
from training.core.classification_metrics import classification_metrics, uncertainty_scores
from training.core.confidence_maps import CalibrationChoice, choose_calibration
from training.sentiment.modes import DETERMINISTIC, Encoded, EvalSettings, MCMode, collect_logits, modes_for

log = logging.getLogger(__name__)


@dataclass
class Choices:
    """What was chosen on validation, and on which data (see module docstring)."""

    last_k: int
    serving: MCMode
    last_k_evidence: dict[str, Any]
    mc: CalibrationChoice
    deterministic: CalibrationChoice
    abstain: dict[str, Any]
    record: dict[str, dict[str, Any]]
    validation_nll: dict[str, float]
    calibration_seconds: float


def _used(part: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"split": "validation", "part": part, "n": n, **extra}


def choose_last_k(results: dict[str, dict[str, Any]], modes: Sequence[MCMode], layers: int,
                  tolerance: float) -> tuple[int, dict[str, Any]]:
    """The smallest last-k mode whose best AUROC is ≥ full MC's − tolerance (see module docstring)."""
    reference = results["mc_full"]["best_auroc"]
    by_mode = {m.name: results[m.name]["best_auroc"] for m in modes if m.mc_samples and m.name in results}
    chosen = layers
    for mode in sorted((m for m in modes if m.last_k is not None), key=lambda m: m.last_k or 0):
        if results[mode.name]["best_auroc"] >= reference - tolerance:
            chosen = int(mode.last_k or layers)
            break
    evidence = {
        "rule": f"smallest k whose best misclassification AUROC (validation selection part, before temperature) "
        f"is within {tolerance} of full MC; full MC (k = {layers}) otherwise",
        "best_auroc_by_mode": by_mode,
        "chosen": chosen,
    }
    return chosen, evidence


def _calibrate(logits: torch.Tensor, labels: torch.Tensor, s: EvalSettings) -> CalibrationChoice:
    return choose_calibration(logits, labels, s.map_kinds, s.folds, s.seed, s.criterion, s.bins)


def choose_on_validation(model: nn.Module, pad_id: int, selection: Encoded, selection_modes: Sequence[int],
                         calibration: Encoded, s: EvalSettings) -> Choices:
    """Steps 1–3 of the module docstring."""
    layers = num_layers(model)
    modes = [m for m in modes_for(layers, s.mc_samples, s.last_k_candidates) if m.mc_samples]
    compare = selection.subset(selection_modes)
    raw = {}
    for mode in modes:
        logits, _ = collect_logits(model, compare, pad_id, mode, s, "validation/selection")
        raw[mode.name] = classification_metrics(logits, compare.labels, 1.0, s.target_risk)
    k, evidence = choose_last_k(raw, modes, layers, s.tolerance)
    evidence["n"] = len(compare)
    serving = next((m for m in modes if m.last_k == k), MCMode("mc_full", s.mc_samples, None))
    log.info("chose last-%d on %d validation reviews (best AUROC by mode %s)", k, len(compare),
             {name: round(v, 4) for name, v in evidence["best_auroc_by_mode"].items()})

    cal_mc, seconds = collect_logits(model, calibration, pad_id, serving, s, "validation/calibration")
    cal_det, _ = collect_logits(model, calibration, pad_id, DETERMINISTIC, s, "validation/calibration")
    mc_choice, det_choice = _calibrate(cal_mc, calibration.labels, s), _calibrate(cal_det, calibration.labels, s)
    for name, choice in ((serving.name, mc_choice), ("deterministic", det_choice)):
        log.info("calibration of %s on %d validation reviews: τ = %.3f, then %s (out-of-fold %s: %s)", name,
                 len(calibration), choice.temperature, choice.kind, s.criterion,
                 {kind: round(v[s.criterion], 4) for kind, v in choice.cross_validation.items()})

    sel_mc, _ = collect_logits(model, selection, pad_id, serving, s, "validation/selection")
    tau = mc_choice.temperature
    probs = calibrated_probs(sel_mc, tau)
    correct = probs.double().mean(dim=1).argmax(dim=1) == selection.labels
    rule = select_abstain_rule(uncertainty_scores(probs), correct, s.target_risk)
    log.info("abstain rule on %d validation reviews: %s > %.4g (coverage %.3f at risk <= %g)", len(selection),
             rule["measure"], rule["threshold"], rule["coverage"], s.target_risk)
    record = {
        "mc_last_k": _used("selection_modes", len(compare), nested_in="selection"),
        "temperature_and_confidence_map": _used("calibration", len(calibration), cross_validation_folds=s.folds,
                                                criterion=s.criterion),
        "abstain_rule": _used("selection", len(selection)),
    }
    nll = {"before": mc_nll(cal_mc, calibration.labels, 1.0), "after": mc_nll(cal_mc, calibration.labels, tau)}
    return Choices(k, serving, evidence, mc_choice, det_choice, dict(rule), record, nll, seconds)
