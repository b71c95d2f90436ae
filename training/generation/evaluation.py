"""Evaluation of a fine-tuned causal LM and of its MC-dropout uncertainty, through the predictor the server
runs (training.core.predicting: decode, teacher-forced `score`, τ, masks and seeds are the server's), so every
number is what a client gets. Every choice is made on validation before the test part is read once.

1. `perplexity`: token NLL and perplexity of fixed-length blocks (plain next-token prediction, dropout off);
   the job reports it before and after fine-tuning on the same test blocks.
2. `choose_on_validation` (prompt windows of validation blocks that periodic validation did not use,
   training/generation/prompts.py): continuations decoded with the serving defaults (temperature, top-p,
   repetition penalty of the manifest, per-item seeds); each prompt's loss is the token error rate of its
   true continuation; then last-k, τ (NLL of the true continuations) and the abstain rule
   (training.core.sequence_choices): abstain at the threshold with the largest validation coverage whose
   kept prompts have a mean token error rate ≤ `target_risk`.
3. `prompt_report` (windows of test blocks): the calibrated predictor's continuations at T; PRR and
   risk-coverage of every sequence measure for that loss; what its abstain flags did; NLL and token ECE of
   the true continuations at τ = 1 and the fitted τ.
4. `token_report`: on test blocks, per position the deterministic greedy next token is compared with the
   reference next token (label 1 = the greedy guess is wrong) and each token measure's AUROC for that error:
   `one_minus_p` (1 − deterministic probability of the greedy token: the non-Bayesian baseline),
   `entropy_det`, and from the T dropout rows `one_minus_p_mc`, `entropy` (predictive), `expected_entropy`
   and `mi`. `best_minus_baseline` is the best measure's AUROC minus `one_minus_p`'s.
5. `sequence_report`: held-out in-domain sentences vs probes (Bible verses, news-like text, shuffled
   sentences), each scored teacher-forced after an end-of-text token under T masks: expected NLL per token,
   total uncertainty (mean token predictive entropy), MI and reverse MI (mean token E_t KL(p̄ ‖ p_t), Malinin
   & Gales 2021); AUROC of each for in-domain vs each probe kind and all probes, and each measure's mean.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.core.device import autocast_context
from models.core.sequence_uncertainty import token_measures
from training.core.predicting import predict_all, score_all
from training.core.sequence_choices import (
    Choices,
    ChoiceSettings,
    fit_on_validation,
    held_out_report,
    reference_calibration,
)
from training.core.uncertainty_stats import ood_auroc, ood_table
from training.generation.prompts import Window, prompt_items, token_errors

log = logging.getLogger(__name__)
TOKEN_MEASURES = ("one_minus_p", "entropy_det", "one_minus_p_mc", "entropy", "expected_entropy", "mi")
SEQUENCE_MEASURES = ("expected_nll", "total_uncertainty", "mi", "reverse_mi")
# Every sequence measure is "higher = less sure" (orientation −1 in training.core.uncertainty_stats terms).
_ORIENTATION = {name: -1 for name in SEQUENCE_MEASURES}
LOSS = "token error rate of the true continuation (deterministic argmax ≠ true token, teacher-forced)"


@dataclass(frozen=True)
class GenEvalSettings:
    """Perplexity's device and dtype, the continuation length, and T / last-k / target / batching."""

    device: torch.device
    dtype: str
    continuation_tokens: int
    choices: ChoiceSettings


