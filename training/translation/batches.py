"""Translation training batches: fixed subsets, (source, target) collation for teacher forcing, length-grouped
pair batches (with token dropout and BPE-dropout), and the label-smoothed token loss."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from models.core.loading import CheckpointError
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


Resegment = Callable[[Sequence[int]], tuple[list[list[int]], list[list[int]]]]


class PairBatches(LengthGroupedBatches):
    """LengthGroupedBatches over (source ids, target ids) pairs (grouped by source length) yielding
    `collate_pairs` dicts. With `resegment` (BPE-dropout: `bpe_dropout_encoder`) each batch's pairs are encoded
    afresh from their indices; the grouping keeps the plain segmentation's lengths, so the batch order stays a
    function of (seed, epoch) on every rank. With `token_dropout` each batch's sources then have that share of
    their tokens replaced by `unk_id`, drawn from (seed, epoch, batch number) so a run is reproducible."""

    def __init__(self, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], batch_size: int,
                 pad_id: int, start_id: int, seed: int, token_dropout: float = 0.0, unk_id: int = 3,
                 resegment: Resegment | None = None) -> None:
        super().__init__(sources, targets, batch_size, pad_id, seed)  # type: ignore[arg-type]
        if not 0.0 <= token_dropout < 1.0:
            raise ValueError(f"token_dropout must be in [0, 1), got {token_dropout}")
        self.start_id, self.token_dropout, self.unk_id, self.resegment = start_id, token_dropout, unk_id, resegment

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:  # type: ignore[override]
        for number, index in enumerate(self.batch_indices()):
            if self.resegment is not None:
                sources, targets = self.resegment(index)
            else:
                sources, targets = [self.ids[i] for i in index], [self.labels[i] for i in index]
            if self.token_dropout:
                rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{number}")
                sources = [drop_tokens(ids, self.token_dropout, self.unk_id, rng) for ids in sources]
            yield collate_pairs(sources, targets, self.pad_id, self.start_id)  # type: ignore[arg-type]


def encode_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]],
                 config: TranslationConfig) -> tuple[list[list[int]], list[list[int]]]:
    return (encode_sources(tokenizer, [p[0] for p in pairs], config.max_input_tokens),
            encode_targets(tokenizer, [p[1] for p in pairs], config.max_target_tokens))


def bpe_dropout_encoder(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]],
                        config: TranslationConfig) -> Resegment:
    """Pair indices → (source ids, target ids) segmented by a copy of `tokenizer` that skips each BPE merge with
    chance `config.bpe_dropout`, cut as `encode_pairs` cuts. CheckpointError when the tokenizer is not a fast BPE
    one (a --base-model's SentencePiece unigram has no merges to drop), before any training step."""
    noisy = copy.deepcopy(tokenizer)  # the served tokenizer keeps segmenting deterministically
    backend = getattr(noisy, "backend_tokenizer", None)
    if backend is None or type(backend.model).__name__ != "BPE":
        kind = type(backend.model).__name__ if backend is not None else type(tokenizer).__name__
        raise CheckpointError(f"--bpe-dropout needs a byte-pair-encoding tokenizer; this one is {kind}: "
                              "train without it, or from scratch with the job's own BPE")
    backend.model.dropout = config.bpe_dropout

    def encode(index: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
        return encode_pairs(noisy, [pairs[i] for i in index], config)
    return encode


def token_loss(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device,
               smoothing: float) -> tuple[torch.Tensor, int]:
    """Mean label-smoothed cross-entropy per target token (float32 logits), and the token count."""
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                   decoder_input_ids=batch["decoder_input_ids"].to(device)).logits
    labels = batch["labels"].to(device)
    loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                           label_smoothing=smoothing)
    return loss, int((labels != IGNORE).sum())
