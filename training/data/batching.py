"""Batches of token-id sequences for training (shuffled, length-grouped) and evaluation (sorted).

Padding is wasted compute, and on a CPU compute is the budget: IMDB reviews range from a few dozen to
the full 256 tokens, so batching similar lengths together saves a large share of every step.
- `LengthGroupedBatches`: each epoch shuffles with (seed, epoch), cuts the order into pools of
  `pool_batches` batches, sorts each pool by length, slices it into batches and shuffles the batch order.
  Every example appears exactly once per epoch; `len()` is the number of batches. Yields dicts
  {input_ids [B, L], attention_mask [B, L], labels [B]}.
- `eval_batches`: longest first, at most `batch_size` items; yields (indices, input_ids, attention_mask)
  so results can be put back into input order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

import torch

from models.sentiment_model import collate


class LengthGroupedBatches:
    """See module docstring. Re-iterable; call `set_epoch(e)` before each epoch for a new shuffle."""

    def __init__(
        self,
        ids: Sequence[Sequence[int]],
        labels: Sequence[int],
        batch_size: int,
        pad_id: int,
        seed: int,
        pool_batches: int = 50,
    ) -> None:
        if len(ids) != len(labels) or not ids:
            raise ValueError(f"need matching non-empty ids ({len(ids)}) and labels ({len(labels)})")
        self.ids, self.labels = ids, labels
        self.batch_size, self.pad_id, self.seed, self.pool = batch_size, pad_id, seed, pool_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.ids) / self.batch_size)

    def batch_indices(self) -> list[list[int]]:
        """This epoch's batches as index lists (deterministic in seed and epoch)."""
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.ids)))
        rng.shuffle(order)
        size = self.batch_size * self.pool
        batches: list[list[int]] = []
        for start in range(0, len(order), size):
            pool = sorted(order[start: start + size], key=lambda i: len(self.ids[i]))
            batches.extend(pool[i: i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for index in self.batch_indices():
            input_ids, mask = collate([self.ids[i] for i in index], self.pad_id)
            yield {
                "input_ids": input_ids,
                "attention_mask": mask,
                "labels": torch.tensor([self.labels[i] for i in index], dtype=torch.long),
            }


def eval_batches(
    ids: Sequence[Sequence[int]], batch_size: int, pad_id: int
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """(indices, input_ids, attention_mask) batches, longest sequences first (see module docstring)."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    for start in range(0, len(order), batch_size):
        index = order[start: start + batch_size]
        input_ids, mask = collate([ids[i] for i in index], pad_id)
        yield index, input_ids, mask
