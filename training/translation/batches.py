"""Translation training batches: fixed subsets, (source, target) collation for teacher forcing, length-grouped
pair batches, and the label-smoothed token loss."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from models.core.padding import pad_ids
from training.core.batching import LengthGroupedBatches
from training.translation.decoding import encode_sources, encode_targets

if TYPE_CHECKING:
    from training.translation.config import TranslationConfig

IGNORE = -100  # label id the cross-entropy skips (padding)


def take(pairs: Sequence[tuple[str, str]], limit: int | None, seed: int) -> list[tuple[str, str]]:
    """A fixed random subset of `limit` pairs in their original order (all when limit is None or larger)."""
    if limit is None or limit >= len(pairs):
        return list(pairs)
    keep = sorted(random.Random(seed).sample(range(len(pairs)), limit))
    return [pairs[i] for i in keep]


def collate_pairs(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], pad_id: int,
                  start_id: int) -> dict[str, torch.Tensor]:
    """input_ids/attention_mask [B, S]; labels [B, T] (padding = IGNORE); decoder_input_ids [B, T] = labels
    shifted right behind the decoder start token (pad where the labels are padding)."""
    input_ids, mask = pad_ids(sources, pad_id)
    labels, label_mask = pad_ids(targets, pad_id)
    labels = labels.masked_fill(label_mask == 0, IGNORE)
    decoder_inputs = torch.cat([torch.full((len(targets), 1), start_id), labels[:, :-1].clamp_min(0)], dim=1)
    decoder_inputs = decoder_inputs.masked_fill(decoder_inputs == IGNORE, pad_id)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "decoder_input_ids": decoder_inputs}


def drop_tokens(ids: Sequence[int], rate: float, unk_id: int, rng: random.Random) -> list[int]:
    """`ids` with each token but the last (`</s>`) replaced by `unk_id` with probability `rate`."""
    return [unk_id if i < len(ids) - 1 and rng.random() < rate else token for i, token in enumerate(ids)]


class PairBatches(LengthGroupedBatches):
    """LengthGroupedBatches over (source ids, target ids) pairs (grouped by source length) yielding
    `collate_pairs` dicts; with `token_dropout` each batch's sources have that share of their tokens replaced by
    `unk_id`, drawn from (seed, epoch, batch number) so a run is reproducible."""

    def __init__(self, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], batch_size: int,
                 pad_id: int, start_id: int, seed: int, token_dropout: float = 0.0, unk_id: int = 3) -> None:
        super().__init__(sources, targets, batch_size, pad_id, seed)  # type: ignore[arg-type]
        if not 0.0 <= token_dropout < 1.0:
            raise ValueError(f"token_dropout must be in [0, 1), got {token_dropout}")
        self.start_id, self.token_dropout, self.unk_id = start_id, token_dropout, unk_id

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:  # type: ignore[override]
        for number, index in enumerate(self.batch_indices()):
            sources = [self.ids[i] for i in index]
            if self.token_dropout:
                rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{number}")
                sources = [drop_tokens(ids, self.token_dropout, self.unk_id, rng) for ids in sources]
            yield collate_pairs(sources, [self.labels[i] for i in index],  # type: ignore[misc]
                                self.pad_id, self.start_id)


def encode_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]],
                 config: TranslationConfig) -> tuple[list[list[int]], list[list[int]]]:
    return (encode_sources(tokenizer, [p[0] for p in pairs], config.max_input_tokens),
            encode_targets(tokenizer, [p[1] for p in pairs], config.max_target_tokens))


def token_loss(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device,
               smoothing: float) -> tuple[torch.Tensor, int]:
    """Mean label-smoothed cross-entropy per target token (float32 logits), and the token count."""
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                   decoder_input_ids=batch["decoder_input_ids"].to(device)).logits
    labels = batch["labels"].to(device)
    loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                           label_smoothing=smoothing)
    return loss, int((labels != IGNORE).sum())
