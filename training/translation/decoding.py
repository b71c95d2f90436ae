"""Deterministic decoding for the translation evaluation: sources encoded as the service encodes them, index
batches longest first, a per-batch cap on new tokens, and `decode` (greedy or beam, dropout off)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from models.core.device import autocast_context
from models.core.padding import pad_ids

if TYPE_CHECKING:
    from training.translation.evaluation import EvalSettings


def encode_sources(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_input_tokens: int) -> list[list[int]]:
    """Token ids with `</s>`, cut to `max_input_tokens` (the last kept token is `</s>`)."""
    eos = tokenizer.eos_token_id
    return [ids if len(ids) <= max_input_tokens else ids[: max_input_tokens - 1] + [eos]
            for ids in tokenizer(list(texts))["input_ids"]]


def batches_by_length(ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Index batches, longest first (little padding; output back in input order by index)."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def new_token_cap(src_len: int, cap: int) -> int:
    """Decode length for a batch whose longest source has `src_len` tokens: 1.5× + 10, at most `cap`
    (a verse's German is rarely 1.5× its English in tokens; an unconverged model stops early)."""
    return min(cap, int(1.5 * src_len) + 10)


def decode(model: nn.Module, ids: Sequence[Sequence[int]], pad_id: int, num_beams: int,
           s: EvalSettings) -> tuple[list[torch.Tensor], float]:
    """Deterministic decodes (generate() rows incl. the start token, trailing pad stripped) in input order,
    and the wall seconds."""
    model.eval()
    out: list[torch.Tensor | None] = [None] * len(ids)
    started = time.perf_counter()
    with torch.inference_mode(), autocast_context(s.device, s.dtype):
        for index in batches_by_length(ids, s.batch_size):
            src, mask = pad_ids([ids[i] for i in index], pad_id)
            gen = model.generate(input_ids=src.to(s.device), attention_mask=mask.to(s.device), num_beams=num_beams,
                                 do_sample=False, max_new_tokens=new_token_cap(src.shape[1], s.max_new_tokens),
                                 use_cache=True)
            for row, i in zip(gen.cpu(), index, strict=True):
                keep = int((row != pad_id).nonzero().max()) + 1 if (row != pad_id).any() else 1
                out[i] = row[:keep]
    return [o for o in out if o is not None], time.perf_counter() - started
