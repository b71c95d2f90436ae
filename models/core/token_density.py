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


def windows(sequences: Sequence[Sequence[int]], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([m, n] every window of n adjacent ids of every sequence, [m] the row of each); shared with the trigram."""
    parts, rows = [], []
    for row, ids in enumerate(sequences):
        t = torch.as_tensor(list(ids), dtype=torch.long)
        if t.numel() >= n:
            parts.append(t.unfold(0, n, 1))
            rows.append(torch.full((t.numel() - n + 1,), row, dtype=torch.long))
    if not parts:
        return torch.zeros((0, n), dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(parts), torch.cat(rows)


def lookup(keys: torch.Tensor, values: torch.Tensor, query: torch.Tensor,
           *more: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """values[i] (as float64) where the sorted `keys`[i] == query, else 0; with `more` value tensors aligned with
    `keys`, the tuple of all of them from one search."""
    if not keys.numel():
        zeros = torch.zeros(query.shape, dtype=torch.float64)
        return (zeros,) * (1 + len(more)) if more else zeros
    at = torch.searchsorted(keys, query).clamp_max(keys.numel() - 1)
    hit = keys[at] == query
    found = tuple(torch.where(hit, v[at].double(), torch.zeros((), dtype=torch.float64)) for v in (values, *more))
    return found if more else found[0]


def row_means(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """The mean of `values` per row index (0 for a row with none), float32 [n_rows]."""
    total = torch.zeros(n_rows, dtype=torch.float64).index_add_(0, rows, values.double())
    n = torch.zeros(n_rows, dtype=torch.float64).index_add_(0, rows, torch.ones_like(values, dtype=torch.float64))
    return (total / n.clamp_min(1.0)).float()


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
        pairs, _ = windows(sequences, 2)
        firsts, seconds = pairs[:, 0], pairs[:, 1]
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
        t, v = self.tensors, self.vocab_size
        pairs, rows = windows(sequences, 2)
        firsts, seconds = pairs[:, 0].clamp(0, v - 1), pairs[:, 1].clamp(0, v - 1)
        pair = lookup(t["keys"], t["counts"], firsts * v + seconds)
        context = t["context"][firsts]
        bigram = torch.where(context > 0, pair / context.clamp_min(1.0), torch.zeros((), dtype=torch.float64))
        unigram = (t["unigram"][seconds] + self.alpha) / (t["unigram"].sum() + self.alpha * v)
        nll = -torch.log(self.lam * bigram + (1.0 - self.lam) * unigram)
        return row_means(nll, rows, len(sequences))


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
