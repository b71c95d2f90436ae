"""Fit, choose and report a model's out-of-distribution detector (models/core/ood.py; docs/architecture.md §4).

`fit_ood(predictor, sets, settings)` → (detector, report), on data each job supplies (`OODSets`):
1. features of every text, from the predictor's own `ood_features` (the deterministic pass the server takes them
   from), at every candidate layer, and the served token ids;
2. statistics of every (method, layer) candidate from the `bank` (training inputs only; token densities: the token
   pairs or triples of `corpus`, every training input when the job gives it, else the bank), and the slope of its
   in-domain `choice` distances on ln(tokens); each is tried with a length term of every fraction in
   `settings.length_fractions` of that slope (0 = the raw distance; only a slope < 0, distance falling with length,
   is corrected; models/core/ood.py says why); with a `teacher` (a sentence embedder), kNN also runs on the
   features mapped onto its space (training/core/ood_teacher.py); with "hybrid" among the methods, the best four
   hidden-state candidates are also mixed with each fitted token density's NLL, and the best two of those mixes
   take, in turn, each other layer's raw kNN distance as a third part (training/core/ood_hybrid.py);
3. the choice: the candidate with the largest AUROC of in-domain `choice` texts (validation) against the `choice`
   probes (validation-side probes; ties: no length term, the lower layer, then the order of `settings.methods`);
   each candidate also reports what a line at `max_flag_rate` of the `choice` texts flags of each probe kind;
4. the flag threshold on the `threshold` texts (validation, disjoint from `choice`): at most `max_flag_rate` of
   them flagged, by construction (models/core/ood.flag_threshold); with `threshold_groups` (e.g. the held-out
   book of each verse), at most that share of EVERY group of `min_group` texts or more (the largest of the
   groups' thresholds): in-domain text varies by source too, and a pooled quantile holds only for the mix of
   sources validation happens to have; and since a new source (a test book) may still differ from all of them,
   the share is the largest of `transfer_fractions` × `max_flag_rate` at which a threshold fitted without each
   group flags at most `max_flag_rate` of it (leave one group out, models/core/ood_methods.transfer_rate);
5. the report, read once on test: AUROC of in-domain test texts against each probe kind for every candidate
   (`table`: probe kind × measure, rounded: every method/layer without the length term, the best hybrid on
   validation, and the chosen one), and
   the chosen detector's flag rate on the test texts and on each probe kind.
Probes are out-of-domain texts labelled by kind; each job builds its own, disjoint from its training text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch

from models.core import ood_extra
from models.core.ood import OODDetector, distances, fit_statistics, flag_threshold, length_adjusted
from models.core.ood_methods import FEATURE_METHODS, group_threshold, length_slope, transfer_rate
from training.core.ood_densities import Density, fit_densities
from training.core.ood_hybrid import Hybrid, hybrids, third_parts
from training.core.ood_sets import OODSets, OODSettings
from training.core.ood_teacher import Features, Rows, projected_sources, regression_rows
from training.core.predicting import prepare_all
from training.core.progress import ProgressLog
from training.core.uncertainty_stats import ood_auroc

log = logging.getLogger(__name__)
THIRD_PART_BASES = 2  # the best two-part mixes on validation that may take a third part


def features_of(predictor: Any, texts: Sequence[str], parameters: dict[str, Any], s: OODSettings,
                phase: str) -> Features:
    """(pooled features [n, d] per layer, token counts [n], the indices of those n texts, their served token ids)
    of the texts `prepare` accepts (refused ones, over the token limit, are left out, and logged)."""
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
    return ({layer: torch.cat(parts)[inverse] if parts else torch.zeros(0) for layer, parts in chunks.items()},
            torch.tensor([item.n_tokens for item in items], dtype=torch.long), kept, [item.input_ids for item in items])


def in_out_auroc(in_domain: torch.Tensor, out: torch.Tensor) -> float:
    """AUROC of `out` (label 1) against `in_domain` (label 0), higher = out of distribution."""
    labels = torch.cat([torch.zeros(len(in_domain)), torch.ones(len(out))])
    return ood_auroc(torch.cat([in_domain, out]), labels)


def by_kind(scores: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
    """The rows of `scores` of each kind (`kinds`, one per row), kinds in first-seen order."""
    return {kind: scores[torch.tensor([k == kind for k in kinds])] for kind in dict.fromkeys(kinds)}


def probe_table(candidates: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Test AUROC as probe kind × measure ("method/layer_j"), the report's table (kinds as rows, plus "all")."""
    kinds = dict.fromkeys(kind for c in candidates.values() for kind in c["test_auroc_by_kind"])
    table = {kind: {name: round(c["test_auroc_by_kind"][kind], 4) for name, c in candidates.items()} for kind in kinds}
    return {**table, "all": {name: round(c["test_auroc"], 4) for name, c in candidates.items()}}


