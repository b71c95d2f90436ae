"""The measures of one scored translation (docs/architecture.md §4, "Sequences"), apart from the predictor that
decodes and scores it (models/translation/predictor.py).

A scored output is (log-probs [1 + T, n, V], targets [n]): row 0 the deterministic pass, rows 1..T the MC rows,
already divided by τ. `measures_of(score, mc_samples, sampled)` → (sequence measures, None at T = 0; per-token
probability, entropy and MI lists, MI None at T = 0); `scored_output(score, mc_samples, calibration)` → the
`ScoredOutput` that the training evaluation reads (models/core/predictor.py).
"""

from __future__ import annotations

from typing import Any

import torch

from models.core.calibration import Calibration
from models.core.predictor import ScoredOutput, SequenceUncertainty
from models.core.sequence_uncertainty import mean_pairwise_chrf, sequence_measures, token_log_probs, token_measures

Scored = tuple[torch.Tensor, torch.Tensor]


def _entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats, float64) of each row of `log_probs` [n, V]; 0 · log 0 counts as 0."""
    return -(log_probs.exp() * log_probs).nan_to_num(nan=0.0).sum(dim=-1, dtype=torch.float64)


def measures_of(score: Scored, mc_samples: int,
                sampled: list[str] | None = None) -> tuple[dict[str, Any] | None, tuple[list, list, list]]:
    """See module docstring; `sampled` are the T stochastic decodes of the sampling mode (None: not run)."""
    log_probs, targets = score
    det = log_probs[0]
    if mc_samples == 0:
        probability = token_log_probs(det, targets).exp()
        return None, (probability.tolist(), _entropy(det).tolist(), [None] * len(targets))
    measures = token_measures(log_probs[1:], targets)
    summary: dict[str, Any] = sequence_measures(token_log_probs(det, targets), measures)
    summary["sampling_chrf"] = mean_pairwise_chrf(sampled) if sampled is not None else None
    return summary, (measures.probability.tolist(), measures.predictive_entropy.tolist(),
                     measures.mutual_information.tolist())


def scored_output(score: Scored, mc_samples: int, calibration: Calibration) -> ScoredOutput:
    """See module docstring: the deterministic row's token log-probs, argmax and entropies, the MC rows, the
    sequence measures and whether the abstain rule fires on them."""
    log_probs, targets = score
    summary, _ = measures_of(score, mc_samples)
    det = log_probs[0]
    top_lp, top = det.max(dim=-1)
    return ScoredOutput(
        det_log_probs=token_log_probs(det, targets).tolist(), det_top=top.tolist(),
        det_top_log_probs=top_lp.tolist(), det_entropies=_entropy(det).tolist(),
        mc_log_probs=log_probs[1:] if mc_samples else None,
        uncertainty=SequenceUncertainty(**summary) if summary else None,
        abstain=calibration.abstains(summary) if summary else False)
