"""A hybrid OOD detector's optional third part (models/core/ood.py): the kNN cosine distance of a second layer's
pooled features to a bank of training features, added to the hybrid's score over its own in-domain spread.

`hybrid["extra"]` = {"layer": j (the second layer, ≠ the detector's), "weight": w₃ ≠ 0, "scale": s₃ > 0}; its bank
is saved as the tensor "extra_bank" [N, d]. The hybrid's raw score becomes
w · feature / s_f + (1 − w) · token NLL / s_b + w₃ · distance_j / s₃.
Why: on every task's validation probes, the kNN of the embedding layer's pooled states (layer 0, close to a bag of
words) carries what a mid-layer state and a token density miss (`python -m training.ood.ceiling`, README). Its
weight may be negative: that distance is mostly how short the input is, and subtracting some of it corrects the
hybrid's excess on short in-domain inputs (training/core/ood_hybrid.py, EXTRA_WEIGHTS).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from models.core.ood_methods import distances

PREFIX = "extra_"
BANK = PREFIX + "bank"


def own(tensors: Mapping[str, torch.Tensor]) -> bool:
    """True for the tensors of the third part (named with PREFIX)."""
    return any(name.startswith(PREFIX) for name in tensors)


def tensors_of(bank: torch.Tensor) -> dict[str, torch.Tensor]:
    """The saved tensors of a third part whose kNN bank is `bank` [N, d] (L2-normalised pooled features)."""
    return {BANK: bank}


def distance(tensors: Mapping[str, torch.Tensor], features: torch.Tensor, k: int) -> torch.Tensor:
    """The kNN cosine distance [B] of `features` [B, d] (the second layer's pooled features) to the bank."""
    return distances("knn_cosine", {"bank": tensors[BANK]}, features, k)


def problems(extra: Any, layer: int, tensors: Mapping[str, Any]) -> list[str]:
    """What is wrong with a hybrid's `extra` config (None: no third part) and its tensors; [] when sound."""
    present = [name for name in tensors if name.startswith(PREFIX)]
    if extra is None:
        return [f"tensors {present} without a hybrid extra part"] if present else []
    if not isinstance(extra, Mapping):
        return [f"hybrid extra {extra!r} is not an object"]
    out = []
    second, weight, scale = extra.get("layer"), extra.get("weight"), extra.get("scale")
    if not isinstance(second, int) or isinstance(second, bool) or second < 0 or second == layer:
        out.append(f"hybrid extra layer {second!r} is not an integer >= 0 other than the detector's layer {layer}")
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight) or weight == 0:
        out.append(f"hybrid extra weight {weight!r} is not a finite number other than 0")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0:
        out.append(f"hybrid extra scale {scale!r} is not a finite number > 0")
    bank = tensors.get(BANK)
    if present != [BANK] or not isinstance(bank, torch.Tensor) or bank.ndim != 2 or bank.shape[0] < 1 \
            or not bank.is_floating_point() or not bool(torch.isfinite(bank).all()):
        out.append(f"hybrid extra tensors {present}: expected one finite [N >= 1, d] {BANK!r}")
    return out