def fit_ood(predictor: Any, sets: OODSets, s: OODSettings) -> tuple[OODDetector, dict[str, Any]]:
    """See module docstring. Raises ValueError when a set is empty."""
    started = time.perf_counter()
    named = {"bank": sets.bank, "choice": sets.choice, "threshold": sets.threshold,
             "choice_probes": sets.choice_probes.texts, "test": sets.test, "test_probes": sets.test_probes.texts}
    if empty := [name for name, texts in named.items() if not texts]:
        raise ValueError(f"OOD sets {empty} are empty")
    extracted = {name: features_of(predictor, texts, sets.parameters, s, f"ood/{name}")
                 for name, texts in named.items()}
    rows = None if sets.teacher is None or "knn_cosine" not in s.methods else regression_rows(
        sets.teacher, sets.bank, extracted["bank"],
        lambda texts: features_of(predictor, texts, sets.parameters, s, "ood/teacher"), s.layers)
    detector, report = fit_from_features(extracted, sets, s, fit_densities(predictor, sets, s), rows)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return detector, report


Extracted = dict[str, Features]  # features_of's output per set name
Source = tuple[str, str, int, int, dict[str, torch.Tensor], dict[str, torch.Tensor]]


def candidate_sources(feats: dict[str, dict[int, torch.Tensor]], s: OODSettings, densities: dict[str, Density],
                      token_nll: dict[str, dict[str, torch.Tensor]], teacher_rows: Rows | None,
                      names: Sequence[str]) -> list[Source]:
    """(name, method, layer, method rank, statistics, raw score of each set in `names`) of every candidate before its
    length term: each feature method × layer on the statistics of `feats["bank"]`, kNN in the teacher's space when
    `teacher_rows` is given, and each fitted token density in `s.methods` (`token_nll`: method → set → mean NLL)."""
    sources: list[Source] = []
    for layer in s.layers:
        for rank, method in enumerate(s.methods):
            if method not in FEATURE_METHODS:
                continue
            stats = fit_statistics(method, feats["bank"][layer])
            sources.append((f"{method}/layer_{layer}", method, layer, rank, stats,
                            {name: distances(method, stats, feats[name][layer], s.k) for name in names}))
    if teacher_rows is not None:  # kNN in the teacher's space, ranked as kNN
        sources += projected_sources(feats, teacher_rows, names, s.layers, s.k, list(s.methods).index("knn_cosine"))
    for method, density in densities.items():
        if method in s.methods:
            sources.append((method, method, 0, list(s.methods).index(method), dict(density.tensors),
                            token_nll[method]))
    return sources


