"""How far a model's OOD signals could go, read on validation only (`python -m training.ood.ceiling`).

`ceiling(predictor, sets, settings)` scores the in-domain validation texts (`choice` and `threshold` together) and
the validation-side probes (`choice_probes`) with
- every raw candidate an OOD fit tries (training/core/ood_fit.candidate_sources: each hidden-state method × layer,
  kNN in the teacher's space, each token density), before any length term;
- the artifact's served detector, when it has one;
- an **oracle**: an L2 logistic regression over all those scores and ln(tokens), fitted on the probes themselves,
  each text scored by the fit on the other folds (`out_of_fold_logistic`), the L2 weight the best of `L2_GRID`
  on those same folds. It learns the very probe kinds it is scored on, so no served detector can honestly reach
  it: it bounds what any mix of these signals gives, and says whether a flag-rate target is in reach. Fitted
  again without each kind, it also says what a detector trained on probes would flag of a kind it has not seen.
- small mixes (`forward_selection`): the same regression over ln(tokens) and one, two, then three candidates, each
  the one that raises the out-of-fold AUROC most: which few signals carry the oracle's gain.
Each row: AUROC against the probes (all, and per kind) and what the line flagging `max_flag_rate` of the in-domain
texts flags of each probe kind (`line_report`). Test texts are never read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

from models.core.ood_methods import flag_threshold
from training.core.ood_densities import fit_densities
from training.core.ood_fit import by_kind, candidate_sources, features_of, in_out_auroc
from training.core.ood_sets import OODSets, OODSettings
from training.core.ood_teacher import regression_rows
from training.core.uncertainty_stats import ood_auroc

log = logging.getLogger(__name__)
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # per row of the mean loss, on standardised columns
FOLDS = 5
STEPS, SELECTION_L2 = 3, 1e-3  # forward selection: candidates added, the L2 it ranks them at


def line_report(in_domain: torch.Tensor, probes: torch.Tensor, kinds: Sequence[str], rate: float) -> dict[str, Any]:
    """AUROC of `probes` (kind per row) against `in_domain`, overall and per kind, and the share of each kind (and of
    all probes, and of `in_domain`: at most `rate` by construction) above the line flagging `rate` of `in_domain`."""
    line = flag_threshold(in_domain, rate)
    kinds_of = by_kind(probes, kinds)
    return {
        "auroc": in_out_auroc(in_domain.double(), probes.double()),
        "auroc_by_kind": {kind: in_out_auroc(in_domain.double(), out.double()) for kind, out in kinds_of.items()},
        "flag_rate": {"in_domain": float((in_domain > line).double().mean()),
                      **{kind: float((out > line).double().mean()) for kind, out in kinds_of.items()},
                      "probes": float((probes > line).double().mean())},
    }


Fit = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # column mean, column std, weights, bias


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float) -> Fit:
    """An L2 logistic regression of `y` (0/1) on the columns of `x` [n, p], standardised on these rows."""
    x, y = x.double(), y.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-12)
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w * w).sum()
        value.backward()
        return value

    optimiser.step(loss)
    return mean, std, w.detach(), b.detach()


def log_odds(fit: Fit, x: torch.Tensor) -> torch.Tensor:
    """The fitted log-odds of `y` = 1 for each row of `x`."""
    mean, std, w, b = fit
    return ((x.double() - mean) / std) @ w + b


def out_of_fold_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, folds: int = FOLDS,
                         seed: int = 0) -> torch.Tensor:
    """Log-odds of each row of `x` from `fit_logistic` on the other `folds` - 1 folds (rows dealt at random)."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    out = torch.zeros(len(x), dtype=torch.float64)
    for held in order.chunk(folds):
        train = torch.ones(len(x), dtype=torch.bool)
        train[held] = False
        out[held] = log_odds(fit_logistic(x[train], y[train], l2), x[held])
    return out


def oracle(columns: torch.Tensor, n_in: int, kinds: Sequence[str], rate: float) -> dict[str, Any]:
    """`line_report` of the out-of-fold logistic scores of `columns` (the first `n_in` rows in domain, then the
    probes), at the L2 weight of `L2_GRID` whose out-of-fold AUROC is largest; and `unseen_kind_flag_rate`: for each
    kind, fitted without that kind's probes (in-domain rows out of fold), the share of it above the line flagging
    `rate` of the in-domain rows: what training on probe kinds gives a kind it has not seen."""
    y = torch.cat([torch.zeros(n_in), torch.ones(len(columns) - n_in)])
    best: tuple[float, float, torch.Tensor] | None = None
    for l2 in L2_GRID:
        scores = out_of_fold_logistic(columns, y, l2)
        auroc = ood_auroc(scores, y)
        log.info("ood/ceiling: oracle at L2 %g: out-of-fold AUROC %.4f", l2, auroc)
        if best is None or auroc > best[0]:
            best = (auroc, l2, scores)
    assert best is not None
    l2 = best[1]
    unseen = {}
    for kind in dict.fromkeys(kinds):
        held = torch.cat([torch.zeros(n_in, dtype=torch.bool), torch.tensor([k == kind for k in kinds])])
        rest, rest_y = columns[~held], y[~held]
        line = flag_threshold(out_of_fold_logistic(rest, rest_y, l2)[:n_in], rate)
        unseen[kind] = float((log_odds(fit_logistic(rest, rest_y, l2), columns[held]) > line).double().mean())
    return {**line_report(best[2][:n_in], best[2][n_in:], kinds, rate), "l2": l2, "columns": columns.shape[1],
            "unseen_kind_flag_rate": unseen}


