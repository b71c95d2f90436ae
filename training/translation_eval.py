"""Evaluation of a trained translation model on a fixed subset of the held-out test books.

1. quality: greedy and beam decoding (`model.generate(..., use_cache=True)`, dropout off), corpus sacreBLEU
   BLEU and chrF against the references, wall seconds per mode;
2. the uncertainty report, on the greedy outputs of the test subset and of an out-of-domain probe set
   (training/data/probes.py): each output is scored under T dropout masks by a `Scorer` (the serving
   path's batched teacher-forced pass) giving TP, D-TP, D-Var, mean token entropy and MI per sentence;
   TP and D-TP are also reported per output token ("_per_token": a sum favours short outputs). The
   "sampling" mode decodes each input T more times with dropout on and takes the mean pairwise chrF
   ("lex_sim", D-Lex-Sim style) — T uncached decodes per input, so on a fixed sub-subset (`sampling_limit`)
   with its own tables under "sampling";
   - correlation: Pearson and Spearman between sentence chrF (0–100) and each measure on the test subset
     (confidence measures — TP, D-TP, lex_sim — should correlate positively, the others negatively);
   - OOD detection: AUROC of each measure, oriented so that higher means "less sure" (confidence measures
     negated), for in-domain test inputs (0) against probes (1), overall and per probe kind.
When no scorer is available the report holds `"mc": "unavailable"` and no MC numbers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sacrebleu.metrics import BLEU, CHRF
from torch import nn
from torchmetrics.functional.classification import binary_auroc
from transformers import PreTrainedTokenizerBase

from models.runtime import autocast_context

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
    seed: int
    device: torch.device
    dtype: str


def encode_sources(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_input_tokens: int) -> list[list[int]]:
    """Token ids with `</s>`, cut to `max_input_tokens` (the last kept token is `</s>`)."""
    eos = tokenizer.eos_token_id
    return [ids if len(ids) <= max_input_tokens else ids[: max_input_tokens - 1] + [eos]
            for ids in tokenizer(list(texts))["input_ids"]]


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, L] and attention mask [B, L]."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return ids, (ids != pad_id).long()


def batches_by_length(ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Index batches, longest first (little padding; output back in input order by index)."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def new_token_cap(src_len: int, cap: int) -> int:
    """Decode length for a batch whose longest source has `src_len` tokens: 1.5× + 10, at most `cap`
    (a verse's German is rarely 1.5× its English in tokens; an unconverged model stops early)."""
    return min(cap, int(1.5 * src_len) + 10)


def decode(model: nn.Module, ids: Sequence[Sequence[int]], pad_id: int, num_beams: int,
           s: EvalSettings) -> tuple[list[torch.Tensor], float]:
    """Deterministic decodes (generate() rows incl. the start token, trailing pad stripped) in input order,
    and the wall seconds."""
    model.eval()
    out: list[torch.Tensor | None] = [None] * len(ids)
    started = time.perf_counter()
    with torch.inference_mode(), autocast_context(s.device, s.dtype):
        for index in batches_by_length(ids, s.batch_size):
            src, mask = pad_batch([ids[i] for i in index], pad_id)
            gen = model.generate(input_ids=src.to(s.device), attention_mask=mask.to(s.device), num_beams=num_beams,
                                 do_sample=False, max_new_tokens=new_token_cap(src.shape[1], s.max_new_tokens),
                                 use_cache=True)
            for row, i in zip(gen.cpu(), index):
                keep = int((row != pad_id).nonzero().max()) + 1 if (row != pad_id).any() else 1
                out[i] = row[:keep]
    return [o for o in out if o is not None], time.perf_counter() - started


def corpus_quality(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """sacreBLEU corpus BLEU and chrF (0–100) with their signatures."""
    bleu, chrf = BLEU(), CHRF()
    return {"bleu": bleu.corpus_score(list(hypotheses), [list(references)]).score,
            "chrf": chrf.corpus_score(list(hypotheses), [list(references)]).score,
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def sentence_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> torch.Tensor:
    """Sentence-level chrF (0–100) per pair, float64 [N]."""
    chrf = CHRF()
    return torch.tensor([chrf.sentence_score(h, [r]).score for h, r in zip(hypotheses, references)], dtype=torch.float64)


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N (float64) with ties given their average rank (as scipy.stats.rankdata)."""
    x = x.double().flatten()
    values, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average = ends - (counts.double() - 1) / 2  # mean of the ranks end−count+1 .. end
    return average[inverse]


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two equal-length vectors; NaN when either is constant or N < 2."""
    x, y = x.double().flatten(), y.double().flatten()
    if x.numel() != y.numel():
        raise ValueError(f"lengths differ: {x.numel()} vs {y.numel()}")
    if x.numel() < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum()) / denom if denom > 0 else math.nan


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation (Pearson of average ranks); NaN when either is constant."""
    return pearson(rankdata(x), rankdata(y))


def ood_auroc(score: torch.Tensor, labels: torch.Tensor) -> float:
    """AUROC of `score` (higher = more likely OOD) for labels 1; NaN with a single class."""
    if int(labels.sum()) in (0, labels.numel()):
        return math.nan
    return float(binary_auroc(score.double(), labels.long()))


def measures_from_scores(scores: Sequence[dict[str, float]], lengths: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per-sentence measures [N] (float64) from scorer dicts and output token counts."""
    out = {name: torch.tensor([float(s[key]) for s in scores], dtype=torch.float64) for name, key in MEASURE_KEYS.items()}
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
            src, mask = pad_batch([ids[i] for i in index], pad_id)
            out, _ = pad_batch([outputs[i].tolist() for i in index], pad_id)
            rows = scorer(model, src.to(s.device), mask.to(s.device), out.to(s.device), s.mc_samples,
                          s.seed + batch_no, s.mc_last_k)
            for row, i in zip(rows, index):
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
    from models.sequence_uncertainty import mean_pairwise_chrf

    sims = torch.empty(len(ids), dtype=torch.float64)
    started = time.perf_counter()
    with torch.inference_mode(), autocast_context(s.device, s.dtype):
        for batch_no, index in enumerate(batches_by_length(ids, s.batch_size)):
            src, mask = pad_batch([ids[i] for i in index], pad_id)
            texts = sampler(model, src.to(s.device), mask.to(s.device), s.sampling_samples, s.seed + batch_no,
                            new_token_cap(src.shape[1], s.max_new_tokens))
            for hyps, i in zip(texts, index):
                sims[i] = mean_pairwise_chrf(list(hyps))
    return sims, time.perf_counter() - started


def correlation_table(measures: dict[str, torch.Tensor], chrf: torch.Tensor) -> dict[str, dict[str, float]]:
    """Pearson/Spearman of each measure with sentence chrF, and the expected sign (ORIENTATION)."""
    return {name: {"pearson": pearson(v, chrf), "spearman": spearman(v, chrf), "expected_sign": ORIENTATION[name]}
            for name, v in measures.items()}


def ood_table(measures: dict[str, torch.Tensor], labels: torch.Tensor, kinds: Sequence[str]) -> dict[str, dict[str, float]]:
    """AUROC per measure (oriented: higher = less sure) overall and for in-domain vs each probe kind."""
    table: dict[str, dict[str, float]] = {}
    for name, values in measures.items():
        score = -ORIENTATION[name] * values
        row = {"all": ood_auroc(score, labels)}
        for kind in sorted(set(kinds) - {"in_domain"}):
            keep = torch.tensor([k in ("in_domain", kind) for k in kinds])
            row[kind] = ood_auroc(score[keep], labels[keep])
        table[name] = row
    return table


def evaluate_translation(model: nn.Module, tokenizer: PreTrainedTokenizerBase, test_pairs: Sequence[tuple[str, str]],
                         probe_texts: Sequence[str], probe_kinds: Sequence[str], s: EvalSettings,
                         scorer: Scorer | None, sampler: Sampler | None) -> dict[str, Any]:
    """Steps 1–2 of the module docstring. `probe_texts`/`probe_kinds` are the out-of-domain probes only
    (the in-domain side of the OOD task is the test subset itself). Returns a JSON-ready report."""
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
    report: dict[str, Any] = {
        "test_n": len(ids), "quality": quality, "sentence_chrf_mean": float(chrf.mean()),
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
                    "correlation_with_sentence_chrf": correlation_table({"lex_sim": lex[: len(in_sub)]}, chrf[in_sub]),
                    "ood_auroc": ood_table({"lex_sim": lex}, labels[sub], sub_kinds)}
        log.info("sampling mode (%d decodes each) on %d inputs: %.1f s", s.sampling_samples, len(sub), seconds)
    report["uncertainty"] = {
        "mc": {"samples": s.mc_samples, "last_k": s.mc_last_k, "seconds": round(mc_seconds, 2),
               "scored_outputs": len(all_ids)},
        "sampling": sampling,
        "decoded_on": "greedy outputs",
        "correlation_with_sentence_chrf": correlation_table({k: v[:n] for k, v in measures.items()}, chrf),
        "ood_auroc": ood_table(measures, labels, kinds),
        "probe_counts": {k: kinds.count(k) for k in sorted(set(kinds))},
        "probe_decode_seconds": round(probe_decode_seconds, 2),
        "measure_means": {name: {kind: float(v[torch.tensor([k == kind for k in kinds])].mean()) for kind in sorted(set(kinds))}
                          for name, v in measures.items()},
    }
    return report


def marian_scorer(sites: frozenset[str]) -> Scorer:
    """The Scorer contract on top of models.marian_mc (the serving path's batched teacher-forced pass): per
    item one deterministic row and T dropout rows, then models.sequence_uncertainty's measures."""
    from models.dropout import mix_seed
    from models.marian_mc import decoder_logits, encode, num_decoder_layers
    from models.sequence_uncertainty import sequence_measures, token_log_probs, token_measures

    def score(model: nn.Module, src: torch.Tensor, mask: torch.Tensor, out_ids: torch.Tensor, samples: int,
              seed: int, last_k: int | None) -> list[dict[str, float]]:
        pad = model.config.pad_token_id
        states = encode(model, src, mask)
        rows = samples + 1
        seeds = [None if r % rows == 0 else mix_seed(seed, r) for r in range(rows * src.shape[0])]
        logits = decoder_logits(model, states, mask, out_ids[:, :-1], seeds, [rows] * src.shape[0],
                                last_k or num_decoder_layers(model), sites)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        out = []
        for i, targets in enumerate(out_ids[:, 1:]):
            n = max(1, int((targets != pad).sum()))
            item = log_probs[i * rows: (i + 1) * rows, :n]
            out.append(sequence_measures(token_log_probs(item[0], targets[:n]), token_measures(item[1:], targets[:n])))
        return out

    return score


def marian_sampler(sites: frozenset[str], tokenizer: PreTrainedTokenizerBase, last_k: int | None) -> Sampler:
    """The Sampler contract on models.marian_mc.stochastic_greedy_decode (T dropout greedy decodes per input)."""
    from models.dropout import mix_seed
    from models.marian_mc import encode, num_decoder_layers, stochastic_greedy_decode

    def sample(model: nn.Module, src: torch.Tensor, mask: torch.Tensor, samples: int, seed: int,
               max_new_tokens: int) -> list[list[str]]:
        states = encode(model, src, mask)
        seeds = [mix_seed(seed, 1_000_003 + r) for r in range(samples * src.shape[0])]
        tokens = stochastic_greedy_decode(model, states, mask, seeds, [samples] * src.shape[0],
                                          last_k or num_decoder_layers(model), sites, max_new_tokens)
        texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return [texts[i * samples: (i + 1) * samples] for i in range(src.shape[0])]

    return sample
