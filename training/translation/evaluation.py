"""Evaluation of a trained translation model on a fixed subset of the held-out test books.

1. quality: greedy and beam decoding (`model.generate(..., use_cache=True)`, dropout off), corpus sacreBLEU
   BLEU and chrF against the references, wall seconds per mode;
2. the uncertainty report, on the greedy outputs of the test subset and of an out-of-domain probe set
   (training/translation/probes.py): each output is scored under T dropout masks by a `Scorer` (the serving
   path's batched teacher-forced pass) giving TP, D-TP, D-Var, mean token entropy and MI per sentence;
   TP and D-TP are also reported per output token ("_per_token": a sum favours short outputs). The
   "sampling" mode decodes each input T more times with dropout on and takes the mean pairwise chrF
   ("lex_sim", D-Lex-Sim style) — T uncached decodes per input, so on a fixed sub-subset (`sampling_limit`)
   with its own tables under "sampling";
   - correlation: Pearson and Spearman between sentence chrF (0–100) and each measure on the test subset
     (confidence measures — TP, D-TP, lex_sim — should correlate positively, the others negatively);
   - OOD detection: AUROC of each measure, oriented so that higher means "less sure" (confidence measures
     negated), for in-domain test inputs (0) against probes (1), overall and per probe kind.
3. last-k comparison: the same outputs scored with only the top k decoder layers stochastic (each k of
   `compare_last_k`), with seconds, correlations and AUROCs, against the default (full unless mc_last_k);
4. the abstain rule: on greedy outputs of validation sentences, the threshold on one measure (higher = less
   sure, default mean token entropy) that flags `abstain_rate` of them; the report says what it does on
   the test subset (abstain rate, chrF of kept vs abstained) and on the probes.
A collapse guard: the share of distinct outputs per distinct input (a collapsed model translates every
input the same way) is reported, with a warning below COLLAPSE_RATIO.
When no scorer is available the report holds `"mc": "unavailable"` and no MC numbers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from sacrebleu.metrics import BLEU, CHRF
from torch import nn
from transformers import PreTrainedTokenizerBase

from models.core.device import autocast_context
from models.core.padding import pad_ids
from training.core.uncertainty_stats import correlation_table, ood_table
from training.translation.decoding import batches_by_length, decode, encode_sources, new_token_cap

log = logging.getLogger(__name__)

# (model, src_ids [B, S], src_mask [B, S], out_ids [B, L] (generate() output, decoder start first, pad after
# </s>), mc_samples, seed, last_k) → one dict per row with at least the keys of MEASURE_KEYS.
Scorer = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, int, int, "int | None"], list[dict[str, float]]]
# (model, src_ids, src_mask, samples, seed, max_new_tokens) → per row, `samples` decoded strings
Sampler = Callable[[nn.Module, torch.Tensor, torch.Tensor, int, int, int], list[list[str]]]

MEASURE_KEYS = {"tp": "sequence_log_prob", "d_tp": "mc_log_prob_mean", "d_var": "mc_log_prob_var",
                "entropy": "mean_token_entropy", "mi": "mean_token_mutual_information"}
# +1: higher means more confident (expected to rise with chrF); −1: higher means less sure.
ORIENTATION = {"tp": 1, "tp_per_token": 1, "d_tp": 1, "d_tp_per_token": 1, "d_var": -1, "entropy": -1, "mi": -1,
               "lex_sim": 1}


COLLAPSE_RATIO = 0.5  # below this many distinct outputs per distinct input the report flags a collapse


@dataclass(frozen=True)
class EvalSettings:
    """Decoding and MC settings of the evaluation (from the job's config)."""

    batch_size: int
    max_input_tokens: int
    max_new_tokens: int
    num_beams: int
    mc_samples: int
    mc_last_k: int | None
    sampling_samples: int
    sampling_limit: int | None
    abstain_measure: str
    abstain_rate: float
    compare_last_k: tuple[int, ...]
    seed: int
    device: torch.device
    dtype: str


def corpus_quality(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """sacreBLEU corpus BLEU and chrF (0–100) with their signatures."""
    bleu, chrf = BLEU(), CHRF()
    return {"bleu": bleu.corpus_score(list(hypotheses), [list(references)]).score,
            "chrf": chrf.corpus_score(list(hypotheses), [list(references)]).score,
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def sentence_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> torch.Tensor:
    """Sentence-level chrF (0–100) per pair, float64 [N]."""
    chrf = CHRF()
    scores = [chrf.sentence_score(h, [r]).score for h, r in zip(hypotheses, references, strict=True)]
    return torch.tensor(scores, dtype=torch.float64)


def distinct_output_ratio(sources: Sequence[str], outputs: Sequence[str]) -> float:
    """Distinct outputs per distinct source (1.0 = every different input got a different translation). A
    collapsed model (the same output whatever the input) scores near 1/N."""
    return len(set(outputs)) / max(1, len(set(sources)))


def fit_abstain(values: torch.Tensor, rate: float, measure: str) -> dict[str, Any]:
    """Abstain rule on validation outputs: abstain when `measure` (higher = less sure) exceeds its
    (1 − rate) quantile there, so about `rate` of in-domain inputs are flagged."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"abstain rate must be in (0, 1), got {rate}")
    if ORIENTATION.get(measure, 1) != -1:
        raise ValueError(f"abstain measure must be one where higher means less sure, got {measure!r}")
    threshold = float(torch.quantile(values.double(), 1.0 - rate))
    return {"measure": MEASURE_KEYS[measure], "threshold": threshold, "target_rate": rate,
            "fitted_on": "validation greedy outputs", "fitted_n": int(values.numel())}


def abstain_outcome(values: torch.Tensor, threshold: float, chrf: torch.Tensor, n_in_domain: int) -> dict[str, float]:
    """What the abstain rule does on the test subset (first `n_in_domain` values) and the probes (the rest)."""
    flagged = values > threshold
    inside, probes = flagged[:n_in_domain], flagged[n_in_domain:]
    kept = chrf[~inside]
    return {"in_domain_abstain_rate": float(inside.double().mean()),
            "probe_abstain_rate": float(probes.double().mean()) if probes.numel() else math.nan,
            "chrf_kept": float(kept.mean()) if kept.numel() else math.nan,
            "chrf_abstained": float(chrf[inside].mean()) if bool(inside.any()) else math.nan}


def measures_from_scores(scores: Sequence[dict[str, float]], lengths: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per-sentence measures [N] (float64) from scorer dicts and output token counts."""
    out = {name: torch.tensor([float(s[key]) for s in scores], dtype=torch.float64)
           for name, key in MEASURE_KEYS.items()}
    n = torch.tensor([max(1, k) for k in lengths], dtype=torch.float64)
    out["tp_per_token"], out["d_tp_per_token"] = out["tp"] / n, out["d_tp"] / n
    return out


def mc_measures(model: nn.Module, scorer: Scorer, ids: Sequence[Sequence[int]], outputs: Sequence[torch.Tensor],
                pad_id: int, s: EvalSettings) -> tuple[dict[str, torch.Tensor], float]:
    """Score each (source, output) pair under T masks; returns measures in input order and the seconds."""
    scores: list[dict[str, float] | None] = [None] * len(ids)
    started = time.perf_counter()
    per_batch = max(1, s.batch_size // 2)
    with torch.inference_mode(), autocast_context(s.device, s.dtype):
        for batch_no, index in enumerate(batches_by_length(ids, per_batch)):
            src, mask = pad_ids([ids[i] for i in index], pad_id)
            out, _ = pad_ids([outputs[i].tolist() for i in index], pad_id)
            rows = scorer(model, src.to(s.device), mask.to(s.device), out.to(s.device), s.mc_samples,
                          s.seed + batch_no, s.mc_last_k)
            for row, i in zip(rows, index, strict=True):
                scores[i] = row
    lengths = [int((o != pad_id).sum()) - 1 for o in outputs]  # generated tokens, start token excluded
    return measures_from_scores([x for x in scores if x is not None], lengths), time.perf_counter() - started


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


def lexical_similarity(model: nn.Module, sampler: Sampler, ids: Sequence[Sequence[int]], pad_id: int,
                       s: EvalSettings) -> tuple[torch.Tensor, float]:
    """Mean pairwise chrF (0..1) of `sampling_samples` stochastic decodes per input, and the seconds."""
    from models.core.sequence_uncertainty import mean_pairwise_chrf

    sims = torch.empty(len(ids), dtype=torch.float64)
    started = time.perf_counter()
    with torch.inference_mode(), autocast_context(s.device, s.dtype):
        for batch_no, index in enumerate(batches_by_length(ids, s.batch_size)):
            src, mask = pad_ids([ids[i] for i in index], pad_id)
            texts = sampler(model, src.to(s.device), mask.to(s.device), s.sampling_samples, s.seed + batch_no,
                            new_token_cap(src.shape[1], s.max_new_tokens))
            for hyps, i in zip(texts, index, strict=True):
                sims[i] = mean_pairwise_chrf(list(hyps))
    return sims, time.perf_counter() - started


def compare_last_k(model: nn.Module, scorer: Scorer, ids: Sequence[Sequence[int]], outputs: Sequence[torch.Tensor],
                   pad_id: int, s: EvalSettings, chrf: torch.Tensor, labels: torch.Tensor,
                   kinds: Sequence[str]) -> dict[str, Any]:
    """The same outputs scored with only the top k decoder layers stochastic, for each k in
    `s.compare_last_k`: seconds, Spearman with sentence chrF and OOD AUROC per measure, so the serving
    default is chosen on evidence (docs/architecture.md §4)."""
    n = chrf.numel()
    table: dict[str, Any] = {}
    for k in s.compare_last_k:
        measures, seconds = mc_measures(model, scorer, ids, outputs, pad_id, replace(s, mc_last_k=k))
        corr = correlation_table({m: v[:n] for m, v in measures.items()}, chrf, ORIENTATION)
        auroc = ood_table(measures, labels, kinds, ORIENTATION)
        table[str(k)] = {"seconds": round(seconds, 2), "spearman": {m: r["spearman"] for m, r in corr.items()},
                         "ood_auroc": {m: r["all"] for m, r in auroc.items()}}
        log.info("last-%d MC scoring: %.1f s, Spearman(D-TP/token) %.3f, AUROC(entropy) %.3f", k, seconds,
                 table[str(k)]["spearman"]["d_tp_per_token"], table[str(k)]["ood_auroc"]["entropy"])
    return table


def evaluate_translation(model: nn.Module, tokenizer: PreTrainedTokenizerBase, test_pairs: Sequence[tuple[str, str]],
                         probe_texts: Sequence[str], probe_kinds: Sequence[str], s: EvalSettings,
                         scorer: Scorer | None, sampler: Sampler | None,
                         calibration_sources: Sequence[str] = ()) -> dict[str, Any]:
    """Steps 1–4 of the module docstring. `probe_texts`/`probe_kinds` are the out-of-domain probes only
    (the in-domain side of the OOD task is the test subset itself); `calibration_sources` are validation
    sentences the abstain rule is fitted on (none: no rule). Returns a JSON-ready report, with the fitted
    rule under "abstain" when there is one."""
    pad = tokenizer.pad_token_id
    sources, references = [p[0] for p in test_pairs], [p[1] for p in test_pairs]
    ids = encode_sources(tokenizer, sources, s.max_input_tokens)
    quality: dict[str, Any] = {}
    decoded: dict[str, tuple[list[torch.Tensor], list[str]]] = {}
    for name, beams in (("greedy", 1), (f"beam{s.num_beams}", s.num_beams)):
        outs, seconds = decode(model, ids, pad, beams, s)
        hyps = tokenizer.batch_decode(outs, skip_special_tokens=True)
        quality[name] = {**corpus_quality(hyps, references), "num_beams": beams, "seconds": round(seconds, 2),
                         "sentences_per_second": round(len(ids) / max(seconds, 1e-9), 2)}
        decoded[name] = (outs, hyps)
        log.info("%s: BLEU %.2f, chrF %.2f on %d verses (%.1f s)", name, quality[name]["bleu"], quality[name]["chrf"],
                 len(ids), seconds)
    greedy_outs, greedy_hyps = decoded["greedy"]
    chrf = sentence_chrf(greedy_hyps, references)
    distinct = distinct_output_ratio(sources, greedy_hyps)
    if distinct < COLLAPSE_RATIO:
        log.warning("only %.0f%% of distinct sources got distinct translations: the model has collapsed onto a "
                    "few outputs (lower the learning rate or lengthen the warm-up)", 100 * distinct)
    report: dict[str, Any] = {
        "test_n": len(ids), "quality": quality, "sentence_chrf_mean": float(chrf.mean()),
        "distinct_output_ratio": distinct, "collapsed": distinct < COLLAPSE_RATIO,
        "examples": [{"source": sources[i], "reference": references[i], "greedy": greedy_hyps[i],
                      "beam": decoded[f"beam{s.num_beams}"][1][i]} for i in range(min(5, len(ids)))],
    }
    if scorer is None:
        report["uncertainty"] = {"mc": "unavailable"}
        return report
    probe_ids = encode_sources(tokenizer, probe_texts, s.max_input_tokens)
    probe_outs, probe_decode_seconds = decode(model, probe_ids, pad, 1, s)
    all_ids, all_outs = [*ids, *probe_ids], [*greedy_outs, *probe_outs]
    measures, mc_seconds = mc_measures(model, scorer, all_ids, all_outs, pad, s)
    log.info("MC scoring (T=%d) of %d outputs: %.1f s (probe decoding %.1f s)", s.mc_samples, len(all_ids), mc_seconds,
             probe_decode_seconds)
    kinds = ["in_domain"] * len(ids) + list(probe_kinds)
    labels = torch.tensor([int(k != "in_domain") for k in kinds])
    n = len(ids)
    sampling: dict[str, Any] = {"mode": "off"}
    if sampler is not None and s.sampling_samples >= 2:
        # T uncached stochastic decodes per input are the costliest part: run them on a fixed sub-subset
        # (the first inputs of the test subset and of each probe kind) and report lex_sim's tables on it.
        sub = sampling_subset(kinds, s.sampling_limit)
        lex, seconds = lexical_similarity(model, sampler, [all_ids[i] for i in sub], pad, s)
        sub_kinds = [kinds[i] for i in sub]
        in_sub = [i for i in sub if i < n]
        sampling = {"samples": s.sampling_samples, "seconds": round(seconds, 2), "inputs": len(sub),
                    "probe_counts": {k: sub_kinds.count(k) for k in sorted(set(sub_kinds))},
                    "correlation_with_sentence_chrf": correlation_table({"lex_sim": lex[: len(in_sub)]}, chrf[in_sub],
                                                                        ORIENTATION),
                    "ood_auroc": ood_table({"lex_sim": lex}, labels[sub], sub_kinds, ORIENTATION)}
        log.info("sampling mode (%d decodes each) on %d inputs: %.1f s", s.sampling_samples, len(sub), seconds)
    report["last_k_comparison"] = compare_last_k(model, scorer, all_ids, all_outs, pad, s, chrf, labels, kinds)
    if calibration_sources:
        cal_ids = encode_sources(tokenizer, calibration_sources, s.max_input_tokens)
        cal_outs, _ = decode(model, cal_ids, pad, 1, s)
        cal_measures, _ = mc_measures(model, scorer, cal_ids, cal_outs, pad, s)
        rule = fit_abstain(cal_measures[s.abstain_measure], s.abstain_rate, s.abstain_measure)
        report["abstain"] = {**rule, "test": abstain_outcome(measures[s.abstain_measure], rule["threshold"], chrf, n)}
        log.info("abstain on %s > %.4f: %s", rule["measure"], rule["threshold"], report["abstain"]["test"])
    report["uncertainty"] = {
        "mc": {"samples": s.mc_samples, "last_k": s.mc_last_k, "seconds": round(mc_seconds, 2),
               "scored_outputs": len(all_ids)},
        "sampling": sampling,
        "decoded_on": "greedy outputs",
        "correlation_with_sentence_chrf": correlation_table({k: v[:n] for k, v in measures.items()}, chrf, ORIENTATION),
        "ood_auroc": ood_table(measures, labels, kinds, ORIENTATION),
        "probe_counts": {k: kinds.count(k) for k in sorted(set(kinds))},
        "probe_decode_seconds": round(probe_decode_seconds, 2),
        "measure_means": {name: {kind: float(v[torch.tensor([k == kind for k in kinds])].mean())
                                 for kind in sorted(set(kinds))} for name, v in measures.items()},
    }
    return report
