"""After training: every choice on validation (training.sentiment.selection), then the test report, read once.

`evaluate_and_calibrate(model, pad_id, sets, settings)` → EvalResult. The choices (last-k, τ and confidence
map, abstain rule) are fixed before any test review is run; nothing below fits or chooses anything. The test
report, in order:
1. the headline set (quick: the whole 5,000-review test split): deterministic and serving-mode logits. When
   the serving mode is full MC (too costly for thousands of reviews on a CPU), it runs on the `test_modes`
   subset only and the MC headline is scored there.
2. the `test_modes` subset, nested in the headline set: every other MC mode (full MC, the other last-k);
   deterministic and serving rows are the headline's. Each mode before and after temperature (MC modes with
   the τ fitted at the serving mode), deterministic and serving also after the confidence map; wall time,
   reviews/s and cost per review relative to the deterministic pass.
3. the headline: serving mode + τ + map (accuracy, ECE with 15 bins, NLL, Brier), with the same before the
   map and before τ for both the serving mode and the deterministic pass (the map keeps every label, so
   accuracy does not move); the abstain rule's coverage and selective risk.
4. uncertainty: AUROC, AURC and PRR of every measure — deterministic MSP (`one_minus_confidence`) and entropy,
   and every MC measure — each against its own mode's errors, and their risk-coverage curves.
Binned ECE has a sampling floor even for a calibrated model (about 0.02 at N = 1,000, 0.009 at 5,000 with
~89 % accuracy, 15 bins), which is why the headline is scored on the largest set the cheap modes afford.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.core.uncertainty import calibrated_probs
from models.sentiment.mc import num_layers
from training.core.classification_metrics import abstain_outcome, classification_metrics, mean_probs, uncertainty_scores
from training.core.confidence_maps import CalibrationChoice, calibrate
from training.core.scoring import downsample_curve, risk_coverage_curve
from training.sentiment.modes import DETERMINISTIC, Encoded, EvalSettings, collect_logits, modes_for, timing
from training.sentiment.selection import Choices, choose_on_validation

STAGES = ("before_temperature", "after_temperature", "after_map")


@dataclass(frozen=True)
class EvalSets:
    """The validation parts the choices use and the test sets the report uses (training.sentiment.data)."""

    selection: Encoded
    selection_modes: Sequence[int]
    calibration: Encoded
    headline: Encoded
    test_modes: Sequence[int]


@dataclass
class EvalResult:
    """Everything the report and manifest need (figures get the raw probabilities)."""

    metrics: dict[str, Any]
    calibration: dict[str, Any]
    mc_last_k: int
    evidence: dict[str, Any]
    choices: dict[str, dict[str, Any]]
    figure_probs: dict[str, torch.Tensor]
    figure_labels: torch.Tensor
    risk_coverage: dict[str, dict[str, list[float]]]


def staged_metrics(logits: torch.Tensor, labels: torch.Tensor, choice: CalibrationChoice,
                   target_risk: float) -> dict[str, dict[str, Any]]:
    """classification_metrics before temperature, after τ, and after τ + the chosen map."""
    tau, confidence_map = choice.temperature, choice.confidence_map
    return {"before_temperature": classification_metrics(logits, labels, 1.0, target_risk),
            "after_temperature": classification_metrics(logits, labels, tau, target_risk),
            "after_map": classification_metrics(logits, labels, tau, target_risk, confidence_map)}


def _summary(staged: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {stage: {key: staged[stage][key] for key in ("accuracy", "ece", "nll", "brier")} for stage in STAGES}


def _scores_and_errors(logits: torch.Tensor, labels: torch.Tensor,
                       tau: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    probs = calibrated_probs(logits, tau)
    return uncertainty_scores(probs), probs.double().mean(dim=1).argmax(dim=1) != labels


def evaluate_and_calibrate(model: nn.Module, pad_id: int, sets: EvalSets, s: EvalSettings) -> EvalResult:
    """See module docstring."""
    model.eval()
    layers = num_layers(model)
    choices = choose_on_validation(model, pad_id, sets.selection, sets.selection_modes, sets.calibration, s)
    serving, k = choices.serving, choices.last_k
    head = sets.headline
    positions = torch.tensor(list(sets.test_modes), dtype=torch.long)
    modes_set = head.subset(sets.test_modes)

    # 1. headline set: the cheap modes
    det_logits, det_seconds = collect_logits(model, head, pad_id, DETERMINISTIC, s, "test/headline")
    cheap = k < layers
    mc_set = head if cheap else modes_set
    phase = "test/headline" if cheap else "test/modes"
    mc_logits, mc_seconds = collect_logits(model, mc_set, pad_id, serving, s, phase)
    timings = {DETERMINISTIC.name: timing(det_seconds, len(head), DETERMINISTIC, layers),
               serving.name: timing(mc_seconds, len(mc_set), serving, layers)}

    # 2. the nested subset: every mode
    modes = modes_for(layers, s.mc_samples, s.last_k_candidates)
    mode_logits = {DETERMINISTIC.name: det_logits[positions],
                   serving.name: mc_logits[positions] if cheap else mc_logits}
    for mode in modes:
        if mode.name not in mode_logits:
            mode_logits[mode.name], seconds = collect_logits(model, modes_set, pad_id, mode, s, "test/modes")
            timings[mode.name] = timing(seconds, len(modes_set), mode, layers)
    per_review = {name: t["seconds"] / max(t["reviews"], 1) for name, t in timings.items()}
    modes_report = {}
    for mode in modes:
        choice = choices.deterministic if mode.mc_samples == 0 else choices.mc
        staged = staged_metrics(mode_logits[mode.name], modes_set.labels, choice, s.target_risk)
        if mode.mc_samples and mode != serving:
            del staged["after_map"]  # the map was fitted at the serving mode only
        modes_report[mode.name] = {
            "mc_samples": mode.mc_samples, "last_k": layers if mode.mc_samples and mode.last_k is None else mode.last_k,
            **timings[mode.name],
            "measured_cost_vs_deterministic": round(per_review[mode.name] / max(per_review["deterministic"], 1e-12), 3),
            **staged,
        }

    # 3. the headline, with the deterministic pass on the same reviews as the MC one
    det_same = det_logits if cheap else det_logits[positions]
    mc_staged = staged_metrics(mc_logits, mc_set.labels, choices.mc, s.target_risk)
    det_staged = staged_metrics(det_same, mc_set.labels, choices.deterministic, s.target_risk)
    served, scaled = mc_staged["after_map"], mc_staged["after_temperature"]
    best = served["best_measure"] or ""
    map_kind = choices.mc.kind
    suffix = "" if map_kind == "temperature" else f" + {map_kind}"
    headline = {
        "mode": f"{serving.name} (T={s.mc_samples}, k={k}) + temperature{suffix}",
        "test_n": len(mc_set), "split": "test",
        **{key: served[key] for key in ("accuracy", "ece", "nll", "brier", "best_auroc", "best_measure")},
        "aurc": served["aurc"].get(best, float("nan")), "prr": served["prr"].get(best, float("nan")),
        "deterministic_accuracy": det_staged["before_temperature"]["accuracy"],
        "mc_minus_deterministic_accuracy": served["accuracy"] - det_staged["before_temperature"]["accuracy"],
        "accuracy_change_from_map": served["accuracy"] - scaled["accuracy"],
        "calibration": {serving.name: _summary(mc_staged), "deterministic": _summary(det_staged),
                        "confidence_map": {serving.name: map_kind, "deterministic": choices.deterministic.kind}},
    }

    # 4. every measure's selective-prediction quality and curve
    det_scores, det_errors = _scores_and_errors(det_same, mc_set.labels, choices.deterministic.temperature)
    mc_scores, mc_errors = _scores_and_errors(mc_logits, mc_set.labels, choices.mc.temperature)
    uncertainty, curves = {}, {}
    for prefix, report, scores, errors in (("deterministic", det_staged["after_temperature"], det_scores, det_errors),
                                           (serving.name, scaled, mc_scores, mc_errors)):
        for name, values in scores.items():
            key = f"{prefix}/{name}"
            uncertainty[key] = {metric: report[metric][name] for metric in ("auroc", "aurc", "prr")}
            curves[key] = downsample_curve(risk_coverage_curve(values, errors))
    metrics = {
        "test_n": len(modes_set), "serving_mode": serving.name, "headline": headline, "modes": modes_report,
        "uncertainty": {"n": len(mc_set), "split": "test", "losses": "0/1 misclassification of each mode",
                        "measures": uncertainty},
        "mc_last_k": choices.last_k_evidence, "risk_coverage": {"n": len(mc_set), "curves": curves},
        "choices": choices.record,
    }
    calibration = _calibration_section(choices, s, abstain_outcome(mc_logits, mc_set.labels, choices.mc.temperature,
                                                                   choices.abstain))
    tau = choices.mc.temperature
    figure_probs = {
        "deterministic": mean_probs(det_same),
        f"MC T={s.mc_samples} k={k}": mean_probs(mc_logits),
        f"MC + temperature {tau:.2f}": mean_probs(mc_logits, tau),
    }
    if choices.mc.confidence_map is not None:
        figure_probs[f"MC + temperature + {map_kind}"] = calibrate(mc_logits, tau, choices.mc.confidence_map)
    return EvalResult(metrics, calibration, k, choices.last_k_evidence, choices.record, figure_probs, mc_set.labels,
                      curves)


def _calibration_section(choices: Choices, s: EvalSettings, outcome: dict[str, float]) -> dict[str, Any]:
    """The manifest's `calibration` (models/core/calibration.py reads τ, the maps and the rule)."""
    def section(choice: CalibrationChoice) -> dict[str, Any] | None:
        return choice.confidence_map.to_section() if choice.confidence_map is not None else None

    return {
        "temperature": choices.mc.temperature,
        "deterministic_temperature": choices.deterministic.temperature,
        "confidence_map": section(choices.mc),
        "deterministic_confidence_map": section(choices.deterministic),
        "map_choice": {choices.serving.name: choices.mc.record(), "deterministic": choices.deterministic.record()},
        "mc_samples": s.mc_samples,
        "mc_last_k": choices.last_k,
        "mc_sites": sorted(s.sites),
        "fitted_on": {**choices.record["temperature_and_confidence_map"],
                      "seconds": round(choices.calibration_seconds, 2)},
        "validation_nll": choices.validation_nll,
        "abstain": {**choices.abstain, "chosen_on": choices.record["abstain_rule"], "test": outcome},
    }
