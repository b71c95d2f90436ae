"""After training: MC-dropout evaluation, choice of the MC mode, and calibration of the sentiment model.

Order (so that nothing fitted on validation is tuned on test, and each model pass runs once):
1. test subset: logits of every mode — deterministic, full MC (T samples) and last-k MC for each
   candidate k < L — each timed (wall seconds, reviews/s). Modes run through models.sentiment.mc, the same
   fast path the service runs.
2. the default k: the smallest candidate whose best misclassification AUROC (uncalibrated) is within
   `tolerance` of full MC's; full MC (k = L) when none is. This is a cost/quality choice of the serving
   mode, measured on the test subset as the issue asks; it fits nothing that is then scored.
3. validation (calibration subset): logits at the serving mode (T, chosen k) → τ; deterministic logits →
   τ_det; the abstain rule (measure with the largest coverage at the target risk) on calibrated probs.
4. test metrics of every mode before and after temperature (MC modes use τ, deterministic τ_det).
5. the headline (serving mode + τ: accuracy, ECE, best AUROC; the abstain rule's test coverage/risk;
   figures): on an optional larger fixed test subset run with the deterministic and serving modes only.
   Binned ECE has a sampling floor of about 0.02 at N = 1000 even for a calibrated model (15 bins,
   ~88 % accuracy), so the cheap serving mode is scored on more reviews than full MC can afford.
   Skipped when the serving mode is full MC.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.core.device import autocast_context
from models.core.dropout import mix_seed
from models.sentiment.mc import mc_logits, num_layers
from training.core.batching import eval_batches
from training.core.calibration_fit import fit_temperature, mc_nll, select_abstain_rule
from training.core.classification_metrics import abstain_outcome, classification_metrics, mean_probs, uncertainty_scores
from training.core.scoring import downsample_curve, risk_coverage_curve


@dataclass(frozen=True)
class MCMode:
    """One way of running the model: T samples (0 = deterministic) with the top `last_k` layers
    stochastic (None = full MC)."""

    name: str
    mc_samples: int
    last_k: int | None

    def relative_cost(self, layers: int) -> float:
        """Forward cost relative to a deterministic pass, (L − k + k·T)/L (docs/architecture.md §4)."""
        if self.mc_samples == 0:
            return 1.0
        k = layers if self.last_k is None else min(self.last_k, layers)
        return (layers - k + k * self.mc_samples) / layers


@dataclass(frozen=True)
class EvalSettings:
    """What the evaluation needs from the job's config."""

    mc_samples: int
    last_k_candidates: Sequence[int]
    sites: frozenset[str]
    target_risk: float
    tolerance: float
    batch_rows: int
    seed: int
    device: torch.device
    dtype: str


@dataclass
class EvalResult:
    """Everything the report and manifest need (figures get the raw probabilities)."""

    metrics: dict[str, Any]
    calibration: dict[str, Any]
    mc_last_k: int
    evidence: dict[str, Any]
    figure_probs: dict[str, torch.Tensor]
    figure_labels: torch.Tensor
    risk_coverage: dict[str, dict[str, list[float]]]


def modes_for(layers: int, mc_samples: int, candidates: Sequence[int]) -> list[MCMode]:
    """Deterministic, full MC, and last-k MC for each candidate k < L (k ≥ L is full MC already)."""
    modes = [MCMode("deterministic", 0, None), MCMode("mc_full", mc_samples, None)]
    modes += [MCMode(f"mc_last_{k}", mc_samples, k) for k in sorted(set(candidates)) if 1 <= k < layers]
    return modes


