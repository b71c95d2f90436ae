"""The ways the sentiment evaluation runs the model (MC modes) and the batched pass that collects their logits.

- `MCMode(name, mc_samples, last_k)`: T samples (0 = deterministic) with the top `last_k` layers stochastic
  (None = full MC); `modes_for(L, T, candidates)` lists deterministic, full MC and each last-k with k < L.
- `Encoded(ids, labels)`: tokenised reviews and their labels; `subset(positions)` picks some.
- `collect_logits(model, data, pad_id, mode, settings, phase)` → (logits [N, max(T, 1), C] in input order,
  wall seconds), through models.sentiment.mc, the same fast path the service runs, with progress lines
  (training.core.progress) so minutes of evaluation are not silent in a log.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.core.device import autocast_context
from models.core.dropout import mix_seed
from models.sentiment.mc import mc_logits, num_layers
from training.core.batching import eval_batches
from training.core.confidence_maps import MAP_KINDS
from training.core.progress import ProgressLog


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


DETERMINISTIC = MCMode("deterministic", 0, None)


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
    map_kinds: Sequence[str] = MAP_KINDS
    folds: int = 5
    criterion: str = "ece"
    bins: int = 15


@dataclass(frozen=True)
class Encoded:
    """Token ids of reviews (head+tail truncated) and their labels [N]."""

    ids: list[list[int]]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, positions: Sequence[int]) -> Encoded:
        return Encoded([self.ids[i] for i in positions], self.labels[torch.tensor(list(positions), dtype=torch.long)])


def modes_for(layers: int, mc_samples: int, candidates: Sequence[int]) -> list[MCMode]:
    """Deterministic, full MC, and last-k MC for each candidate k < L (k ≥ L is full MC already)."""
    modes = [DETERMINISTIC, MCMode("mc_full", mc_samples, None)]
    modes += [MCMode(f"mc_last_{k}", mc_samples, k) for k in sorted(set(candidates)) if 1 <= k < layers]
    return modes


def collect_logits(model: nn.Module, data: Encoded, pad_id: int, mode: MCMode, s: EvalSettings,
                   phase: str) -> tuple[torch.Tensor, float]:
    """Logits [N, max(T, 1), C] in input order and the wall seconds they took; logs progress as
    "evaluation <phase>/<mode>"."""
    layers = num_layers(model)
    per_batch = max(1, int(s.batch_rows / mode.relative_cost(layers)))
    out: torch.Tensor | None = None
    started = time.perf_counter()
    with (ProgressLog(f"evaluation {phase}/{mode.name}", len(data), unit="reviews") as progress,
          torch.inference_mode(), autocast_context(s.device, s.dtype)):
        for batch_no, (index, input_ids, mask) in enumerate(eval_batches(data.ids, per_batch, pad_id)):
            seed = mix_seed(s.seed, batch_no)
            logits = mc_logits(model, input_ids.to(s.device), mask.to(s.device), mode.mc_samples, seed, mode.last_k,
                               s.sites)
            if out is None:
                out = torch.empty(len(data), *logits.shape[1:], dtype=torch.float32)
            out[torch.tensor(index)] = logits.float().cpu()
            progress.update(len(index))
    if out is None:
        raise ValueError(f"no inputs for {phase}/{mode.name}")
    return out, time.perf_counter() - started


def timing(seconds: float, n: int, mode: MCMode, layers: int) -> dict[str, float]:
    """Wall seconds, reviews/s and the formula cost of one mode's pass over n reviews."""
    return {"seconds": round(seconds, 2), "reviews": n, "reviews_per_second": round(n / max(seconds, 1e-9), 2),
            # (L − k + kT)/L: the full-layer arithmetic; the [CLS]-only top layer makes the real cost lower.
            "formula_relative_cost": round(mode.relative_cost(layers), 3)}
