"""The translation report on held-out data (step 2 of training/translation/evaluation.py): the calibrated
serving predictor on the test subset and the out-of-domain probes, each read once.

- greedy predictions at T (scoring mode, as a default request): corpus BLEU/chrF, sentence chrF, PRR and
  risk-coverage of every sequence measure for loss = 1 − chrF/100, Spearman with chrF, and what the
  predictor's own abstain flags did (abstain rate, bad share and mean loss of kept vs abstained verses);
- beam search at T = 0: corpus BLEU/chrF;
- probes at T: OOD AUROC per measure (in-domain side = the test subset) and the probes' abstain rate;
- the sampling mode (`sampling_samples` stochastic decodes per input) on the first `sampling_limit` test
  verses and ⌈limit/3⌉ of each probe kind: PRR, Spearman and OOD AUROC of `sampling_chrf` there;
- NLL and token-level ECE of the test references at τ = 1 and at the fitted τ.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from models.core.calibration import LOW_IS_UNCERTAIN
from training.core.predicting import predict_all, prepare_all
from training.core.scoring import prr
from training.core.sequence_choices import held_out_report, reference_calibration
from training.core.sequence_quality import MEASURES, measure_table, oriented
from training.core.uncertainty_stats import correlation_table, ood_table
from training.translation.evaluation import (
    COLLAPSE_RATIO,
    corpus_quality,
    distinct_output_ratio,
    reference_ids,
    sentence_chrf,
)

if TYPE_CHECKING:
    from training.translation.evaluation import EvalSettings

log = logging.getLogger(__name__)
# uncertainty_stats' sign: +1 when higher means more confident (it should rise with chrF), −1 otherwise.
ORIENTATION = {name: 1 if name in LOW_IS_UNCERTAIN else -1 for name in (*MEASURES, "sampling_chrf")}


def sampling_subset(kinds: Sequence[str], limit: int | None) -> list[int]:
    """Indices of the first `limit` in-domain inputs and the first ⌈limit/3⌉ of each probe kind (all when
    `limit` is None), in order."""
    if limit is None:
        return list(range(len(kinds)))
    per_kind = {k: (limit if k == "in_domain" else math.ceil(limit / 3)) for k in set(kinds)}
    taken: dict[str, int] = {}
    out = []
    for i, k in enumerate(kinds):
        if taken.get(k, 0) < per_kind[k]:
            taken[k] = taken.get(k, 0) + 1
            out.append(i)
    return out


def _sampling(predictor: Any, items: list, kinds: list[str], losses: torch.Tensor, s: EvalSettings) -> dict[str, Any]:
    """The sampling-mode part of the report (module docstring) on `items` (test verses, then probes)."""
    if s.sampling_samples < 2:
        return {"mode": "off"}
    sub = sampling_subset(kinds, s.sampling_limit)
    chosen = [dataclasses.replace(items[i], parameters={**items[i].parameters, "uncertainty_mode": "sampling"})
              for i in sub]
    started = time.perf_counter()
    out = predict_all(predictor, chosen, s.sampling_samples, s.choices.seed + 3, s.choices.batch_size,
                      "test: sampling mode")
    lex = measure_table([p.uncertainty for p in out], ("sampling_chrf",))
    sub_kinds = [kinds[i] for i in sub]
    inside = [j for j, k in enumerate(sub_kinds) if k == "in_domain"]
    quality = 1.0 - losses[[sub[j] for j in inside]]
    labels = torch.tensor([int(k != "in_domain") for k in sub_kinds])
    return {"samples": s.sampling_samples, "seconds": round(time.perf_counter() - started, 2), "inputs": len(sub),
            "probe_counts": {k: sub_kinds.count(k) for k in sorted(set(sub_kinds))},
            "prr": prr(oriented("sampling_chrf", lex["sampling_chrf"][inside]), 1.0 - quality),
            "correlation_with_sentence_chrf": correlation_table({"sampling_chrf": lex["sampling_chrf"][inside]},
                                                                quality, ORIENTATION),
            "ood_auroc": ood_table(lex, labels, sub_kinds, ORIENTATION)}


def report_on_test(predictor: Any, pairs: Sequence[tuple[str, str]], probe_texts: Sequence[str],
                probe_kinds: Sequence[str], s: EvalSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The module docstring's report and the test risk-coverage curves (for the figure)."""
    items, kept = prepare_all(predictor, [p[0] for p in pairs], {})
    sources, references = [pairs[i][0] for i in kept], [pairs[i][1] for i in kept]
    c = s.choices
    quality: dict[str, Any] = {}
    started = time.perf_counter()
    greedy = predict_all(predictor, items, c.mc_samples, c.seed, c.batch_size, "test: greedy decoding + MC scoring")
    quality["greedy"] = {**corpus_quality([g.translation for g in greedy], references), "num_beams": 1,
                         "seconds_with_mc": round(time.perf_counter() - started, 2)}
    started = time.perf_counter()
    beam_items = [dataclasses.replace(item, parameters={**item.parameters, "num_beams": s.num_beams}) for item in items]
    beam = predict_all(predictor, beam_items, 0, c.seed, c.batch_size, f"test: beam-{s.num_beams} decoding")
    quality[f"beam{s.num_beams}"] = {**corpus_quality([b.translation for b in beam], references),
                                     "num_beams": s.num_beams, "seconds": round(time.perf_counter() - started, 2)}
    for name, row in quality.items():
        log.info("test %s: BLEU %.2f, chrF %.2f on %d verses", name, row["bleu"], row["chrf"], len(items))
    hypotheses = [g.translation for g in greedy]
    chrf = sentence_chrf(hypotheses, references)
    losses, bad = 1.0 - chrf / 100.0, (chrf < s.bad_chrf).double()
    held, measures = held_out_report(greedy, losses, bad)
    distinct = distinct_output_ratio(sources, hypotheses)
    if distinct < COLLAPSE_RATIO:
        log.warning("only %.0f%% of distinct sources got distinct translations: the model has collapsed onto a "
                    "few outputs (lower the learning rate or lengthen the warm-up)", 100 * distinct)
    probe_items, probe_kept = prepare_all(predictor, probe_texts, {})
    probes = predict_all(predictor, probe_items, c.mc_samples, c.seed + 1, c.batch_size, "test: OOD probes")
    kinds = ["in_domain"] * len(items) + [probe_kinds[i] for i in probe_kept]
    labels = torch.tensor([int(k != "in_domain") for k in kinds])
    probe_measures = measure_table([p.uncertainty for p in probes])
    every = {name: torch.cat([measures[name], probe_measures[name]]) for name in measures}
    held["abstain"]["probe_abstain_rate"] = (sum(p.abstain for p in probes) / len(probes)) if probes else math.nan
    log.info("test: PRR %s; abstain %s", {k: round(v, 3) for k, v in held["prr"].items()}, held["abstain"])
    metrics = {
        "test_n": len(items), "refused_over_token_limit": len(pairs) - len(items), "quality": quality,
        "sentence_chrf_mean": float(chrf.mean()), "bad_chrf": s.bad_chrf, "bad_share": float(bad.mean()),
        "distinct_output_ratio": distinct, "collapsed": distinct < COLLAPSE_RATIO,
        "examples": [{"source": sources[i], "reference": references[i], "greedy": hypotheses[i],
                      "beam": beam[i].translation} for i in range(min(5, len(items)))],
        "uncertainty": {
            "mc": {"samples": c.mc_samples, "last_k": predictor.last_k, "mode": predictor.describe()["mc"]["mode"],
                   "temperature": predictor.calibration.temperature,
                   "decoded_on": "greedy outputs, default parameters, scoring mode (the serving path)"},
            "prr": held["prr"], "loss": "1 − sentence chrF / 100",
            "correlation_with_sentence_chrf": correlation_table(measures, chrf, ORIENTATION),
            "ood_auroc": ood_table(every, labels, kinds, ORIENTATION),
            "probe_counts": {k: kinds.count(k) for k in sorted(set(kinds))},
            "measure_means": {name: {kind: float(v[torch.tensor([k == kind for k in kinds])].mean())
                                     for kind in sorted(set(kinds))} for name, v in every.items()},
            "sampling": _sampling(predictor, [*items, *probe_items], kinds, losses, s),
        },
        "abstain": held["abstain"],
        "reference_calibration": reference_calibration(
            predictor, [item.input_ids for item in items], reference_ids(predictor, references), c,
            "test: references at τ = 1 and fitted"),
    }
    return metrics, held["curves"]
