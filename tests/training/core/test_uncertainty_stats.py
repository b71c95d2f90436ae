"""Rank correlation and OOD AUROC tables (training/core/uncertainty_stats.py) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from training.core.uncertainty_stats import correlation_table, ood_auroc, ood_table, pearson, rankdata, spearman


def test_rankdata_averages_ties() -> None:
    assert rankdata(torch.tensor([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_pearson_and_spearman_against_hand_examples() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    # hand-computed: x = 1..5, y = (2, 1, 4, 3, 5): Σdxdy = 8, Σdx² = Σdy² = 10 → 0.8
    y = torch.tensor([2.0, 1.0, 4.0, 3.0, 5.0])
    assert pearson(x, y) == pytest.approx(0.8)
    assert spearman(x, y) == pytest.approx(0.8)
    # monotone but not linear: Spearman 1, Pearson below 1
    assert spearman(x, x.exp()) == pytest.approx(1.0) and pearson(x, x.exp()) < 0.95
    # ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4) → 0.9486832980505138 (= 3 / √10)
    assert spearman(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.arange(4.0)) == pytest.approx(3 / math.sqrt(10))
    assert math.isnan(pearson(torch.ones(3), x[:3]))
    with pytest.raises(ValueError):
        pearson(x, x[:3])


def test_auroc_orientation_and_tables() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert ood_auroc(torch.tensor([0.1, 0.2, 0.3, 0.8, 0.9]), labels) == pytest.approx(1.0)
    assert ood_auroc(torch.tensor([0.9, 0.8, 0.3, 0.2, 0.1]), labels) == pytest.approx(0.0)
    assert math.isnan(ood_auroc(torch.tensor([0.1, 0.2]), torch.tensor([0, 0])))
    # a confidence measure (TP) is negated: low TP on the probes → AUROC 1
    table = ood_table({"tp": torch.tensor([-1.0, -2.0, -1.5, -9.0, -8.0])}, labels,
                      ["in_domain"] * 3 + ["german", "modern"], {"tp": 1})
    assert table["tp"] == {"all": pytest.approx(1.0), "german": pytest.approx(1.0), "modern": pytest.approx(1.0)}
    corr = correlation_table({"d_var": torch.tensor([3.0, 2.0, 1.0])}, torch.tensor([10.0, 20.0, 30.0]), {"d_var": -1})
    assert corr["d_var"]["pearson"] == pytest.approx(-1.0) and corr["d_var"]["expected_sign"] == -1


def test_ood_table_per_kind_on_constructed_scores() -> None:
    # a measure that tells only the german probes apart, and one unrelated to the labels
    kinds = ["in_domain"] * 1000 + ["german"] * 500 + ["modern"] * 500
    labels = torch.tensor([int(k != "in_domain") for k in kinds])
    noise = torch.rand(2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    german_only = noise + torch.tensor([2.0 * (k == "german") for k in kinds], dtype=torch.float64)
    table = ood_table({"german_only": german_only, "random": noise}, labels, kinds, {"german_only": -1, "random": -1})
    assert table["german_only"]["german"] == pytest.approx(1.0)
    assert table["german_only"]["modern"] == pytest.approx(0.5, abs=0.05)
    assert table["german_only"]["all"] == pytest.approx(0.75, abs=0.05)  # half the probes separated, half at chance
    assert all(v == pytest.approx(0.5, abs=0.05) for v in table["random"].values())


def test_ood_auroc_is_rank_based_for_scores_of_any_scale() -> None:
    # Distances and summed log-probabilities go far past 1: a sigmoid-based AUROC would call this 0.5.
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert ood_auroc(torch.tensor([100.0, 250.0, 300.0, 400.0, 900.0]), labels) == 1.0
    assert ood_auroc(torch.tensor([-900.0, -400.0, -300.0, -250.0, -100.0]), labels) == 1.0
    # pairs (positive, negative): 5 beats 1 and ties both 5s (0.5 + 1 + 0.5); 0 beats none
    assert ood_auroc(torch.tensor([5.0, 1.0, 5.0, 5.0, 0.0]), labels) == pytest.approx(2 / 6)
