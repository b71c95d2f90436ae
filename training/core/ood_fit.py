"""Fit, choose and report a model's out-of-distribution detector (models/core/ood.py; docs/architecture.md §4).

`fit_ood(predictor, sets, settings)` → (detector, report), on data each job supplies (`OODSets`):
1. features of every text, from the predictor's own `ood_features` (the deterministic pass the server takes them
   from), at every candidate layer;
2. statistics of every (method, layer) candidate from the `bank` (training inputs only);
3. the choice: the candidate with the largest AUROC of in-domain `choice` texts (validation) against the `choice`
   probes (validation-side probes; ties: the lower layer, then the order of `settings.methods`);
4. the flag threshold on the `threshold` texts (validation, disjoint from `choice`): at most `max_flag_rate` of
   them flagged, by construction (models/core/ood.flag_threshold);
5. the report, read once on test: AUROC of in-domain test texts against each probe kind for every candidate
   (probe kind × measure), and the chosen detector's flag rate on the test texts and on each probe kind.
Probes are out-of-domain texts labelled by kind; each job builds its own, disjoint from its training text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from models.core.ood import METHODS, OODDetector, distances, fit_statistics, flag_threshold
from training.core.predicting import prepare_all
from training.core.progress import ProgressLog
from training.core.uncertainty_stats import ood_auroc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probes:
    """Out-of-domain texts and, aligned, their kinds ("bible", "news", ...)."""

    texts: list[str]
    kinds: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.kinds):
            raise ValueError(f"{len(self.texts)} probe texts but {len(self.kinds)} kinds")

    def counts(self) -> dict[str, int]:
        return {kind: self.kinds.count(kind) for kind in dict.fromkeys(self.kinds)}


@dataclass(frozen=True)
class OODSets:
    """Texts of one fit (module docstring); `record` says where each set came from, for the manifest."""

    bank: list[str]
    choice: list[str]
    threshold: list[str]
    choice_probes: Probes
    test: list[str]
    test_probes: Probes
    parameters: dict[str, Any] = field(default_factory=dict)  # `prepare` parameters (sentiment: none)
    record: dict[str, Any] = field(default_factory=dict)
    test_groups: list[str] | None = None  # aligned with `test`: in-domain kinds reported apart ("review", "snippet")


@dataclass(frozen=True)
class OODSettings:
    """Candidates and limits: hidden-state `layers`, `methods`, the kNN's `k`, the pooling, the flag rate."""

    layers: Sequence[int]
    methods: Sequence[str] = METHODS
    k: int = 10
    pooling: str = "mean"
    max_flag_rate: float = 0.05
    batch_size: int = 32


def features_of(predictor: Any, texts: Sequence[str], parameters: dict[str, Any], s: OODSettings,
                phase: str) -> dict[int, torch.Tensor]:
    """Pooled features [n, d] per layer of the texts `prepare` accepts (refused ones are left out, and logged)."""
    items, kept = prepare_all(predictor, texts, parameters)
    if len(kept) < len(texts):
        log.info("%s: %d of %d texts refused by prepare (over the token limit), left out", phase,
                 len(texts) - len(kept), len(texts))
    order = sorted(range(len(items)), key=lambda i: items[i].n_tokens)  # similar lengths: little padding
    chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in s.layers}
    with ProgressLog(phase, len(items)) as progress:
        for start in range(0, len(order), s.batch_size):
            index = order[start: start + s.batch_size]
            got = predictor.ood_features([items[i] for i in index], list(s.layers), s.pooling)
            for layer in s.layers:
                chunks[layer].append(got[layer].float().cpu())
            progress.update(len(index))
    inverse = torch.argsort(torch.tensor(order)) if order else torch.zeros(0, dtype=torch.long)
    return {layer: torch.cat(parts)[inverse] if parts else torch.zeros(0) for layer, parts in chunks.items()}


def _auroc(in_domain: torch.Tensor, out: torch.Tensor) -> float:
    labels = torch.cat([torch.zeros(len(in_domain)), torch.ones(len(out))])
    return ood_auroc(torch.cat([in_domain, out]), labels)


