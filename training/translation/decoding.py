"""Source encoding and length batching for translation training: sources encoded as the service encodes them
(`</s>` last) and index batches longest first. Evaluation decodes through the serving predictor
(training/translation/evaluation.py), not here."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


def encode_sources(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_input_tokens: int) -> list[list[int]]:
    """Token ids with `</s>`, cut to `max_input_tokens` (the last kept token is `</s>`)."""
    eos = tokenizer.eos_token_id
    return [ids if len(ids) <= max_input_tokens else ids[: max_input_tokens - 1] + [eos]
            for ids in tokenizer(list(texts))["input_ids"]]


def batches_by_length(ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Index batches, longest first (little padding; output back in input order by index)."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def encode_targets(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Target token ids (`text_target`: opus-mt's MarianTokenizer has its own target sentencepiece model; one joint
    tokenizer encodes both sides alike) with `</s>`, cut to `max_tokens` as `encode_sources` cuts."""
    eos = tokenizer.eos_token_id
    return [ids if len(ids) <= max_tokens else ids[: max_tokens - 1] + [eos]
            for ids in tokenizer(text_target=list(texts))["input_ids"]]
