"""Hybrid OOD candidates (models/core/ood.py, method "hybrid"): a hidden-state distance and a token density's NLL
(bigram or Kneser-Ney trigram), each divided by its spread on the in-domain validation (`choice`) texts, mixed with
weight w on the first.

The two see different things: pooled hidden states what an input means to the model, token pairs what kind of
text it is. On the quick artifacts, mixing them raised validation AUROC from 0.965 (kNN alone) to 0.970 for
sentiment, from 0.975 (bigram alone) to 0.983 for translation and from 0.926 to 0.935 for generation
(prompts). Only the best few hidden-state candidates on validation are mixed (`top`), so the search stays small;
the choice among everything, hybrids included, is still the largest validation AUROC (training/core/ood_fit.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

WEIGHTS = (0.3, 0.5, 0.7)  # of the hidden-state term


@dataclass(frozen=True)
class Hybrid:
    """One hybrid candidate: its name, the feature candidate it mixes, the detector's `hybrid` config and the
    mixed (length-adjusted) distance of every set."""

    name: str
    feature: str
    config: dict[str, Any]
    distances: dict[str, torch.Tensor]


def spread(in_domain: torch.Tensor) -> float:
    """The standard deviation of in-domain distances (1.0 when they do not vary, so a constant never divides)."""
    value = float(in_domain.double().std()) if in_domain.numel() > 1 else 0.0
    return value if value > 0 else 1.0


def hybrids(features: Mapping[str, tuple[str, dict[str, torch.Tensor]]], ranked: Sequence[str],
            token_nll: dict[str, torch.Tensor], density: str = "token_bigram", top: int = 4,
            weights: Sequence[float] = WEIGHTS) -> list[Hybrid]:
    """Mix each of the `top` best hidden-state candidates (`ranked`, best first; `features[name]` = (method,
    length-adjusted distance per set)) with the NLL per set of the token `density` (its method name), at every
    weight. Scales come from the `choice` set only (validation, in domain)."""
    token_scale = spread(token_nll["choice"])
    out = []
    for name in [n for n in ranked if n in features][:top]:
        method, d = features[name]
        feature_scale = spread(d["choice"])
        for weight in weights:
            mixed = {part: weight * d[part] / feature_scale + (1.0 - weight) * token_nll[part] / token_scale
                     for part in d}
            config = {"feature_method": method, "weight": weight, "scales": [feature_scale, token_scale],
                      "density": density}
            out.append(Hybrid(f"hybrid_{weight:g}({name}+{density})", name, config, mixed))
    return out
