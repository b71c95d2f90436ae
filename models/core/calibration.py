"""A served model's calibration: the temperature that divides its logits and its abstain rule.

One object for every task, read from the manifest's `calibration` section:
- sentiment: {"temperature", "deterministic_temperature", "mc_samples", "abstain": {"measure", "threshold",
  "target_risk", ...}};
- translation and generation: {"temperature", "abstain": {"measure", "threshold", ...}}.
Other keys are reports for people and are ignored here.

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

# Measures where a LOW value means uncertain; every other measure is "high = uncertain".
LOW_IS_UNCERTAIN = frozenset({"sequence_log_prob", "mc_log_prob_mean", "sampling_chrf"})


@dataclass(frozen=True)
class Calibration:
    """Temperature τ (divides every MC sample's logits), an optional τ for deterministic (T = 0) passes
    (None = τ), and the abstain rule (module docstring; `abstain_threshold` None = no rule)."""

    temperature: float = 1.0
    deterministic_temperature: float | None = None
    abstain_measure: str | None = None
    abstain_threshold: float | None = None

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
        """Read a manifest `calibration` section (None or {} = τ 1, no rule). `deterministic`: the task runs
        T = 0 passes with their own τ (sentiment: `deterministic_temperature`, τ when absent); otherwise a
        deterministic τ in the section is ignored. `measures`: the names a rule may use; another name is a
        ValueError rather than a rule that silently never fires."""
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
        return cls(temperature, det, measure, None if threshold is None else float(threshold))

    def temperature_for(self, mc_samples: int) -> float:
        """τ of a pass with `mc_samples` samples (T = 0: the deterministic τ when there is one)."""
        if mc_samples == 0 and self.deterministic_temperature is not None:
            return self.deterministic_temperature
        return self.temperature

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
        """JSON-ready facts for a predictor's `describe`; `deterministic_temperature` only when there is one."""
        facts: dict[str, float | str | None] = {"temperature": self.temperature}
        if self.deterministic_temperature is not None:
            facts["deterministic_temperature"] = self.deterministic_temperature
        facts["abstain_measure"] = self.abstain_measure
        facts["abstain_threshold"] = self.abstain_threshold
        return facts