def forward_selection(columns: torch.Tensor, names: Sequence[str], n_in: int, kinds: Sequence[str], rate: float,
                      steps: int = STEPS) -> list[dict[str, Any]]:
    """Small mixes: starting from ln(tokens) (the last column), `steps` times add the candidate (`names`, the other
    columns) whose out-of-fold logistic AUROC at L2 `SELECTION_L2` is largest; each step's mix as `oracle` reports
    it, with "picked" (the candidates so far). A served detector mixes few parts: this says which few carry the
    oracle's gain, and what they would flag."""
    y = torch.cat([torch.zeros(n_in), torch.ones(len(columns) - n_in)])
    length, picked, out = columns.shape[1] - 1, [], []
    for _ in range(min(steps, len(names))):
        def auroc(j: int) -> float:
            return ood_auroc(out_of_fold_logistic(columns[:, [*picked, j, length]], y, SELECTION_L2), y)

        picked.append(max((j for j in range(len(names)) if j not in picked), key=auroc))
        out.append({"picked": [names[j] for j in picked],
                    **oracle(columns[:, [*picked, length]], n_in, kinds, rate)})
        log.info("ood/ceiling: mix of %s: out-of-fold AUROC %.4f", out[-1]["picked"], out[-1]["auroc"])
    return out


def ceiling(predictor: Any, sets: OODSets, s: OODSettings) -> dict[str, Any]:
    """The module docstring's table: {"rows": {name: line_report}, "oracle", "served", "n", "rate"}."""
    names = ("choice", "threshold", "choice_probes")
    texts = {"bank": sets.bank, "choice": sets.choice, "threshold": sets.threshold,
             "choice_probes": sets.choice_probes.texts}
    if empty := [name for name, got in texts.items() if not got]:
        raise ValueError(f"OOD sets {empty} are empty")
    extracted = {name: features_of(predictor, got, sets.parameters, s, f"ood/ceiling/{name}")
                 for name, got in texts.items()}
    feats = {name: got[0] for name, got in extracted.items()}
    rows = None if sets.teacher is None or "knn_cosine" not in s.methods else regression_rows(
        sets.teacher, sets.bank, extracted["bank"],
        lambda more: features_of(predictor, more, sets.parameters, s, "ood/ceiling/teacher"), s.layers)
    densities = fit_densities(predictor, sets, s)
    token_nll = {method: {name: density.nll(extracted[name][3]) for name in names}
                 for method, density in densities.items()}
    kinds = [sets.choice_probes.kinds[i] for i in extracted["choice_probes"][2]]

    def joined(scores: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([scores["choice"], scores["threshold"]]).double(), scores["choice_probes"].double()

    report: dict[str, Any] = {"rows": {}, "rate": s.max_flag_rate}
    columns = []
    for name, _, _, _, _, raw in candidate_sources(feats, s, densities, token_nll, rows, names):
        in_domain, probes = joined(raw)
        report["rows"][name] = line_report(in_domain, probes, kinds, s.max_flag_rate)
        columns.append(torch.cat([in_domain, probes]))
    lengths = torch.cat([extracted[name][1] for name in names]).double()
    columns.append(lengths.clamp_min(1).log())
    detector = getattr(predictor, "ood", None)
    if detector is not None:  # the served score, as a request is scored
        served = {name: torch.tensor(detector.score_items(feats[name], extracted[name][3])) for name in names}
        report["served"] = line_report(*joined(served), kinds, s.max_flag_rate)
    n_in = len(extracted["choice"][2]) + len(extracted["threshold"][2])
    stacked = torch.stack(columns, 1)
    report["oracle"] = oracle(stacked, n_in, kinds, s.max_flag_rate)
    report["mixes"] = forward_selection(stacked, list(report["rows"]), n_in, kinds, s.max_flag_rate)
    report["n"] = {"in_domain": n_in, "probes": len(kinds), "candidates": len(report["rows"])}
    log.info("ood/ceiling: oracle AUROC %.4f, flags %s", report["oracle"]["auroc"], report["oracle"]["flag_rate"])
    return report


def markdown(report: dict[str, Any], top: int = 10) -> str:
    """The oracle, the small mixes, the served detector and the `top` candidates by AUROC, one row each; under the
    oracle and each mix, what it flags of each kind when that kind is left out of its fit."""
    rows = sorted(report["rows"].items(), key=lambda item: -item[1]["auroc"])[:top]
    named = [("oracle (fitted on these probes)", report["oracle"])]
    named += [(f"mix of {' + '.join(mix['picked'])} + ln(tokens)", mix) for mix in report.get("mixes", [])]
    named += [("served detector", report["served"])] if "served" in report else []
    named += rows
    kinds = [k for k in report["oracle"]["flag_rate"] if k not in ("in_domain", "probes")]
    lines = [f"Flag rates at the line flagging {report['rate']:.0%} of {report['n']['in_domain']} in-domain "
             f"validation texts; {report['n']['probes']} validation probes.", "",
             f"| score | AUROC | in domain | {' | '.join(kinds)} | all probes |", "|" + "---|" * (len(kinds) + 4)]
    for name, row in named:
        flags = row["flag_rate"]
        cells = [f"{row['auroc']:.4f}" if not math.isnan(row["auroc"]) else "nan", f"{flags['in_domain']:.3f}",
                 *(f"{flags[k]:.3f}" for k in kinds), f"{flags['probes']:.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if unseen := row.get("unseen_kind_flag_rate"):
            lines.append("| ↳ each kind left out of the fit | | | " + " | ".join(f"{unseen[k]:.3f}" for k in kinds)
                         + f" | {sum(unseen.values()) / len(unseen):.3f} (mean) |")
    return "\n".join(lines)
