"""The OOD ceiling's pieces (training/core/ood_ceiling.py): the line report, the out-of-fold logistic regression
(scores come from fits that never saw the row) and the oracle's unseen-kind refit."""

from __future__ import annotations

import pytest
import torch

from training.core.ood_ceiling import forward_selection, line_report, oracle, out_of_fold_logistic
from training.core.uncertainty_stats import ood_auroc


def test_line_report_flags_at_most_the_rate_of_in_domain_and_counts_each_kind() -> None:
    in_domain = torch.arange(100, dtype=torch.float64)  # the 5 % line flags 95..99
    probes = torch.tensor([200.0, 200.0, 200.0, 10.0, 96.0, 0.0], dtype=torch.float64)
    kinds = ["far", "far", "far", "near", "near", "near"]
    got = line_report(in_domain, probes, kinds, 0.05)
    assert got["flag_rate"]["in_domain"] == pytest.approx(0.05)
    assert got["flag_rate"]["far"] == 1.0 and got["flag_rate"]["near"] == pytest.approx(1 / 3)
    assert got["flag_rate"]["probes"] == pytest.approx(4 / 6)
    assert got["auroc_by_kind"]["far"] == 1.0 and got["auroc_by_kind"]["near"] < 0.5


def test_out_of_fold_scores_do_not_leak_the_row_they_score() -> None:
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(120, 60, generator=gen)  # as many columns as half the rows: in-sample fits memorise
    labels = (torch.rand(120, generator=gen) < 0.5).double()
    assert 0.3 < ood_auroc(out_of_fold_logistic(noise, labels, l2=1e-4), labels) < 0.7
    signal = noise[:, :10].clone()
    signal[:, 0] += 3 * labels  # one informative column among ten
    assert ood_auroc(out_of_fold_logistic(signal, labels, l2=1e-2), labels) > 0.9


def test_the_oracle_flags_the_kinds_it_saw_and_says_what_an_unseen_kind_gets() -> None:
    gen = torch.Generator().manual_seed(1)
    in_domain = torch.randn(200, 2, generator=gen)
    a = torch.randn(60, 2, generator=gen) + torch.tensor([4.0, 0.0])  # shifted along column 0 only
    b = torch.randn(60, 2, generator=gen) + torch.tensor([0.0, 4.0])  # shifted along column 1 only
    got = oracle(torch.cat([in_domain, a, b]), 200, ["a"] * 60 + ["b"] * 60, 0.05)
    assert got["auroc"] > 0.95 and got["flag_rate"]["a"] > 0.8 and got["flag_rate"]["b"] > 0.8
    assert got["flag_rate"]["in_domain"] <= 0.05 and got["columns"] == 2
    # fitted on b alone, the regression looks along column 1: most of a stays under the line
    assert got["unseen_kind_flag_rate"]["a"] < 0.5 and got["unseen_kind_flag_rate"]["b"] < 0.5


def test_forward_selection_picks_the_informative_candidates_before_the_noise() -> None:
    gen = torch.Generator().manual_seed(2)
    in_domain = torch.randn(200, 4, generator=gen)
    a = torch.randn(60, 4, generator=gen) + torch.tensor([0.0, 5.0, 0.0, 0.0])
    b = torch.randn(60, 4, generator=gen) + torch.tensor([0.0, 0.0, 5.0, 0.0])
    columns = torch.cat([in_domain, a, b])  # the last column plays ln(tokens): always in the mix
    mixes = forward_selection(columns, ["noise", "shifts a", "shifts b"], 200, ["a"] * 60 + ["b"] * 60, 0.05)
    assert len(mixes) == 3 and set(mixes[1]["picked"]) == {"shifts a", "shifts b"}
    assert mixes[1]["auroc"] > mixes[0]["auroc"] > 0.7
    assert mixes[1]["flag_rate"]["a"] > 0.8 and mixes[1]["flag_rate"]["b"] > 0.8
