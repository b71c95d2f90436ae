"""What the sequence tasks' evaluations (translation, generation) share: the measures a prediction carries,
temperature fitted on reference tokens, an abstain rule for a quality target, PRR and risk-coverage.

- `MEASURES`: the `SequenceUncertainty` fields a rule may use (all but `sampling_chrf`, which only the opt-in
  sampling mode computes, so a rule on it would never fire on a default request). `measure_table` → raw
  values [N]; `oriented(name, v)` flips the measures where LOW means uncertain (models.core.calibration's
  LOW_IS_UNCERTAIN, the serving rule's own list), so that higher = less sure everywhere below.
- `TemperatureGrid(taus, track)`: `add(mc_log_probs [T, n, V] at τ = 1, targets [n])` accumulates, for each τ
  of the grid, the NLL of the reference tokens under the MC mean p̄_τ = mean_t softmax(log p_t / τ) (τ divides
  every sample's logits, as serving does; log-probabilities differ from logits by a per-row constant, which τ
  scales away). `fit()` → the grid minimum refined by a parabola in log τ; `ece(τ)` → token-level top-label
  ECE (15 bins) for the τ values in `track`.
- `select_rule(measures, losses, target_risk)`: for each measure the threshold with the largest coverage
  whose kept items have mean loss ≤ target_risk (training.core.scoring.coverage_at_risk: with 0/1 losses the
  share of bad outputs), then the measure with the largest coverage (ties: higher PRR). The threshold is in
  the measure's own units and direction, the manifest form models.core.calibration reads.
- `prr_table`, `curves`: PRR (training.core.scoring.prr) and downsampled risk-coverage curves per measure,
  with the oracle's curve; `outcome(abstain, losses, bad)`: what a rule did on a set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import torch

from models.core.calibration import LOW_IS_UNCERTAIN
from models.core.predictor import SequenceUncertainty
from training.core.scoring import ECE_BINS, coverage_at_risk, downsample_curve, prr, risk_coverage_curve

MEASURES = tuple(f.name for f in fields(SequenceUncertainty) if f.name != "sampling_chrf")
GRID = tuple(math.exp(math.log(0.25) + i * math.log(16.0) / 16) for i in range(17))  # 0.25..4, ×1.19 steps


def measure_table(uncertainties: Sequence[SequenceUncertainty | None],
                  names: Sequence[str] = MEASURES) -> dict[str, torch.Tensor]:
    """Raw values per measure, float64 [N] (NaN where a measure or the whole uncertainty is missing)."""
    return {name: torch.tensor([math.nan if u is None or getattr(u, name) is None else float(getattr(u, name))
                                for u in uncertainties], dtype=torch.float64) for name in names}


def oriented(name: str, values: torch.Tensor) -> torch.Tensor:
    """`values` of measure `name` turned so that higher = less sure."""
    return -values if name in LOW_IS_UNCERTAIN else values


class TemperatureGrid:
    """Reference-token NLL of the MC mean at each τ of `taus` (module docstring); `track` τs also keep ECE data."""

    def __init__(self, taus: Sequence[float] = GRID, track: Sequence[float] = ()) -> None:
        self.taus = tuple(float(t) for t in taus)
        self.track = tuple(float(t) for t in track)
        self.nll_sums = [0.0] * len(self.taus)
        self.tokens = 0
        self._confidence: dict[float, list[torch.Tensor]] = {t: [] for t in self.track}
        self._correct: dict[float, list[torch.Tensor]] = {t: [] for t in self.track}

    def add(self, mc_log_probs: torch.Tensor, targets: Sequence[int] | torch.Tensor) -> None:
        lp = mc_log_probs.float()
        index = torch.as_tensor(targets, device=lp.device).long()
        samples = lp.shape[0]
        for g, tau in enumerate(self.taus):
            self.nll_sums[g] += float(self._token_nll(lp, index, tau, samples).sum())
        for tau in self.track:
            mean = torch.softmax(lp / tau, dim=-1).mean(dim=0)  # p̄ [n, V]
            confidence, top = mean.max(dim=-1)
            self._confidence[tau].append(confidence.double().cpu())
            self._correct[tau].append((top == index).cpu())
        self.tokens += int(index.numel())

    @staticmethod
    def _token_nll(lp: torch.Tensor, index: torch.Tensor, tau: float, samples: int) -> torch.Tensor:
        scaled = lp / tau
        picked = scaled.gather(-1, index.expand(samples, -1)[..., None]).squeeze(-1) - torch.logsumexp(scaled, -1)
        return -(torch.logsumexp(picked, dim=0) - math.log(samples))  # [n]

    def nll(self) -> list[float]:
        """Mean reference-token NLL (nats) at each grid τ."""
        return [total / max(1, self.tokens) for total in self.nll_sums]

    def fit(self) -> dict[str, Any]:
        """{"temperature", "nll" (at it, interpolated), "nll_at_1", "at_bound", "tokens"}: the grid minimum,
        refined by the vertex of the parabola through it and its neighbours in log τ (kept inside them)."""
        values = self.nll()
        best = min(range(len(values)), key=values.__getitem__)
        x = math.log(self.taus[best])
        nll = values[best]
        if 0 < best < len(values) - 1:
            (x0, x1, x2), (y0, y1, y2) = (math.log(self.taus[best + d]) for d in (-1, 0, 1)), values[best - 1: best + 2]
            denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
            a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
            b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
            if a > 0:
                x = min(max(-b / (2 * a), x0), x2)
                nll = a * x * x + b * x + (y1 - a * x1 * x1 - b * x1)  # the parabola at x
        one = min(range(len(self.taus)), key=lambda g: abs(math.log(self.taus[g])))
        return {"temperature": math.exp(x), "nll": nll, "nll_at_1": values[one], "tokens": self.tokens,
                "at_bound": best in (0, len(values) - 1), "grid": {f"{t:.3f}": v for t, v in zip(self.taus, values,
                                                                                          strict=True)}}

    def ece(self, tau: float, bins: int = ECE_BINS) -> float:
        """Token-level top-label ECE of p̄_τ (equal-width confidence bins) for a tracked τ."""
        confidence = torch.cat(self._confidence[float(tau)])
        correct = torch.cat(self._correct[float(tau)]).double()
        index = (confidence * bins).long().clamp(0, bins - 1)
        count = torch.bincount(index, minlength=bins).double()
        gap = torch.bincount(index, weights=correct, minlength=bins) - torch.bincount(index, weights=confidence,
                                                                                      minlength=bins)
        return float(gap.abs().sum() / max(1.0, float(count.sum())))


def select_rule(measures: Mapping[str, torch.Tensor], losses: torch.Tensor, target_risk: float) -> dict[str, Any]:
    """See module docstring: {"measure", "threshold", "target_risk", "coverage", "achieved_risk", "prr",
    "candidates": {measure: {coverage, prr}}}."""
    if not 0.0 < target_risk < 1.0:
        raise ValueError(f"target_risk must be in (0, 1), got {target_risk}")
    candidates = {}
    for name, values in measures.items():
        score = oriented(name, values)
        chosen = coverage_at_risk(score, losses, target_risk)
        quality = prr(score, losses)
        threshold = -chosen["threshold"] if name in LOW_IS_UNCERTAIN else chosen["threshold"]
        candidates[name] = {**chosen, "threshold": threshold, "prr": quality}
    if not candidates:
        raise ValueError("no measures to choose from")
    best = max(candidates, key=lambda n: (candidates[n]["coverage"], _finite(candidates[n]["prr"])))
    return {"measure": best, "target_risk": target_risk, **candidates[best],
            "candidates": {n: {"coverage": c["coverage"], "prr": c["prr"]} for n, c in candidates.items()}}


def _finite(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def prr_table(measures: Mapping[str, torch.Tensor], losses: torch.Tensor) -> dict[str, float]:
    """PRR of every measure (oriented) for `losses` (higher = worse)."""
    return {name: prr(oriented(name, values), losses) for name, values in measures.items()}


def curves(measures: Mapping[str, torch.Tensor], losses: torch.Tensor, points: int = 60) -> dict[str, Any]:
    """Risk-coverage curves (coverage, risk) per measure plus "oracle" (rejecting the worst first)."""
    out = {name: downsample_curve(risk_coverage_curve(oriented(name, v), losses), points)
           for name, v in measures.items()}
    out["oracle"] = downsample_curve(risk_coverage_curve(losses, losses), points)
    return {name: {"coverage": c["coverage"], "risk": c["risk"]} for name, c in out.items()}


def outcome(abstain: torch.Tensor, losses: torch.Tensor, bad: torch.Tensor | None = None) -> dict[str, float]:
    """Abstain rate, mean loss of kept / abstained items and (with `bad`, 0/1) the bad share among kept ones."""
    keep = ~abstain.bool()
    mean = lambda v, m: float(v[m].double().mean()) if bool(m.any()) else math.nan  # noqa: E731
    out = {"n": int(abstain.numel()), "abstain_rate": float(abstain.double().mean()) if abstain.numel() else math.nan,
           "loss_all": mean(losses, torch.ones_like(keep)), "loss_kept": mean(losses, keep),
           "loss_abstained": mean(losses, ~keep)}
    if bad is not None:
        out["bad_share_all"], out["bad_share_kept"] = mean(bad, torch.ones_like(keep)), mean(bad, keep)
    return out


def usable_rule(rule: dict[str, Any], min_coverage: float) -> dict[str, Any]:
    """`rule` (from select_rule) when it keeps at least `min_coverage` of validation; otherwise the same record
    with `threshold` None (serving then never abstains for uncertainty) and `off` saying why: a rule that flags
    most outputs says nothing about any one of them."""
    if rule["coverage"] >= min_coverage:
        return rule
    return {**rule, "threshold": None,
            "off": f"no measure meets the target risk {rule['target_risk']:.3f} while keeping "
                   f"{min_coverage:.0%} of validation (best: {rule['measure']} at {rule['coverage']:.1%})"}