def collect_logits(
    model: nn.Module, ids: Sequence[Sequence[int]], pad_id: int, mode: MCMode, s: EvalSettings
) -> tuple[torch.Tensor, float]:
    """Logits [N, max(T, 1), C] in input order and the wall seconds they took (tokenised input given)."""
    layers = num_layers(model)
    per_batch = max(1, int(s.batch_rows / mode.relative_cost(layers)))
    out: torch.Tensor | None = None
    started = time.perf_counter()
    with torch.inference_mode(), autocast_context(s.device, s.dtype):
        for batch_no, (index, input_ids, mask) in enumerate(eval_batches(ids, per_batch, pad_id)):
            seed = mix_seed(s.seed, batch_no)
            logits = mc_logits(model, input_ids.to(s.device), mask.to(s.device), mode.mc_samples, seed, mode.last_k,
                               s.sites)
            if out is None:
                out = torch.empty(len(ids), *logits.shape[1:], dtype=torch.float32)
            out[torch.tensor(index)] = logits.float().cpu()
    assert out is not None, "no inputs"
    return out, time.perf_counter() - started


def choose_last_k(results: dict[str, dict[str, Any]], modes: Sequence[MCMode], layers: int,
                  tolerance: float) -> tuple[int, dict[str, Any]]:
    """The smallest last-k mode whose best AUROC is ≥ full MC's − tolerance (see module docstring)."""
    reference = results["mc_full"]["best_auroc"]
    by_mode = {m.name: results[m.name]["best_auroc"] for m in modes if m.mc_samples}
    chosen = layers
    for mode in sorted((m for m in modes if m.last_k is not None), key=lambda m: m.last_k or 0):
        if results[mode.name]["best_auroc"] >= reference - tolerance:
            chosen = int(mode.last_k or layers)
            break
    evidence = {
        "rule": f"smallest k whose best misclassification AUROC (test subset, before temperature) is within "
        f"{tolerance} of full MC; full MC (k = {layers}) otherwise",
        "best_auroc_by_mode": by_mode,
        "chosen": chosen,
    }
    return chosen, evidence


