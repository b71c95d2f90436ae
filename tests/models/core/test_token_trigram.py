"""The Kneser-Ney token-trigram density behind the "token_trigram" OOD method: its maths against a direct count,
each level a distribution (sums to 1), the count cut-off, ordering of seen and unseen text, malformed saved counts
refused (the detector that serves it: tests/models/core/test_ood.py)."""

import math
from collections import Counter

import pytest
import torch

from models.core.token_trigram import TokenTrigram, problems

CORPUS = [[1, 5, 6, 7, 2], [1, 5, 6, 8, 2], [1, 9, 6, 7, 2], [1, 5, 6, 7, 2]]
VOCAB = 12
D, ALPHA = 0.75, 0.5


def _direct_p3(u: int, v: int, w: int) -> float:
    """p3(w | u, v) of the module docstring, from Counters over CORPUS (no cut-off)."""
    tri = Counter(tuple(s[i:i + 3]) for s in CORPUS for i in range(len(s) - 2))
    pairs = {(b, c) for (_, b, c) in tri}
    cont = Counter(c for (_, c) in pairs)
    p1 = (cont[w] + ALPHA) / (len(pairs) + ALPHA * VOCAB)
    before = Counter((b, c) for (_, b, c) in tri)  # N1+(·vw): distinct u per (v, w)
    mid = sum(n for (b, _), n in before.items() if b == v)
    follow = sum(1 for (b, _) in pairs if b == v)
    p2 = (max(before[(v, w)] - D, 0) + D * follow * p1) / mid if mid else p1
    total = sum(n for (a, b, _), n in tri.items() if (a, b) == (u, v))
    types = sum(1 for (a, b, _) in tri if (a, b) == (u, v))
    return (max(tri[(u, v, w)] - D, 0) + D * types * p2) / total if total else p2


def test_probabilities_match_a_direct_count_and_each_level_sums_to_one() -> None:
    density = TokenTrigram.fit(CORPUS, VOCAB, D, ALPHA, min_count=1)
    every = torch.arange(VOCAB)
    for u, v in ((5, 6), (1, 5), (9, 6), (3, 4)):  # seen contexts, and an unseen one (backs off to p2, then p1)
        got = density._p3(torch.full((VOCAB,), u), torch.full((VOCAB,), v), every)
        assert float(got.sum()) == pytest.approx(1.0, abs=1e-9), (u, v)
        assert got.tolist() == pytest.approx([_direct_p3(u, v, w) for w in range(VOCAB)], rel=1e-9)
    queries = [[1, 5, 6, 7, 2], [1, 9, 6, 8, 2], [1, 11, 10, 3, 2]]
    want = []
    for q in queries:  # first pair by p2 (= p3 with an unseen context), the rest by p3
        terms = [_direct_p3(-1, q[0], q[1])] + [_direct_p3(*q[i:i + 3]) for i in range(len(q) - 2)]
        want.append(-sum(map(math.log, terms)) / len(terms))
    got = density.nll(queries)
    assert got.tolist() == pytest.approx(want, rel=1e-5)
    assert got[0] < got[1] < got[2]  # seen triples < seen tokens in new triples < unseen tokens
    assert density.nll([[4]]).tolist() == [0.0]  # nothing to predict


def test_the_cut_off_drops_rare_trigrams_but_keeps_their_contexts() -> None:
    full, cut = TokenTrigram.fit(CORPUS, VOCAB, min_count=1), TokenTrigram.fit(CORPUS, VOCAB, min_count=2)
    assert cut.tensors["kn3_tri_keys"].numel() < full.tensors["kn3_tri_keys"].numel()
    for name in ("kn3_ctx_counts", "kn3_ctx_types", "kn3_pair_cont", "kn3_cont"):
        assert torch.equal(cut.tensors[name], full.tensors[name]), name
    # a trigram seen once loses its own count: scored lower than before, still above an unseen one
    once, unseen = [[9, 6, 7]], [[9, 6, 3]]
    assert full.nll(once) < cut.nll(once) < cut.nll(unseen)


def test_bad_corpora_and_saved_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TokenTrigram.fit(CORPUS, vocab_size=8)
    with pytest.raises(ValueError, match="no token trigrams"):
        TokenTrigram.fit([[3, 4]], vocab_size=8)
    with pytest.raises(ValueError, match="discount"):
        TokenTrigram.fit(CORPUS, VOCAB, discount=1.0)
    tensors = dict(TokenTrigram.fit(CORPUS, VOCAB).tensors)
    assert problems(tensors) == []
    assert "sorted" in problems({**tensors, "kn3_pair_keys": tensors["kn3_pair_keys"].flip(0)})[0]
    assert problems({**tensors, "kn3_mid": -tensors["kn3_mid"]}) == ["counts must be finite and >= 0"]
    assert "expected" in problems({k: v for k, v in tensors.items() if k != "kn3_follow"})[0]
    assert "int64" in problems({**tensors, "kn3_ctx_keys": tensors["kn3_ctx_keys"].double()})[0]
    assert problems({**tensors, "kn3_tri_keys": torch.tensor([VOCAB ** 3], dtype=torch.long),
                     "kn3_tri_counts": torch.ones(1)}) == ["keys outside the vocabulary"]