def fit_from_features(extracted: Extracted, sets: OODSets, s: OODSettings, densities: dict[str, Density] | None = None,
                      teacher_rows: Rows | None = None) -> tuple[OODDetector, dict[str, Any]]:
    """Steps 2-5 of the module docstring on `features_of`'s output per set name (bank, choice, ...): what `fit_ood`
    runs after extracting them (an experiment can rerun it on saved features). `densities`: the fitted token
    densities by method (`fit_densities`); `teacher_rows`: the projection's (`regression_rows`)."""
    densities = densities or {}
    named = ("bank", "choice", "threshold", "choice_probes", "test", "test_probes")
    feats = {name: got[0] for name, got in extracted.items()}
    lengths = {name: got[1] for name, got in extracted.items()}
    # kinds and groups of the texts that were kept (a probe over the token limit would be refused with 422)
    choice_kinds = [sets.choice_probes.kinds[i] for i in extracted["choice_probes"][2]]
    test_kinds = [sets.test_probes.kinds[i] for i in extracted["test_probes"][2]]
    groups = [(sets.test_groups or ["in_domain"] * len(sets.test))[i] for i in extracted["test"][2]]
    candidates: dict[str, dict[str, Any]] = {}
    best: tuple[float, float, int, int] | None = None
    # (name, method, layer, length coef, statistics, length-adjusted distance per set, hybrid config)
    chosen: tuple[str, str, int, float, dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]] | None = None
    adjusted: dict[str, tuple[str, dict[str, torch.Tensor]]] = {}  # hidden-state candidates, for the hybrids

    def consider(name: str, method: str, layer: int, rank: int, fraction: float, coef: float,
                 stats: dict[str, torch.Tensor], d: dict[str, torch.Tensor], hybrid: dict[str, Any]) -> None:
        nonlocal best, chosen
        choice_in, choice_out, test_in, test_out = d["choice"], d["choice_probes"], d["test"], d["test_probes"]
        validation = in_out_auroc(choice_in, choice_out)
        candidates[name] = {
            "method": method, "layer": layer, "length_fraction": fraction, "length_coef": coef,
            **({"hybrid": hybrid} if hybrid else {}), "validation_auroc": validation,
            "validation_auroc_by_kind": {kind: in_out_auroc(choice_in, out) for kind, out in
                                         by_kind(choice_out, choice_kinds).items()},
            "test_auroc": in_out_auroc(test_in, test_out),
            "test_auroc_by_kind": {kind: in_out_auroc(test_in, out)
                                   for kind, out in by_kind(test_out, test_kinds).items()},
        }
        line = flag_threshold(choice_in, s.max_flag_rate)  # what a line at 5 % of the choice texts flags of each kind
        candidates[name]["validation_flag_rate_by_kind"] = {
            kind: float((out > line).double().mean()) for kind, out in by_kind(choice_out, choice_kinds).items()}
        key = (validation, -fraction, -layer, -rank)  # ties: no length term, the lower layer, method order
        if best is None or key > best:
            best, chosen = key, (name, method, layer, coef, stats, d, hybrid)

    feature_stats: dict[str, dict[str, torch.Tensor]] = {}  # of each hidden-state candidate, for the hybrids
    token_nll = {method: {name: density.nll(extracted[name][3]) for name in named[1:]}
                 for method, density in densities.items()}
    knn: dict[int, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}  # raw kNN per layer: third parts
    for base, method, layer, rank, stats, raw in candidate_sources(feats, s, densities, token_nll, teacher_rows,
                                                                   named[1:]):
        if base == f"knn_cosine/layer_{layer}":
            knn[layer] = (stats, raw)
        slope = length_slope(raw["choice"], lengths["choice"])  # in-domain validation texts only
        # Only a distance that falls with length is corrected (the short-input effect); otherwise raw alone.
        for fraction in (s.length_fractions if slope < 0 else (0.0,)):
            coef = fraction * slope if fraction else 0.0
            d = {name: length_adjusted(v, lengths[name].tolist(), coef) for name, v in raw.items()}
            name = base + (f"/length_{fraction:g}" if fraction else "")
            consider(name, method, layer, rank, fraction, coef, stats, d, {})
            if method in FEATURE_METHODS:
                adjusted[name], feature_stats[name] = (method, d), stats
    if "hybrid" in s.methods and adjusted:
        ranked = sorted(adjusted, key=lambda n: -candidates[n]["validation_auroc"])
        def consider_hybrid(h: Hybrid, tensors: dict[str, torch.Tensor]) -> None:
            part = candidates[h.feature]
            consider(h.name, "hybrid", part["layer"], list(s.methods).index("hybrid"), part["length_fraction"],
                     part["length_coef"], tensors, h.distances, h.config)

        two_part: list[tuple[Hybrid, dict[str, torch.Tensor]]] = []
        for method, density in densities.items():
            for h in hybrids(adjusted, ranked, token_nll[method], method):
                two_part.append((h, {**feature_stats[h.feature], **density.tensors}))
                consider_hybrid(*two_part[-1])
        # the best two-part mixes on validation may take a third part: another layer's kNN (ood_hybrid.third_parts)
        two_part.sort(key=lambda m: -candidates[m[0].name]["validation_auroc"])
        raw_knn = {layer: raw for layer, (_, raw) in knn.items()}
        for h, tensors in two_part[:THIRD_PART_BASES]:
            for t in third_parts(h, candidates[h.feature]["layer"], raw_knn):
                consider_hybrid(t, {**tensors, **ood_extra.tensors_of(knn[t.config["extra"]["layer"]][0]["bank"])})
    assert chosen is not None
    name, method, layer, coef, stats, chosen_d, hybrid = chosen
    best_hybrid = max((n for n, c in candidates.items() if "hybrid" in c), default=None,
                      key=lambda n: candidates[n]["validation_auroc"])  # the table shows it beside its parts
    threshold_groups = [(sets.threshold_groups or ["all"] * len(sets.threshold))[i] for i in extracted["threshold"][2]]
    rate, left_out = transfer_rate(chosen_d["threshold"], threshold_groups, s.max_flag_rate, s.min_group,
                                   [round(f * s.max_flag_rate, 6) for f in s.transfer_fractions])
    threshold, group_thresholds = group_threshold(chosen_d["threshold"], threshold_groups, rate, s.min_group)
    density_method = hybrid.get("density", method)
    smoothing = {"token_bigram": {"lam": s.bigram[0], "alpha": s.bigram[1]},
                 "token_trigram": {"discount": s.trigram[0], "alpha": s.trigram[1]}}
    detector = OODDetector(method=method, layer=layer, threshold=threshold, tensors=stats, pooling=s.pooling,
                           k=s.k, length_coef=coef,
                           info={"fitted_on": sets.record, "max_flag_rate": s.max_flag_rate, "flag_rate_target": rate},
                           bigram=smoothing["token_bigram"] if density_method == "token_bigram" else {},
                           trigram=smoothing["token_trigram"] if density_method == "token_trigram" else {},
                           hybrid=hybrid)

    def scored(set_name: str) -> torch.Tensor:  # through the served detector, as a request is scored
        return torch.tensor(detector.score_items(feats[set_name], extracted[set_name][3]))

    flags = {set_name: scored(set_name) > 1.0 for set_name in ("threshold", "test")}
    probe_scores = scored("test_probes")
    probe_flags = by_kind(probe_scores > 1.0, test_kinds)
    test_scores = scored("test")
    by_group = {group: {kind: in_out_auroc(in_scores, out) for kind, out in
                        by_kind(probe_scores, test_kinds).items()}
                for group, in_scores in by_kind(test_scores, groups).items()}
    report = {
        "chosen": {"candidate": name, "method": method, "layer": layer, "pooling": s.pooling, "k": s.k,
                   "length_fraction": candidates[name]["length_fraction"], "length_coef": coef, "threshold": threshold,
                   "validation_auroc": candidates[name]["validation_auroc"],
                   "threshold_by_group": group_thresholds, "flag_rate_target": rate,
                   "left_out_flag_rate_by_group": left_out,
                   "rule": "largest validation AUROC (in-domain choice texts vs choice probes) over method × layer × "
                           "length fraction; the length slope on the in-domain choice texts; threshold: at most "
                           f"{s.max_flag_rate:.0%} of the validation threshold texts flagged"
                           + (f", and of each group of >= {s.min_group} of them, at the largest rate that holds "
                              "for a group left out" if sets.threshold_groups else "")},
        "test": {"auroc_by_kind": candidates[name]["test_auroc_by_kind"], "auroc": candidates[name]["test_auroc"],
                 "auroc_by_in_domain_group_and_kind": by_group,
                 "flag_rate": {"in_domain": float(flags["test"].double().mean()),
                               **{f"in_domain/{g}": float(f.double().mean())
                                  for g, f in by_kind(flags["test"], groups).items()},
                               **{kind: float(f.double().mean()) for kind, f in probe_flags.items()}}},
        "validation_flag_rate": float(flags["threshold"].double().mean()),
        "validation_flag_rate_by_group": {g: float(f.double().mean())
                                          for g, f in by_kind(flags["threshold"], threshold_groups).items()},
        "table": probe_table({n: c for n, c in candidates.items()
                              if n in (name, best_hybrid) or not (c["length_fraction"] or "hybrid" in c)}),
        "candidates": candidates,
        "n": {name: int(next(iter(f.values())).shape[0]) for name, f in feats.items()},
        "probe_kinds": {"choice": sets.choice_probes.counts(), "test": sets.test_probes.counts()},
        "fitted_on": sets.record,
    }
    log.info("OOD: chose %s (validation AUROC %.4f); test AUROC by kind %s; flag rates %s", name,
             report["chosen"]["validation_auroc"], report["test"]["auroc_by_kind"], report["test"]["flag_rate"])
    return detector, report
