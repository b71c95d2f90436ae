"""Validation chrF while training: the learning curve (chrF against training wall-clock) every translation setting
is compared by. Token NLL alone misleads across settings (label smoothing and vocabulary size change it without
changing what a reader gets), so each periodic validation also decodes a fixed set of validation pairs greedily,
as the server does (no forced end), and scores them with sacrebleu's chrF.

Contract: `ChrfCurve(tokenizer, pairs, max_input_tokens, max_new_tokens, batch_size, device)(model) -> chrF`
(corpus chrF, 0..100) of `model`'s greedy outputs for `pairs`; the model is left in the mode it came in.
`decode_greedy(model, input_ids, mask, max_new_tokens)` is the serving predictor's greedy decode, for every
architecture (models/translation/ops.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sacrebleu.metrics import CHRF
from torch import nn

from models.core.padding import pad_ids
from models.translation.ops import ops_for
from training.translation.decoding import batches_by_length, encode_sources


def decode_greedy(model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor,
                  max_new_tokens: int) -> list[list[int]]:
    """Greedy output ids per row, the serving decode of the model's architecture (models/translation/ops.py)."""
    ops = ops_for(model)
    encoded, _ = ops.encode(model, input_ids, mask)
    return ops.decode(model, encoded, max_new_tokens, 1)


class ChrfCurve:
    """Corpus chrF of greedy decodes of fixed validation pairs (module docstring)."""

    def __init__(self, tokenizer: Any, pairs: Sequence[tuple[str, str]], max_input_tokens: int,
                 max_new_tokens: int, batch_size: int, device: torch.device) -> None:
        self.tokenizer, self.device, self.batch_size = tokenizer, device, batch_size
        self.sources = encode_sources(tokenizer, [p[0] for p in pairs], max_input_tokens)
        self.references = [p[1] for p in pairs]
        self.max_new_tokens = max_new_tokens

    def __call__(self, model: nn.Module) -> float:
        if not self.sources:
            return float("nan")
        was_training = model.training
        model.eval()
        hypotheses = [""] * len(self.sources)
        try:
            with torch.no_grad():
                for index in batches_by_length(self.sources, self.batch_size):
                    ids, mask = pad_ids([self.sources[i] for i in index], self.tokenizer.pad_token_id, self.device)
                    # German verses run longer than their English sources, rarely past twice their length.
                    budget = min(self.max_new_tokens, 2 * ids.shape[1] + 8)
                    for i, out in zip(index, decode_greedy(model, ids, mask, budget), strict=True):
                        hypotheses[i] = self.tokenizer.decode(out, skip_special_tokens=True)
        finally:
            model.train(was_training)
        return float(CHRF().corpus_score(hypotheses, [self.references]).score)