def perplexity(model: nn.Module, blocks: torch.Tensor, s: GenEvalSettings) -> dict[str, float]:
    """Mean next-token NLL (nats) and perplexity over `blocks` [n, S] (every block full, no padding)."""
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode(), autocast_context(s.device, s.dtype):
        for start in range(0, len(blocks), s.choices.batch_size):
            ids = blocks[start: start + s.choices.batch_size].to(s.device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            nll = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
            total, count = total + float(nll), count + ids[:, 1:].numel()
    nll = total / max(1, count)
    return {"nll": nll, "perplexity": math.exp(nll), "tokens": count}


def choose_on_validation(predictor: Any, pairs: Sequence[Window], s: GenEvalSettings) -> tuple[Choices, dict]:
    """Step 2 of the module docstring: (Choices, report)."""
    c = s.choices
    prompts, continuations = [p for p, _ in pairs], [t for _, t in pairs]
    decoded = predict_all(predictor, prompt_items(predictor, prompts, s.continuation_tokens), 0, c.seed,
                          c.batch_size, "validation: continuations (serving defaults)")
    errors = token_errors(predictor, prompts, continuations, c.seed, c.batch_size, "validation: token errors")
    log.info("validation: %d prompts, mean token error rate %.3f", len(pairs), float(errors.mean()))
    choices = fit_on_validation(predictor, prompts, [d.output_ids for d in decoded], continuations, errors, errors, c)
    choices.calibration["abstain"].update(
        loss=f"mean {LOSS} of the kept prompts",
        fitted_on="continuations of validation prompts decoded with the serving defaults")
    return choices, {**choices.report, "loss": LOSS, "mean_loss": float(errors.mean())}


def prompt_report(predictor: Any, pairs: Sequence[Window], s: GenEvalSettings) -> tuple[dict[str, Any], dict]:
    """Step 3 of the module docstring: (report, risk-coverage curves)."""
    c = s.choices
    prompts, continuations = [p for p, _ in pairs], [t for _, t in pairs]
    predictions = predict_all(predictor, prompt_items(predictor, prompts, s.continuation_tokens), c.mc_samples,
                              c.seed, c.batch_size, "test: continuations + MC scoring")
    errors = token_errors(predictor, prompts, continuations, c.seed, c.batch_size, "test: token errors")
    held, _ = held_out_report(predictions, errors)
    log.info("test: PRR %s; abstain %s", {k: round(v, 3) for k, v in held["prr"].items()}, held["abstain"])
    report = {"n": len(pairs), "loss": LOSS, "mean_loss": float(errors.mean()), "prr": held["prr"],
              "abstain": held["abstain"], "mc": {"samples": c.mc_samples, "last_k": predictor.last_k,
                                                 "temperature": predictor.calibration.temperature},
              "reference_calibration": reference_calibration(predictor, prompts, continuations, c,
                                                             "test: true continuations at τ = 1 and fitted")}
    return report, held["curves"]


def token_report(predictor: Any, blocks: torch.Tensor, s: GenEvalSettings,
                 phase: str = "test: token report") -> dict[str, Any]:
    """Step 4 of the module docstring on `blocks` [n, S] (each block's first token is its prompt); `phase` names
    the progress lines."""
    c = s.choices
    outputs = [b[1:].tolist() for b in blocks]

    def reduce(i: int, scored: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        greedy = torch.tensor(scored.det_top)
        measures = token_measures(scored.mc_log_probs, greedy)
        return (greedy != torch.tensor(outputs[i])).long(), {
            "one_minus_p": 1 - torch.tensor(scored.det_top_log_probs, dtype=torch.float64).exp(),
            "entropy_det": torch.tensor(scored.det_entropies, dtype=torch.float64),
            "one_minus_p_mc": 1 - measures.probability, "entropy": measures.predictive_entropy,
            "expected_entropy": measures.expected_entropy, "mi": measures.mutual_information}

    rows = score_all(predictor, [b[:1].tolist() for b in blocks], outputs, c.mc_samples, c.seed,
                     max(1, c.batch_size // 4), phase, reduce)
    labels = torch.cat([errors for errors, _ in rows])
    auroc = {name: ood_auroc(torch.cat([v[name] for _, v in rows]), labels) for name in TOKEN_MEASURES}
    best = max(auroc, key=lambda name: -math.inf if math.isnan(auroc[name]) else auroc[name])
    return {"tokens": int(labels.numel()), "greedy_error_rate": float(labels.double().mean()),
            "auroc_error": auroc, "best_measure": best, "best_minus_baseline": auroc[best] - auroc["one_minus_p"],
            "mc_samples": c.mc_samples, "last_k": predictor.last_k}


def sequence_measures_of(lp: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The sequence measures of step 5 from MC log-distributions [T, n, V] and the text's tokens [n]."""
    measures = token_measures(lp, targets)
    log_mean = torch.logsumexp(lp.float(), dim=0) - math.log(lp.shape[0])  # log p̄ [n, V]
    mean = log_mean.exp()
    # E_t KL(p̄ ‖ p_t) = Σ_v p̄ (log p̄ − mean_t log p_t), per token
    reverse = (mean * (log_mean - lp.float().mean(dim=0))).nan_to_num(nan=0.0).sum(-1).clamp_min(0.0)
    return {"expected_nll": float(-measures.sample_log_probs.mean()),
            "total_uncertainty": float(measures.predictive_entropy.mean()),
            "mi": float(measures.mutual_information.mean()),
            "reverse_mi": float(reverse.double().mean())}


def sequence_report(predictor: Any, texts: Sequence[str], kinds: Sequence[str], s: GenEvalSettings) -> dict[str, Any]:
    """Step 5 of the module docstring; `kinds[i]` is "in_domain" or the probe kind of `texts[i]`."""
    c, tokenizer = s.choices, predictor.tokenizer
    start = [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else predictor.pad_id]  # start of text
    sequences = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    rows = score_all(predictor, [start] * len(texts), sequences, c.mc_samples, c.seed + 1, c.batch_size,
                     "test: sequence OOD report",
                     lambda i, scored: sequence_measures_of(scored.mc_log_probs, torch.tensor(sequences[i])))
    values = {name: torch.tensor([r[name] for r in rows], dtype=torch.float64) for name in SEQUENCE_MEASURES}
    labels = torch.tensor([int(k != "in_domain") for k in kinds])
    means = {name: {kind: float(v[torch.tensor([k == kind for k in kinds])].mean()) for kind in sorted(set(kinds))}
             for name, v in values.items()}
    return {"counts": {kind: list(kinds).count(kind) for kind in sorted(set(kinds))},
            "ood_auroc": ood_table(values, labels, kinds, _ORIENTATION), "measure_means": means}