def evaluate_and_calibrate(
    model: nn.Module,
    pad_id: int,
    validation: tuple[Sequence[Sequence[int]], torch.Tensor],
    test: tuple[Sequence[Sequence[int]], torch.Tensor],
    s: EvalSettings,
    headline_test: tuple[Sequence[Sequence[int]], torch.Tensor] | None = None,
) -> EvalResult:
    """Steps 1–5 of the module docstring; `validation`/`test`/`headline_test` are (token ids, labels [N])."""
    model.eval()
    layers = num_layers(model)
    modes = modes_for(layers, s.mc_samples, s.last_k_candidates)
    test_ids, test_labels = test
    test_logits, timings = {}, {}
    for mode in modes:
        test_logits[mode.name], seconds = collect_logits(model, test_ids, pad_id, mode, s)
        timings[mode.name] = _timing(seconds, len(test_ids), mode, layers)
    raw = {name: classification_metrics(logits, test_labels, 1.0, s.target_risk)
           for name, logits in test_logits.items()}
    k, evidence = choose_last_k(raw, modes, layers, s.tolerance)
    serving = next((m for m in modes if m.last_k == k), MCMode("mc_full", s.mc_samples, None))

    val_ids, val_labels = validation
    val_mc, val_mc_seconds = collect_logits(model, val_ids, pad_id, MCMode("serving", s.mc_samples, k), s)
    val_det, _ = collect_logits(model, val_ids, pad_id, MCMode("deterministic", 0, None), s)
    tau, tau_det = fit_temperature(val_mc, val_labels), fit_temperature(val_det, val_labels)
    correct = mean_probs(val_mc, tau).argmax(dim=1) == val_labels
    rule = select_abstain_rule(uncertainty_scores(torch.softmax(val_mc / tau, dim=-1)), correct, s.target_risk)

    modes_report = {}
    for mode in modes:
        modes_report[mode.name] = {
            "mc_samples": mode.mc_samples,
            "last_k": layers if mode.mc_samples and mode.last_k is None else mode.last_k,
            **timings[mode.name],
            "measured_cost_vs_deterministic": round(
                timings[mode.name]["seconds"] / max(timings[modes[0].name]["seconds"], 1e-9), 3
            ),
            "before_temperature": raw[mode.name],
            "after_temperature": classification_metrics(
                test_logits[mode.name], test_labels, tau_det if mode.mc_samples == 0 else tau, s.target_risk
            ),
        }

    # 5. the headline: deterministic and the serving mode on the larger set when there is one
    head_logits = {"deterministic": test_logits["deterministic"], serving.name: test_logits[serving.name]}
    head_labels, head_report = test_labels, None
    if headline_test is not None and k < layers:  # full MC on thousands of reviews would blow a CPU budget
        head_ids, head_labels = headline_test
        head_report = {}
        for mode in (modes[0], serving):
            head_logits[mode.name], seconds = collect_logits(model, head_ids, pad_id, mode, s)
            t = tau_det if mode.mc_samples == 0 else tau
            head_report[mode.name] = {
                **_timing(seconds, len(head_ids), mode, layers),
                "before_temperature": classification_metrics(head_logits[mode.name], head_labels, 1.0, s.target_risk),
                "after_temperature": classification_metrics(head_logits[mode.name], head_labels, t, s.target_risk),
            }
    served = classification_metrics(head_logits[serving.name], head_labels, tau, s.target_risk)
    det_accuracy = classification_metrics(head_logits["deterministic"], head_labels, 1.0, s.target_risk)["accuracy"]
    calibration = {
        "temperature": tau,
        "deterministic_temperature": tau_det,
        "mc_samples": s.mc_samples,
        "mc_last_k": k,
        "mc_sites": sorted(s.sites),
        "fitted_on": {"split": "validation", "n": len(val_ids), "seconds": round(val_mc_seconds, 2)},
        "validation_nll": {"before": mc_nll(val_mc, val_labels, 1.0), "after": mc_nll(val_mc, val_labels, tau)},
        "abstain": {**rule, "test": abstain_outcome(head_logits[serving.name], head_labels, tau, rule)},
    }
    metrics = {
        "test_n": len(test_ids),
        "serving_mode": serving.name,
        "headline": {
            "mode": f"{serving.name} (T={s.mc_samples}, k={k}) + temperature",
            "test_n": int(head_labels.shape[0]),
            "accuracy": served["accuracy"],
            "ece": served["ece"],
            "nll": served["nll"],
            "brier": served["brier"],
            "best_auroc": served["best_auroc"],
            "best_measure": served["best_measure"],
            "aurc": served["aurc"].get(served["best_measure"] or "", math.nan),
            "deterministic_accuracy": det_accuracy,
            "mc_minus_deterministic_accuracy": served["accuracy"] - det_accuracy,
        },
        "modes": modes_report,
        "headline_test": head_report,
        "mc_last_k": evidence,
    }
    scores = uncertainty_scores(torch.softmax(head_logits[serving.name] / tau, dim=-1))
    errors = mean_probs(head_logits[serving.name], tau).argmax(dim=1) != head_labels
    curves = {name: downsample_curve(risk_coverage_curve(sc, errors)) for name, sc in scores.items()}
    metrics["risk_coverage"] = {"mode": serving.name, "curves": curves}
    figure_probs = {
        "deterministic": mean_probs(head_logits["deterministic"]),
        f"MC T={s.mc_samples} k={k}": mean_probs(head_logits[serving.name]),
        f"MC + temperature {tau:.2f}": mean_probs(head_logits[serving.name], tau),
    }
    return EvalResult(metrics, calibration, k, evidence, figure_probs, head_labels, curves)


def _timing(seconds: float, n: int, mode: MCMode, layers: int) -> dict[str, float]:
    return {"seconds": round(seconds, 2), "reviews_per_second": round(n / seconds, 2),
            # (L − k + kT)/L: the full-layer arithmetic; the [CLS]-only top layer makes the real cost lower.
            "formula_relative_cost": round(mode.relative_cost(layers), 3)}
