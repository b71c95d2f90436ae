"""What the optimizer is built from: AdamW parameter groups, and how many examples a batch holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices only, never on biases or normalisation weights.
    Each parameter appears once: a tied matrix (Marian's shared embedding is owned by four modules) would
    otherwise be stepped once per owner."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "Norm" in type(module).__name__
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if is_norm or name.endswith("bias") or param.ndim < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def count_samples(batch: Any) -> int:
    """Examples in a batch: leading size of its first tensor (mapping values or sequence items)."""
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else [batch]
    for item in items:
        if isinstance(item, torch.Tensor):
            return int(item.shape[0])
    raise TypeError("cannot count the examples of this batch; pass count=… to Trainer")
