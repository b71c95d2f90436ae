"""Evaluation of a fine-tuned causal LM and of its MC-dropout uncertainty on held-out text.

1. `perplexity`: token NLL and perplexity of fixed-length blocks (next-token prediction, dropout off);
   the job reports it before and after fine-tuning on the same test blocks.
2. `token_report`: on test blocks, per position the deterministic greedy next token is compared with the
   reference next token (label 1 = the greedy guess is wrong) and each token measure's AUROC for that
   error is reported: `one_minus_p` (1 − deterministic probability of the greedy token: the non-Bayesian
   baseline), `entropy_det` (deterministic entropy), and from T dropout passes of the top k layers
   (models/generation/mc.py, the serving path) `one_minus_p_mc`, `entropy` (predictive), `expected_entropy`
   and `mi`. `best_minus_baseline` is the best measure's AUROC minus `one_minus_p`'s.
3. `sequence_report`: held-out in-domain sentences vs probes (Bible verses, news-like text, shuffled
   sentences), each scored teacher-forced on its own tokens under T masks: expected NLL per token
   (mean over samples and tokens of −log p_t(y)), total uncertainty (mean token predictive entropy), MI and
   reverse MI (mean token E_t KL(p̄ ‖ p_t), Malinin & Gales 2021); AUROC of each for in-domain vs each probe
   kind and all probes (higher = less sure), and each measure's mean per kind.
Everything runs under inference_mode with the model in eval mode; logits are reduced item by item so
memory stays at one item's [T, n, V].
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.core.device import autocast_context
from models.core.dropout import mix_seed
from models.core.sequence_uncertainty import token_measures
from models.generation.mc import capture_layer_input, positions_of, project, top_layers
from training.core.uncertainty_stats import ood_auroc, ood_table

TOKEN_MEASURES = ("one_minus_p", "entropy_det", "one_minus_p_mc", "entropy", "expected_entropy", "mi")
SEQUENCE_MEASURES = ("expected_nll", "total_uncertainty", "mi", "reverse_mi")
# Every sequence measure is "higher = less sure" (orientation −1 in training.core.uncertainty_stats terms).
_ORIENTATION = {name: -1 for name in SEQUENCE_MEASURES}


@dataclass(frozen=True)
class GenEvalSettings:
    """MC and batching settings of the evaluation (from the job's config)."""

    mc_samples: int
    last_k: int
    batch_size: int
    seed: int
    device: torch.device
    dtype: str


def perplexity(model: nn.Module, blocks: torch.Tensor, s: GenEvalSettings) -> dict[str, float]:
    """Mean next-token NLL (nats) and perplexity over `blocks` [n, S] (every block full, no padding)."""
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode(), autocast_context(s.device, s.dtype):
        for start in range(0, len(blocks), s.batch_size):
            ids = blocks[start: start + s.batch_size].to(s.device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            nll = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
            total, count = total + float(nll), count + ids[:, 1:].numel()
    nll = total / max(1, count)
    return {"nll": nll, "perplexity": math.exp(nll), "tokens": count}


def mc_log_probs(model: nn.Module, sequences: Sequence[Sequence[int]], s: GenEvalSettings,
                 seed: int) -> Iterator[torch.Tensor]:
    """Per sequence, log-distributions [1 + T, n − 1, V] of its tokens 1..n−1 given the prefix: row 0
    deterministic, rows 1..T under seeded dropout in the top k layers (one batched pass per batch)."""
    layers = model.config.num_hidden_layers
    rows = 1 + s.mc_samples
    for start in range(0, len(sequences), s.batch_size):
        batch = sequences[start: start + s.batch_size]
        width = max(len(x) for x in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, x in enumerate(batch):  # right-padded: positions (and masks) do not depend on the batch
            ids[i, : len(x)] = torch.tensor(list(x))
            mask[i, : len(x)] = 1
        ids, mask = ids.to(s.device), mask.to(s.device)
        with capture_layer_input(model, layers - s.last_k) as chunks:
            model(input_ids=ids, attention_mask=mask, position_ids=positions_of(mask))
        seeds = [None if r == 0 else mix_seed(seed + start + i, r) for i in range(len(batch)) for r in range(rows)]
        states = top_layers(model, chunks[0], mask, seeds, [rows] * len(batch), s.last_k)
        for i, x in enumerate(batch):
            item = states[i * rows: (i + 1) * rows, : len(x) - 1]
            yield torch.log_softmax(project(model, item), dim=-1)


def token_report(model: nn.Module, blocks: torch.Tensor, s: GenEvalSettings) -> dict[str, Any]:
    """Step 2 of the module docstring on `blocks` [n, S]."""
    model.eval()
    values: dict[str, list[torch.Tensor]] = {name: [] for name in TOKEN_MEASURES}
    errors: list[torch.Tensor] = []
    with torch.inference_mode(), autocast_context(s.device, s.dtype):
        for block, lp in zip(blocks, mc_log_probs(model, [b.tolist() for b in blocks], s, s.seed), strict=True):
            det, samples = lp[0], lp[1:]
            greedy = det.argmax(dim=-1)
            errors.append((greedy.cpu() != block[1:]).long())
            measures = token_measures(samples, greedy)
            p_det = det.gather(-1, greedy[:, None]).squeeze(-1).double().exp().cpu()
            values["one_minus_p"].append(1 - p_det)
            values["entropy_det"].append(-(det.exp() * det).nan_to_num(nan=0.0).sum(-1).double().cpu())
            values["one_minus_p_mc"].append(1 - measures.probability)
            values["entropy"].append(measures.predictive_entropy)
            values["expected_entropy"].append(measures.expected_entropy)
            values["mi"].append(measures.mutual_information)
    labels = torch.cat(errors)
    auroc = {name: ood_auroc(torch.cat(v), labels) for name, v in values.items()}
    best = max(auroc, key=lambda name: -math.inf if math.isnan(auroc[name]) else auroc[name])
    return {"tokens": int(labels.numel()), "greedy_error_rate": float(labels.double().mean()),
            "auroc_error": auroc, "best_measure": best,
            "best_minus_baseline": auroc[best] - auroc["one_minus_p"],
            "mc_samples": s.mc_samples, "last_k": s.last_k}


def sequence_measures_of(lp: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """The sequence measures of step 3 from MC log-distributions [T, n, V] and the text's tokens [n]."""
    measures = token_measures(lp, targets)
    log_mean = torch.logsumexp(lp.float(), dim=0) - math.log(lp.shape[0])  # log p̄ [n, V]
    mean = log_mean.exp()
    # E_t KL(p̄ ‖ p_t) = Σ_v p̄ (log p̄ − mean_t log p_t), per token
    reverse = (mean * (log_mean - lp.float().mean(dim=0))).nan_to_num(nan=0.0).sum(-1).clamp_min(0.0)
    return {"expected_nll": float(-measures.sample_log_probs.mean()),
            "total_uncertainty": float(measures.predictive_entropy.mean()),
            "mi": float(measures.mutual_information.mean()),
            "reverse_mi": float(reverse.double().mean())}


def sequence_report(model: nn.Module, tokenizer: Any, texts: Sequence[str], kinds: Sequence[str],
                    s: GenEvalSettings) -> dict[str, Any]:
    """Step 3 of the module docstring; `kinds[i]` is "in_domain" or the probe kind of `texts[i]`."""
    model.eval()
    prefix = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []  # a start-of-text context
    sequences = [prefix + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    rows: list[dict[str, float]] = []
    with torch.inference_mode(), autocast_context(s.device, s.dtype):
        for seq, lp in zip(sequences, mc_log_probs(model, sequences, s, s.seed + 1), strict=True):
            rows.append(sequence_measures_of(lp[1:], torch.tensor(seq[1:], device=lp.device)))
    values = {name: torch.tensor([r[name] for r in rows], dtype=torch.float64) for name in SEQUENCE_MEASURES}
    labels = torch.tensor([int(k != "in_domain") for k in kinds])
    means = {name: {kind: float(v[torch.tensor([k == kind for k in kinds])].mean()) for kind in sorted(set(kinds))}
             for name, v in values.items()}
    return {"counts": {kind: list(kinds).count(kind) for kind in sorted(set(kinds))},
            "ood_auroc": ood_table(values, labels, kinds, _ORIENTATION), "measure_means": means}
