"""A served model's calibration: the temperature that divides its logits, an optional map of the top-label
confidence applied after it, and its abstain rule.

One object for every task, read from the manifest's `calibration` section:
- sentiment: {"temperature", "deterministic_temperature", "mc_samples", "confidence_map",
  "deterministic_confidence_map", "abstain": {"measure", "threshold", "target_risk", ...}};
- translation and generation: {"temperature", "abstain": {"measure", "threshold", "target_risk", ...}}.
Other keys are reports for people and are ignored here. A section without a map (every artifact written
before maps existed) serves temperature scaling alone.

A confidence map `{"kind", "x": [...], "y": [...]}` is a piecewise-linear function of the top-label
probability of the temperature-scaled predictive mean, stored as knots (x non-decreasing; a repeated x is a
step), evaluated like numpy's `interp` (flat beyond the ends). Training fits it (isotonic regression or
histogram binning) and writes plain JSON numbers, so serving needs only torch. `ConfidenceMap.apply` replaces
the top label's probability by the mapped one, rescales the other labels to fill the rest, and never lets
another label overtake the top one: the predicted label, and so accuracy, are unchanged.

The abstain rule flags a prediction whose `measure` lies on the uncertain side of `threshold`: above it,
or below it for the measures in LOW_IS_UNCERTAIN (log-probabilities, sample agreement). There is no rule
when the section names no measure or its threshold is missing, null or not finite (training writes null
for a non-finite number); `describe` then reports the threshold as None. A measure that is missing from a
prediction, None or NaN never makes it abstain: the rule cannot judge what was not computed (e.g.
`sampling_chrf` outside "sampling" mode), the same answer a deterministic (T = 0) prediction gets.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import torch

# Measures where a LOW value means uncertain; every other measure is "high = uncertain".
LOW_IS_UNCERTAIN = frozenset({"sequence_log_prob", "mc_log_prob_mean", "sequence_log_prob_per_token",
                              "mc_log_prob_mean_per_token", "sampling_chrf"})


# The mapped top probability stays at least this far above the bound where another label would tie it.
_KEEP_TOP = 1e-6


def interpolate(values: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """numpy.interp for torch: the piecewise-linear function through knots (x, y) at `values` (any shape),
    y[0] left of x[0] and y[-1] from x[-1] on; x must be non-decreasing (a repeated x is a step)."""
    if x.numel() == 1:
        return torch.full_like(values, float(y[0]))
    index = torch.searchsorted(x, values.contiguous(), right=True).clamp(1, x.numel() - 1)
    x0, x1, y0, y1 = x[index - 1], x[index], y[index - 1], y[index]
    width = x1 - x0
    # right=True puts a value in [x0, x1) with x1 > x0, so width is 0 only beyond the ends (handled below).
    t = torch.where(width > 0, (values - x0) / torch.where(width > 0, width, torch.ones_like(width)), 0.0)
    inside = y0 + t.clamp(0.0, 1.0) * (y1 - y0)
    return torch.where(values < x[0], y[0], torch.where(values >= x[-1], y[-1], inside))


@dataclass(frozen=True)
class ConfidenceMap:
    """A map of the top-label probability (module docstring): `kind` names how it was fitted, (x, y) its knots."""

    kind: str
    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.x or len(self.x) != len(self.y):
            raise ValueError(f"confidence map needs as many x as y knots (≥ 1), got {len(self.x)} and {len(self.y)}")
        if not all(math.isfinite(v) for v in (*self.x, *self.y)):
            raise ValueError("confidence map knots must be finite numbers")
        if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise ValueError("confidence map x knots must be non-decreasing")
        if not all(0.0 <= v <= 1.0 for v in self.y):
            raise ValueError("confidence map y knots must be probabilities in [0, 1]")

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None) -> ConfidenceMap | None:
        """The map of a manifest entry {"kind", "x", "y"}; None for None, {} or kind "identity"."""
        if not section or section.get("kind", "identity") == "identity":
            return None
        return cls(str(section["kind"]), tuple(float(v) for v in section["x"]), tuple(float(v) for v in section["y"]))

    def to_section(self) -> dict[str, Any]:
        return {"kind": self.kind, "x": list(self.x), "y": list(self.y)}

    def confidence(self, top: torch.Tensor) -> torch.Tensor:
        """The mapped value of top-label probabilities `top` (any shape, float64 out)."""
        x = torch.tensor(self.x, dtype=torch.float64)
        return interpolate(top.double(), x, torch.tensor(self.y, dtype=torch.float64))

    def apply(self, probs: torch.Tensor) -> torch.Tensor:
        """Probabilities [..., C] (rows summing to 1) with the top label's probability mapped (float64 out);
        see the module docstring. The others keep their ratios; if they were all 0, they share the rest."""
        p = probs.double()
        top, label = p.max(dim=-1)
        others_sum = (p.sum(dim=-1) - top).clamp_min(0.0)  # not 1 − top: float32 rows sum to 1 only roughly
        second = p.scatter(-1, label[..., None], -1.0).max(dim=-1).values.clamp_min(0.0)
        # The top stays ahead while c > second·(1 − c)/others_sum, i.e. c > r/(1 + r) with r = second/others_sum.
        r = torch.where(others_sum > 0, second / others_sum.clamp_min(1e-300), torch.zeros_like(top))
        bound = torch.minimum(top, r / (1.0 + r) + _KEEP_TOP)
        mapped = torch.maximum(self.confidence(top), bound).clamp(max=1.0)
        n_others = max(p.shape[-1] - 1, 1)
        scale = torch.where(others_sum > 0, (1.0 - mapped) / others_sum.clamp_min(1e-300), torch.zeros_like(top))
        rest = torch.where((others_sum > 0)[..., None], p * scale[..., None], ((1.0 - mapped) / n_others)[..., None])
        return rest.scatter(-1, label[..., None], mapped[..., None])


@dataclass(frozen=True)
class Calibration:
    """Temperature τ (divides every MC sample's logits), an optional τ for deterministic (T = 0) passes
    (None = τ), the optional confidence maps applied after τ (MC passes; deterministic passes), and the abstain
    rule (module docstring; `abstain_threshold` None = no rule)."""

    temperature: float = 1.0
    deterministic_temperature: float | None = None
    abstain_measure: str | None = None
    abstain_threshold: float | None = None
    confidence_map: ConfidenceMap | None = None
    deterministic_confidence_map: ConfidenceMap | None = None

    def __post_init__(self) -> None:
        for name in ("temperature", "deterministic_temperature"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"calibration {name} must be a positive number, got {value!r}")

    @classmethod
    def from_manifest(
        cls,
        section: Mapping[str, Any] | None,
        *,
        deterministic: bool = False,
        measures: Collection[str] | None = None,
    ) -> Calibration:
        """Read a manifest `calibration` section (None or {} = τ 1, no map, no rule). `deterministic`: the task
        runs T = 0 passes with their own τ and map (sentiment: `deterministic_temperature`, τ when absent;
        `deterministic_confidence_map`, none when absent); otherwise those keys are ignored. `measures`: the
        names a rule may use; another name is a ValueError rather than a rule that silently never fires."""
        section = section or {}
        temperature = float(section.get("temperature", 1.0))
        det = float(section.get("deterministic_temperature", temperature)) if deterministic else None
        abstain = section.get("abstain") or {}
        measure = abstain.get("measure")
        threshold = abstain.get("threshold")
        if threshold is not None and not math.isfinite(float(threshold)):
            threshold = None
        if measure is not None and measures is not None and measure not in measures:
            raise ValueError(f"abstain measure {measure!r} is not one of {sorted(measures)}")
        return cls(temperature, det, measure, None if threshold is None else float(threshold),
                   ConfidenceMap.from_section(section.get("confidence_map")),
                   ConfidenceMap.from_section(section.get("deterministic_confidence_map")) if deterministic else None)

    def temperature_for(self, mc_samples: int) -> float:
        """τ of a pass with `mc_samples` samples (T = 0: the deterministic τ when there is one)."""
        if mc_samples == 0 and self.deterministic_temperature is not None:
            return self.deterministic_temperature
        return self.temperature

    def map_for(self, mc_samples: int) -> ConfidenceMap | None:
        """The confidence map of a pass with `mc_samples` samples (T = 0: the deterministic map), None = none."""
        if mc_samples == 0 and self.deterministic_temperature is not None:
            return self.deterministic_confidence_map
        return self.confidence_map

    def calibrated_mean(self, probs: torch.Tensor, mc_samples: int) -> torch.Tensor:
        """The served probabilities [..., C] from temperature-scaled sample probabilities [..., T, C]: their
        mean, then the confidence map of `mc_samples` when there is one (float64)."""
        mean = probs.double().mean(dim=-2)
        confidence_map = self.map_for(mc_samples)
        return mean if confidence_map is None else confidence_map.apply(mean)

    def abstains(self, measures: Mapping[str, float | None]) -> bool:
        """True when `measures[abstain_measure]` is on the uncertain side of the threshold; False when there
        is no rule or the value is missing, None or NaN (module docstring)."""
        if self.abstain_measure is None or self.abstain_threshold is None:
            return False
        value = measures.get(self.abstain_measure)
        if value is None or math.isnan(value):
            return False
        if self.abstain_measure in LOW_IS_UNCERTAIN:
            return value < self.abstain_threshold
        return value > self.abstain_threshold

    def describe(self) -> dict[str, float | str | None]:
        """JSON-ready facts for a predictor's `describe`; `deterministic_temperature` only when there is one,
        the kinds of the confidence maps only when there are maps."""
        facts: dict[str, float | str | None] = {"temperature": self.temperature}
        if self.deterministic_temperature is not None:
            facts["deterministic_temperature"] = self.deterministic_temperature
        if self.confidence_map is not None or self.deterministic_confidence_map is not None:
            facts["confidence_map"] = self.confidence_map.kind if self.confidence_map else None
            if self.deterministic_temperature is not None:
                kind = self.deterministic_confidence_map.kind if self.deterministic_confidence_map else None
                facts["deterministic_confidence_map"] = kind
        facts["abstain_measure"] = self.abstain_measure
        facts["abstain_threshold"] = self.abstain_threshold
        return facts
