"""Generation training batches: shuffled mini-batches of fixed-length token blocks, fixed block subsets,
and the next-token loss."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


class BlockBatches:
    """Shuffled mini-batches [b, S] of token blocks; reshuffled per epoch from (seed, epoch)."""

    def __init__(self, blocks: torch.Tensor, batch_size: int, seed: int) -> None:
        self.blocks, self.batch_size, self.seed, self.epoch = blocks, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.blocks) // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(len(self.blocks), generator=generator)
        for start in range(0, len(order), self.batch_size):
            yield self.blocks[order[start: start + self.batch_size]]


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of blocks `ids` [b, S] (float32 logits)."""
    logits = model(input_ids=ids).logits[:, :-1].float()
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


def subset(blocks: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """A fixed random `limit` of the blocks (all when fewer)."""
    if limit >= len(blocks):
        return blocks
    keep = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return blocks[keep]
