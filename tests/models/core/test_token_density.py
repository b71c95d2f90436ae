"""The token-bigram density behind the "token_bigram" OOD method: its maths against a direct count, unseen text
scores higher than seen text, and malformed saved counts are refused."""

import math
from collections import Counter

import pytest
import torch

from models.core.token_density import TokenBigram, problems

CORPUS = [[1, 5, 6, 7, 2], [1, 5, 6, 8, 2], [1, 9, 6, 7, 2]]


def _direct(ids: list[int], lam: float, alpha: float, vocab: int) -> float:
    pairs = Counter((a, b) for seq in CORPUS for a, b in zip(seq, seq[1:], strict=False))
    context = Counter(a for seq in CORPUS for a in seq[:-1])
    unigram = Counter(t for seq in CORPUS for t in seq)
    total = sum(unigram.values())
    nll = [-math.log(lam * (pairs[(a, b)] / context[a] if context[a] else 0.0)
                     + (1 - lam) * (unigram[b] + alpha) / (total + alpha * vocab)) for a, b in zip(ids, ids[1:],
                                                                                                 strict=False)]
    return sum(nll) / len(nll)


def test_mean_nll_matches_a_direct_count_and_unseen_text_scores_higher() -> None:
    density = TokenBigram.fit(CORPUS, vocab_size=12, lam=0.6, alpha=0.5)
    queries = [[1, 5, 6, 7, 2], [1, 11, 10, 3, 2], [1, 9, 6, 8, 2]]
    got = density.nll(queries)
    assert got.tolist() == pytest.approx([_direct(q, 0.6, 0.5, 12) for q in queries], rel=1e-5)
    assert got[0] < got[2] < got[1]  # seen pairs < seen tokens in a new order < unseen tokens
    assert density.nll([[4]]).tolist() == [0.0]  # nothing to predict


def test_bad_corpora_and_saved_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TokenBigram.fit(CORPUS, vocab_size=8)
    with pytest.raises(ValueError, match="no token pairs"):
        TokenBigram.fit([[3]], vocab_size=8)
    tensors = dict(TokenBigram.fit(CORPUS, vocab_size=12).tensors)
    assert problems(tensors) == []
    assert "sorted" in problems({**tensors, "keys": tensors["keys"].flip(0)})[0]
    assert problems({**tensors, "counts": -tensors["counts"]}) == ["counts must be finite and >= 0"]
    assert "expected" in problems({k: v for k, v in tensors.items() if k != "context"})[0]
    assert "int64" in problems({**tensors, "keys": tensors["keys"].double()})[0]
    assert problems({**tensors, "keys": torch.tensor([0, 200], dtype=torch.long),
                     "counts": torch.ones(2, dtype=torch.float64)}) == ["pair keys outside the vocabulary"]
