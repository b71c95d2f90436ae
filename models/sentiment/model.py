"""Sentiment model and tokenizer builders (a tiny random BERT, or a user's checkpoint directory: `--base-model`),
and the head+tail truncation both training and serving use.

Long IMDB reviews put the verdict at the start and the end, so over-long inputs keep their first
`head_tokens` and their last `max_length − 2 − head_tokens` tokens (Sun et al. 2019, "How to fine-tune
BERT for text classification"). Training and serving must truncate identically; both call
`encode_head_tail` with the `preprocessing` section of the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from models.core.loading import CheckpointError, checkpoint_dir
from models.sentiment.encoders import DROPOUT_FIELDS, DropoutRates, dropout_overrides, output_layer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _label_maps(labels: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    return dict(enumerate(labels)), {label: i for i, label in enumerate(labels)}


def load_pretrained_classifier(
    path: Path | str, labels: Sequence[str], dropout: float | None = None, attention_dropout: float | None = None
) -> PreTrainedModel:
    """A pretrained sequence classifier (BERT, RoBERTa, DistilBERT with the fast MC path; any other
    `AutoModelForSequenceClassification` on the generic path) from a local checkpoint directory, for `labels`.

    `dropout` overrides every dropout rate its config has (None keeps the checkpoint's); `attention_dropout` then
    overrides the attention-probability rate alone. The head is re-initialised when the checkpoint's labels are not
    `labels` (same names in the same order), kept otherwise. Raises CheckpointError naming the directory: no such
    directory, no config, no safetensors weights (pickle-only checkpoints are refused), no dropout to use.
    """
    path = checkpoint_dir(path)
    config = AutoConfig.from_pretrained(path, local_files_only=True)  # nosec B615 - a local directory
    overrides: dict[str, float] = {}
    if dropout is not None:
        attention = dropout if attention_dropout is None else attention_dropout
        overrides = dropout_overrides(config, dropout, attention)
    elif attention_dropout is not None:
        overrides = {k: v for k, v in dropout_overrides(config, 0.0, attention_dropout).items()
                     if k in DROPOUT_FIELDS["attention"]}
    id2label, label2id = _label_maps(labels)
    theirs = [str(config.id2label[i]) for i in range(config.num_labels)] if config.id2label else []
    # `path` is a local directory, never a Hub id, so bandit's B615 (Hub download without a pinned revision) is a
    # false positive; local_files_only makes it a guarantee.
    try:
        model = AutoModelForSequenceClassification.from_pretrained(  # nosec B615
            str(path), num_labels=len(labels), id2label=id2label, label2id=label2id, use_safetensors=True,
            local_files_only=True, ignore_mismatched_sizes=True, **overrides)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot load a sequence classifier: {exc}") from exc
    if theirs != list(labels):
        layer = output_layer(model)  # a head for other labels (or none: a base encoder) starts afresh
        nn.init.normal_(layer.weight, std=float(getattr(model.config, "initializer_range", 0.02)))
        nn.init.zeros_(layer.bias)
    if not DropoutRates.of(model).any:
        raise CheckpointError(f"{path}: {type(model).__name__} has no dropout and its config no dropout field to "
                              "set; MC dropout would report zero uncertainty")
    return model


def build_tiny_classifier(
    vocab_size: int,
    labels: Sequence[str],
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    dropout: float = 0.1,
    max_positions: int = 512,
    seed: int = 0,
) -> BertForSequenceClassification:
    """A randomly initialised small BERT classifier (tests and the `tiny` preset)."""
    id2label, label2id = _label_maps(labels)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        classifier_dropout=dropout,
        max_position_embeddings=max_positions,
        num_labels=len(labels),
        id2label=id2label,
        label2id=label2id,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def train_wordpiece_tokenizer(texts: Sequence[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """An uncased BERT-style WordPiece tokenizer trained on `texts` (offline, well under a second)."""
    tokenizer = Tokenizer(WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def head_tail(ids: Sequence[int], budget: int, head_tokens: int) -> tuple[list[int], bool]:
    """Keep the first `head_tokens` and the last `budget − head_tokens` ids when len(ids) > budget.
    Returns (ids, truncated)."""
    if len(ids) <= budget:
        return list(ids), False
    head = min(head_tokens, budget)
    tail = budget - head
    return list(ids[:head]) + (list(ids[-tail:]) if tail else []), True


def encode_head_tail(
    tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], max_length: int, head_tokens: int
) -> list[tuple[list[int], bool]]:
    """Token ids with [CLS] … [SEP], at most `max_length` long, head+tail truncated; plus a truncated flag."""
    if max_length < 3:
        raise ValueError(f"max_length must be >= 3, got {max_length}")
    # verbose=False: the over-length warning is moot, head+tail truncation follows.
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    out = []
    for ids in encoded:
        kept, truncated = head_tail(ids, max_length - 2, head_tokens)
        out.append(([tokenizer.cls_token_id, *kept, tokenizer.sep_token_id], truncated))
    return out