def _by_kind(scores: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
    return {kind: scores[torch.tensor([k == kind for k in kinds])] for kind in dict.fromkeys(kinds)}


def fit_ood(predictor: Any, sets: OODSets, s: OODSettings) -> tuple[OODDetector, dict[str, Any]]:
    """See module docstring. Raises ValueError when a set is empty."""
    started = time.perf_counter()
    named = {"bank": sets.bank, "choice": sets.choice, "threshold": sets.threshold,
             "choice_probes": sets.choice_probes.texts, "test": sets.test, "test_probes": sets.test_probes.texts}
    empty = [name for name, texts in named.items() if not texts]
    if empty:
        raise ValueError(f"OOD sets {empty} are empty")
    feats = {name: features_of(predictor, texts, sets.parameters, s, f"ood/{name}") for name, texts in named.items()}
    candidates: dict[str, dict[str, Any]] = {}
    best: tuple[float, int, int] | None = None
    chosen: tuple[str, int, dict[str, torch.Tensor]] | None = None
    for layer in s.layers:
        for rank, method in enumerate(s.methods):
            stats = fit_statistics(method, feats["bank"][layer])

            def score(name: str, method: str = method, stats: dict = stats, layer: int = layer) -> torch.Tensor:
                return distances(method, stats, feats[name][layer], s.k)

            choice_in, choice_out = score("choice"), score("choice_probes")
            test_in, test_out = score("test"), score("test_probes")
            validation = _auroc(choice_in, choice_out)
            candidates[f"{method}/layer_{layer}"] = {
                "method": method, "layer": layer, "validation_auroc": validation,
                "validation_auroc_by_kind": {kind: _auroc(choice_in, out) for kind, out in
                                             _by_kind(choice_out, sets.choice_probes.kinds).items()},
                "test_auroc": _auroc(test_in, test_out),
                "test_auroc_by_kind": {kind: _auroc(test_in, out) for kind, out in
                                       _by_kind(test_out, sets.test_probes.kinds).items()},
            }
            key = (validation, -layer, -rank)
            if best is None or key > best:
                best, chosen = key, (method, layer, stats)
    assert chosen is not None
    method, layer, stats = chosen
    threshold = flag_threshold(distances(method, stats, feats["threshold"][layer], s.k), s.max_flag_rate)
    detector = OODDetector(method=method, layer=layer, threshold=threshold, tensors=stats, pooling=s.pooling,
                           k=s.k, info={"fitted_on": sets.record, "max_flag_rate": s.max_flag_rate})
    flags = {name: torch.tensor(detector.scores(feats[name][layer])) > 1.0 for name in ("threshold", "test")}
    probe_scores = torch.tensor(detector.scores(feats["test_probes"][layer]))
    probe_flags = _by_kind(probe_scores > 1.0, sets.test_probes.kinds)
    groups = sets.test_groups or ["in_domain"] * len(sets.test)
    kept_groups = groups if len(groups) == len(flags["test"]) else ["in_domain"] * len(flags["test"])
    test_scores = torch.tensor(detector.scores(feats["test"][layer]))
    by_group = {group: {kind: _auroc(in_scores, out) for kind, out in
                        _by_kind(probe_scores, sets.test_probes.kinds).items()}
                for group, in_scores in _by_kind(test_scores, kept_groups).items()}
    report = {
        "chosen": {"method": method, "layer": layer, "pooling": s.pooling, "k": s.k, "threshold": threshold,
                   "validation_auroc": candidates[f"{method}/layer_{layer}"]["validation_auroc"],
                   "rule": "largest validation AUROC (in-domain choice texts vs choice probes); threshold: at most "
                           f"{s.max_flag_rate:.0%} of the validation threshold texts flagged"},
        "test": {"auroc_by_kind": candidates[f"{method}/layer_{layer}"]["test_auroc_by_kind"],
                 "auroc": candidates[f"{method}/layer_{layer}"]["test_auroc"],
                 "auroc_by_in_domain_group_and_kind": by_group,
                 "flag_rate": {"in_domain": float(flags["test"].double().mean()),
                               **{f"in_domain/{g}": float(f.double().mean())
                                  for g, f in _by_kind(flags["test"], kept_groups).items()},
                               **{kind: float(f.double().mean()) for kind, f in probe_flags.items()}}},
        "validation_flag_rate": float(flags["threshold"].double().mean()),
        "candidates": candidates,
        "n": {name: int(next(iter(f.values())).shape[0]) for name, f in feats.items()},
        "probe_kinds": {"choice": sets.choice_probes.counts(), "test": sets.test_probes.counts()},
        "fitted_on": sets.record,
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("OOD: chose %s at layer %d (validation AUROC %.4f); test AUROC by kind %s; flag rates %s", method, layer,
             report["chosen"]["validation_auroc"], report["test"]["auroc_by_kind"], report["test"]["flag_rate"])
    return detector, report
