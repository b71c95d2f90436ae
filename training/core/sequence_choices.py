"""The choices a sequence task's job makes on validation, and the held-out report of what they give
(docs/architecture.md §4). Shared by translation and generation; the task supplies the items and losses.

`fit_on_validation(predictor, prompts, outputs, references, losses, rule_losses, s)`:
- `predictor`: the in-memory serving predictor at τ = 1 without a rule (training.core.predicting);
- `prompts` [N]: input ids (sources, prompts); `outputs` [N]: the ids its serving decode gave for them;
- `references` [N]: reference output ids (a translation, the true continuation), teacher-forced for τ;
- `losses` [N]: a per-item quality loss (higher = worse) for PRR; `rule_losses` [N]: the loss the abstain
  target is stated in (0/1 "bad output", or a rate);
runs, on the same validation items and each choice before what depends on it:
1. last-k: each candidate k scores `outputs` under T masks; the serving k is `s.last_k` when fixed, else
   the smallest k whose best PRR (any measure) is within `s.tolerance` of the best candidate's;
2. τ: `references` scored under T masks at that k, NLL on the τ grid (sequence_quality.TemperatureGrid);
3. the abstain rule: `outputs` re-scored at (k, τ), then `select_rule(measures, rule_losses, s.target_risk)`,
   turned off (threshold None) by `usable_rule` when it keeps less than `s.min_coverage` of validation.
Returns `Choices(last_k, calibration, report)`; `calibration` is the manifest section models.core.calibration
reads ({"temperature", "abstain": {"measure", "threshold", "target_risk", ...}}) plus what it was fitted on.

`held_out_report(predictions, losses, bad)`: PRR and risk-coverage per measure of served predictions, and
what their own `abstain` flags did. `reference_calibration(predictor, prompts, references, s)`: NLL and
token-level ECE of the references at τ = 1 and at the predictor's τ (how much temperature scaling helped).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from training.core.predicting import rebuilt, score_all
from training.core.sequence_quality import (
    TemperatureGrid,
    curves,
    measure_table,
    outcome,
    prr_table,
    select_rule,
    usable_rule,
)

log = logging.getLogger(__name__)
Ids = Sequence[Sequence[int]]


@dataclass(frozen=True)
class ChoiceSettings:
    """T, the last-k candidates (each ≤ the stochastic layers; None = choose), tolerance, target, batching."""

    mc_samples: int
    last_k: int | None
    candidates: tuple[int, ...]
    tolerance: float
    target_risk: float
    batch_size: int
    seed: int
    min_coverage: float = 0.5  # below this the uncertainty rule is off (sequence_quality.usable_rule)


@dataclass(frozen=True)
class Choices:
    last_k: int
    calibration: dict[str, Any]
    report: dict[str, Any]


def _best(values: dict[str, float]) -> float:
    finite = [v for v in values.values() if not math.isnan(v)]
    return max(finite) if finite else -math.inf


def scored_measures(predictor: Any, prompts: Ids, outputs: Ids, s: ChoiceSettings,
                    phase: str) -> dict[str, torch.Tensor]:
    """The serving measures of fixed outputs under T masks, per measure [N]."""
    uncertainties = score_all(predictor, prompts, outputs, s.mc_samples, s.seed, s.batch_size, phase,
                              lambda _, scored: scored.uncertainty)
    return measure_table(uncertainties)


def fit_on_validation(predictor: Any, prompts: Ids, outputs: Ids, references: Ids, losses: torch.Tensor,
                      rule_losses: torch.Tensor, s: ChoiceSettings) -> Choices:
    """See module docstring."""
    candidates = sorted(set(s.candidates) | ({s.last_k} if s.last_k else set()))
    table: dict[str, Any] = {}
    for k in candidates:
        started = time.perf_counter()
        prrs = prr_table(scored_measures(rebuilt(predictor, last_k=k), prompts, outputs, s,
                                         f"validation: last-{k} scoring"), losses)
        table[str(k)] = {"seconds": round(time.perf_counter() - started, 2), "prr": prrs, "best_prr": _best(prrs)}
    top = max(row["best_prr"] for row in table.values())
    chosen = s.last_k or min(k for k in candidates if table[str(k)]["best_prr"] >= top - s.tolerance)
    log.info("validation: last-k %d (best PRR per k %s)", chosen,
             {k: round(row["best_prr"], 3) for k, row in table.items()})
    serving = rebuilt(predictor, last_k=chosen)
    grid = TemperatureGrid()
    score_all(serving, prompts, references, s.mc_samples, s.seed + 1, s.batch_size, "validation: τ on references",
              lambda i, scored: grid.add(scored.mc_log_probs, references[i]))
    fit = grid.fit()
    tau = fit["temperature"]
    log.info("validation: τ %.3f (reference NLL %.4f → %.4f nats per token%s)", tau, fit["nll_at_1"], fit["nll"],
             ", at the grid's bound" if fit["at_bound"] else "")
    measures = scored_measures(rebuilt(serving, calibration={"temperature": tau}), prompts, outputs, s,
                               "validation: abstain rule")
    rule = usable_rule(select_rule(measures, rule_losses, s.target_risk), s.min_coverage)
    if rule["threshold"] is None:
        log.warning("validation: abstain rule off: %s", rule["off"])
    else:
        log.info("validation: abstain when %s is past %.4f (coverage %.3f at target %.3f)", rule["measure"],
                 rule["threshold"], rule["coverage"], s.target_risk)
    calibration = {
        "temperature": tau, "mc_samples": s.mc_samples, "mc_last_k": chosen,
        "fitted_on": f"{len(prompts)} validation items outside early stopping's part (last-k, τ, then the rule)",
        "temperature_fit": {k: v for k, v in fit.items() if k != "grid"},
        "abstain": {name: rule[name] for name in ("measure", "threshold", "target_risk", "coverage", "achieved_risk",
                                                  "prr", "off") if name in rule} | {"fitted_n": len(prompts)},
    }
    report = {"n": len(prompts), "last_k": {"candidates": table, "chosen": chosen, "fixed": s.last_k is not None,
                                            "tolerance": s.tolerance},
              "temperature": fit, "prr": prr_table(measures, losses), "abstain_candidates": rule["candidates"]}
    return Choices(chosen, calibration, report)


def held_out_report(predictions: Sequence[Any], losses: torch.Tensor,
                    bad: torch.Tensor | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """({"prr", "curves", "abstain"}, the measures) of served predictions (see module docstring)."""
    measures = measure_table([p.uncertainty for p in predictions])
    abstain = torch.tensor([bool(p.abstain) for p in predictions])
    report = {"prr": prr_table(measures, losses), "curves": curves(measures, losses),
              "abstain": outcome(abstain, losses, bad)}
    return report, measures


def reference_calibration(predictor: Any, prompts: Ids, references: Ids, s: ChoiceSettings,
                          phase: str) -> dict[str, Any]:
    """{"tokens", "temperature", "nll": {"tau_1", "tau_fitted"}, "ece": {...}} of the references."""
    tau = float(predictor.calibration.temperature)
    grid = TemperatureGrid(taus=(1.0, tau), track=(1.0, tau))
    score_all(rebuilt(predictor, calibration={}), prompts, references, s.mc_samples, s.seed + 2, s.batch_size,
              phase, lambda i, scored: grid.add(scored.mc_log_probs, references[i]))
    nll = grid.nll()
    return {"tokens": grid.tokens, "temperature": tau, "nll": {"tau_1": nll[0], "tau_fitted": nll[1]},
            "ece": {"tau_1": grid.ece(1.0), "tau_fitted": grid.ece(tau)}}
