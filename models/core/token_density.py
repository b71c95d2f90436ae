"""A token-bigram density of the training inputs: the out-of-distribution method "token_bigram" (models/core/ood.py).

Hidden states say what an input means to the model; how its tokens follow each other says what kind of text it
is. A text unlike the training inputs (another register, another language, another century) uses token pairs the
training text rarely used, so its mean per-token negative log-likelihood under a bigram model of the training
inputs is high. The model is the classic interpolated one (Jelinek & Mercer 1980):
    p(b | a) = λ · count(a, b) / count(a, ·) + (1 − λ) · (count(b) + α) / (N + α · V),
over the served token ids (the tokenizer's own ids, special tokens included, so the start and end pairs count).
Only counts are stored (safetensors, no pickle): the sorted pair keys a · V + b (int64) with their counts, the
unigram counts [V] and the context counts [V]. Fitting and scoring are vectorised (`torch.searchsorted`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

TENSORS = ("keys", "counts", "unigram", "context")


def _pairs(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first ids, second ids, row of each pair) of every adjacent pair of every sequence."""
    firsts, seconds, rows = [], [], []
    for row, ids in enumerate(sequences):
        ids = list(ids)
        firsts.extend(ids[:-1])
        seconds.extend(ids[1:])
        rows.extend([row] * max(0, len(ids) - 1))
    as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return as_long(firsts), as_long(seconds), as_long(rows)


@dataclass(frozen=True)
class TokenBigram:
    """Counts of one fit (module docstring) and its smoothing."""

    tensors: Mapping[str, torch.Tensor]
    lam: float = 0.7
    alpha: float = 0.5

    @classmethod
    def fit(cls, sequences: Sequence[Sequence[int]], vocab_size: int, lam: float = 0.7,
            alpha: float = 0.5) -> TokenBigram:
        """Count the token pairs of `sequences` (ids < `vocab_size`). Raises ValueError for an empty corpus or an
        id outside the vocabulary."""
        if not 0.0 <= lam < 1.0 or alpha <= 0.0:
            raise ValueError(f"need 0 <= lam < 1 and alpha > 0, got {lam}, {alpha}")
        firsts, seconds, _ = _pairs(sequences)
        tokens = torch.tensor([t for ids in sequences for t in ids], dtype=torch.long)
        if not firsts.numel():
            raise ValueError("no token pairs to fit a bigram density on")
        if int(tokens.max()) >= vocab_size or int(tokens.min()) < 0:
            raise ValueError(f"token ids outside the vocabulary of {vocab_size}")
        keys, counts = torch.unique(firsts * vocab_size + seconds, return_counts=True)  # sorted
        return cls({"keys": keys, "counts": counts.double(),
                    "unigram": torch.bincount(tokens, minlength=vocab_size).double(),
                    "context": torch.bincount(firsts, minlength=vocab_size).double()}, lam, alpha)

    @property
    def vocab_size(self) -> int:
        return int(self.tensors["unigram"].shape[0])

    def nll(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """Mean negative log-likelihood per predicted token of each sequence, float32 [B] (0 for a sequence of
        fewer than two tokens: nothing to predict). Ids outside the vocabulary count as unseen tokens."""
        t = self.tensors
        firsts, seconds, rows = _pairs(sequences)
        v = self.vocab_size
        firsts, seconds = firsts.clamp(0, v - 1), seconds.clamp(0, v - 1)
        keys = t["keys"].to(firsts.device)
        query = firsts * v + seconds
        at = torch.searchsorted(keys, query).clamp_max(max(0, keys.numel() - 1))
        found = keys[at] == query if keys.numel() else torch.zeros_like(query, dtype=torch.bool)
        pair = torch.where(found, t["counts"][at], torch.zeros((), dtype=torch.float64))
        context = t["context"][firsts]
        bigram = torch.where(context > 0, pair / context.clamp_min(1.0), torch.zeros((), dtype=torch.float64))
        unigram = (t["unigram"][seconds] + self.alpha) / (t["unigram"].sum() + self.alpha * v)
        nll = -torch.log(self.lam * bigram + (1.0 - self.lam) * unigram)
        total = torch.zeros(len(sequences), dtype=torch.float64).index_add_(0, rows, nll)
        n = torch.zeros(len(sequences), dtype=torch.float64).index_add_(0, rows, torch.ones_like(nll))
        return (total / n.clamp_min(1.0)).float()


def problems(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """What is wrong with saved bigram tensors (empty list: usable)."""
    if set(tensors) != set(TENSORS):
        return [f"tensors {sorted(tensors)}, expected {sorted(TENSORS)}"]
    keys, counts, unigram, context = (tensors[name] for name in TENSORS)
    out = []
    if keys.dtype != torch.long or keys.ndim != 1 or counts.shape != keys.shape:
        out.append("keys must be int64 [N] with counts [N]")
    elif keys.numel() > 1 and not bool((keys[1:] > keys[:-1]).all()):
        out.append("keys must be sorted and unique")
    if unigram.ndim != 1 or context.shape != unigram.shape:
        out.append("unigram and context must be [V]")
    if not all(t.is_floating_point() and bool(torch.isfinite(t).all()) and bool((t >= 0).all())
               for t in (counts, unigram, context)):
        out.append("counts must be finite and >= 0")
    if not out and keys.numel() and int(keys.max()) >= unigram.shape[0] ** 2:
        out.append("pair keys outside the vocabulary")
    return out
