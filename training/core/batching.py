"""Batches of token-id sequences for training (shuffled, length-grouped) and evaluation (sorted).

Padding is wasted compute, and on a CPU compute is the budget: IMDB reviews range from a few dozen to
the full 256 tokens, so batching similar lengths together saves a large share of every step.
- `LengthGroupedBatches`: each epoch shuffles with (seed, epoch), cuts the order into pools of
  `pool_batches` batches, sorts each pool by length, slices it into batches and shuffles the batch order.
  Every example appears exactly once per epoch; `len()` is the number of batches. Yields dicts
  {input_ids [B, L], attention_mask [B, L], labels [B]}.
- Sharding for DistributedDataParallel (the distributed sampler): `shard_batches(batches, rank, world)`
  gives each rank every `world`-th batch of the same epoch order (all ranks shuffle with the same seed),
  padded by repeating the epoch's first batches so every rank runs the same number of steps (DDP's
  all-reduce would wait forever for a rank that ran out). `LengthGroupedBatches` shards its index lists
  (no collation of other ranks' batches); any other sized iterable is wrapped in `ShardedBatches`.
- `eval_batches`: longest first, at most `batch_size` items; yields (indices, input_ids, attention_mask)
  so results can be put back into input order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from models.core.padding import pad_ids


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
        self.rank, self.world_size = 0, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self, rank: int, world_size: int) -> LengthGroupedBatches:
        """From now on yield only rank `rank`'s share of `world_size` (module docstring); returns self."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.rank, self.world_size = rank, world_size
        return self

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.ids) / self.batch_size) / self.world_size)

    def batch_indices(self) -> list[list[int]]:
        """This epoch's batches (this rank's share) as index lists, deterministic in seed and epoch."""
        return shard_list(self._all_batch_indices(), self.rank, self.world_size)

    def _all_batch_indices(self) -> list[list[int]]:
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
            input_ids, mask = pad_ids([self.ids[i] for i in index], self.pad_id)
            yield {
                "input_ids": input_ids,
                "attention_mask": mask,
                "labels": torch.tensor([self.labels[i] for i in index], dtype=torch.long),
            }


def shard_list(items: list[Any], rank: int, world_size: int) -> list[Any]:
    """Every `world_size`-th item from `rank`, after padding `items` with its own first items to a
    multiple of `world_size` (so every rank gets ceil(len / world_size))."""
    if world_size == 1 or not items:
        return items
    padded = items + (items * world_size)[: -len(items) % world_size]
    return padded[rank::world_size]


class ShardedBatches:
    """Rank `rank`'s share of any sized, re-iterable batch iterable (module docstring). Forwards
    `set_epoch`, so the wrapped batches still reshuffle per epoch (identically on every rank)."""

    def __init__(self, batches: Iterable[Any], rank: int, world_size: int) -> None:
        if not hasattr(batches, "__len__"):
            raise TypeError("sharding needs a sized batch iterable (len() gives every rank the same step count)")
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.batches) / self.world_size)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        head: list[Any] = []  # the first batches, kept for padding
        yielded = 0
        for index, batch in enumerate(self.batches):
            if index < self.world_size:
                head.append(batch)
            if index % self.world_size == self.rank:
                yielded += 1
                yield batch
        if yielded < len(self) and head:  # one short: pad with the batch `shard_list` would pick
            total, last = len(self.batches), self.rank + self.world_size * (len(self) - 1)  # type: ignore[arg-type]
            yield head[(last - total) % total]


def shard_batches(batches: Iterable[Any], rank: int, world_size: int) -> Iterable[Any]:
    """`batches` restricted to rank `rank` of `world_size` (unchanged when world_size is 1)."""
    if world_size == 1:
        return batches
    if hasattr(batches, "shard"):
        return batches.shard(rank, world_size)  # type: ignore[no-any-return]
    return ShardedBatches(batches, rank, world_size)


def eval_batches(
    ids: Sequence[Sequence[int]], batch_size: int, pad_id: int
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """(indices, input_ids, attention_mask) batches, longest sequences first (see module docstring)."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    for start in range(0, len(order), batch_size):
        index = order[start: start + batch_size]
        input_ids, mask = pad_ids([ids[i] for i in index], pad_id)
        yield index, input_ids, mask
