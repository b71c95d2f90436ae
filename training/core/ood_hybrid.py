"""Hybrid OOD candidates (models/core/ood.py, method "hybrid"): a hidden-state distance and a token density's NLL
(bigram or Kneser-Ney trigram), each divided by its spread on the in-domain validation (`choice`) texts, mixed with
weight w on the first.

The two see different things: pooled hidden states what an input means to the model, token pairs what kind of
text it is. On the quick artifacts, mixing them raised validation AUROC from 0.965 (kNN alone) to 0.970 for
sentiment, from 0.975 (bigram alone) to 0.983 for translation and from 0.926 to 0.935 for generation
(prompts). Only the best few hidden-state candidates on validation are mixed (`top`), so the search stays small;
the choice among everything, hybrids included, is still the largest validation AUROC (training/core/ood_fit.py).
`third_parts` adds to a two-part mix the raw kNN distance of another layer (models/core/ood_extra.py): the third
signal `python -m training.ood.ceiling` found worth adding in every task (the embedding layer's).
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


# of a third part's term, beside the hybrid's two (whose weights sum to 1). Negative ones too: the embedding layer's
# distance from the training inputs is mostly how short an input is (in-domain correlation with ln(tokens) −0.72 on
# generation's prompts, −0.93 on sentiment's), and subtracting some of it corrects the hybrid's excess on short
# in-domain inputs better than its length term (the ceiling's logistic mixes weight it negatively in every task).
EXTRA_WEIGHTS = (-0.5, -0.35, -0.2, 0.2, 0.35, 0.5)


def third_parts(base: Hybrid, layer: int, knn: Mapping[int, dict[str, torch.Tensor]],
                weights: Sequence[float] = EXTRA_WEIGHTS) -> list[Hybrid]:
    """`base` (a hybrid whose hidden state is at `layer`) plus, at every weight (negative ones included), the kNN
    cosine distance per set of each other layer (`knn[j]`: its raw distance per set), over its spread on the
    `choice` texts: the detector's `hybrid["extra"]` part (models/core/ood_extra.py). Why: `python -m
    training.ood.ceiling` finds the embedding layer's kNN the third signal worth adding in every task."""
    out = []
    for second, d in knn.items():
        if second == layer:
            continue
        scale = spread(d["choice"])
        for weight in weights:
            mixed = {part: base.distances[part] + weight * d[part] / scale for part in base.distances}
            config = {**base.config, "extra": {"layer": second, "weight": weight, "scale": scale}}
            out.append(Hybrid(f"{base.name}{weight:+g}*knn_cosine/layer_{second}", base.feature, config, mixed))
    return out
