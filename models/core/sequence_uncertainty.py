"""Sequence uncertainty from a fixed output scored under T dropout masks (docs/architecture.md §4,
Fomicheva et al. 2020); the abstain rule on these measures is models/core/calibration.py.

Inputs, for one output sequence y_1..y_n (the deterministic decode, `</s>` included when generated):
- `det_log_probs` [n, V]: log-distributions of the deterministic (no-dropout) teacher-forced pass;
- `mc_log_probs` [T, n, V]: the same under T dropout masks.

Token measures (natural logs, nats), each [n]:
- `probability`:         mean_t p_t(y_j), the MC mean probability of the output token, in [0, 1]
- `predictive_entropy`:  H[mean_t p_t(· | y_<j)] (total)
- `expected_entropy`:    mean_t H[p_t(· | y_<j)] (aleatoric)
- `mutual_information`:  predictive − expected, clamped ≥ 0 (epistemic)

Sequence measures:
- TP   `sequence_log_prob`: Σ_j log p(y_j) of the deterministic pass (sum over tokens, nats, ≤ 0)
- D-TP `mc_log_prob_mean`:  mean over t of Σ_j log p_t(y_j)
- D-Var `mc_log_prob_var`:  population variance over t of Σ_j log p_t(y_j) (0 for T = 1), nats²
- per token (a sum grows with the output's length, so long outputs look uncertain by length alone):
  `sequence_log_prob_per_token` TP / n, `mc_log_prob_mean_per_token` D-TP / n (nats per token) and
  `mc_log_prob_var_per_token`, the variance over t of the mean (1/n) Σ_j log p_t(y_j) (= D-Var / n², nats²)
- `mean_token_entropy`, `mean_token_mutual_information`, `max_token_mutual_information`.
MI is computed as the mean KL divergence of each sample from the mean, E_t KL(p_t ‖ p̄), not as the
difference of two similar entropies: the KL terms are each small and non-negative, so float32 (kept on the
model's device, where the [T, n, V] tensor already lives) is accurate to ~1e-6 nats, and the total is
aleatoric + MI exactly. Only the [n]-sized results are returned, as float64 on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenMeasures:
    """Per-token MC measures of one output, each a float64 tensor [n]; `sample_log_probs` is [T, n]."""

    probability: torch.Tensor
    predictive_entropy: torch.Tensor
    expected_entropy: torch.Tensor
    mutual_information: torch.Tensor
    sample_log_probs: torch.Tensor


def token_log_probs(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(y_j) picked from log-distributions [..., n, V] at `targets` [n] → [..., n] (float64)."""
    index = targets.to(log_probs.device).long().expand(*log_probs.shape[:-1]).unsqueeze(-1)
    return torch.gather(log_probs, -1, index).squeeze(-1).to(torch.float64)


def token_measures(mc_log_probs: torch.Tensor, targets: torch.Tensor) -> TokenMeasures:
    """Token measures of the module docstring from `mc_log_probs` [T, n, V] and the output `targets` [n].

    Reduced in the input's precision (at least float32) on its device; results are float64 CPU tensors."""
    if mc_log_probs.dim() != 3:
        raise ValueError(f"mc_log_probs must be [T, n, V], got shape {tuple(mc_log_probs.shape)}")
    if mc_log_probs.shape[1] != targets.shape[-1]:
        raise ValueError(f"{mc_log_probs.shape[1]} scored positions but {targets.shape[-1]} target tokens")
    lp = mc_log_probs if mc_log_probs.dtype in (torch.float32, torch.float64) else mc_log_probs.float()
    samples = lp.shape[0]
    p = lp.exp()
    log_mean = torch.logsumexp(lp, dim=0) - math.log(samples)  # log p̄ [n, V]
    # 0 · (−inf) where a probability underflows is 0, hence nan_to_num.
    aleatoric = (-(p * lp).nan_to_num(nan=0.0).sum(dim=-1)).mean(dim=0)
    mutual = (p * (lp - log_mean)).nan_to_num(nan=0.0).sum(dim=-1).mean(dim=0).clamp_min(0.0)
    picked = token_log_probs(lp, targets)  # [T, n] float64
    cpu = torch.device("cpu")
    aleatoric, mutual = aleatoric.to(cpu, torch.float64), mutual.to(cpu, torch.float64)
    return TokenMeasures(
        probability=picked.exp().mean(dim=0).clamp(0.0, 1.0).to(cpu),
        predictive_entropy=aleatoric + mutual,
        expected_entropy=aleatoric,
        mutual_information=mutual,
        sample_log_probs=picked.to(cpu),
    )


def sequence_measures(det_token_log_probs: torch.Tensor, tokens: TokenMeasures) -> dict[str, float]:
    """TP, D-TP, D-Var, their per-token forms and the token summaries (module docstring) as plain floats."""
    sample_totals = tokens.sample_log_probs.sum(dim=-1)  # [T]
    n = max(1, tokens.sample_log_probs.shape[-1])
    variance = float(sample_totals.var(unbiased=False)) if sample_totals.numel() > 1 else 0.0
    tp = float(det_token_log_probs.to(torch.float64).sum())
    return {
        "sequence_log_prob": tp,
        "mc_log_prob_mean": float(sample_totals.mean()),
        "mc_log_prob_var": variance,
        "sequence_log_prob_per_token": tp / n,
        "mc_log_prob_mean_per_token": float(sample_totals.mean()) / n,
        "mc_log_prob_var_per_token": variance / (n * n),
        "mean_token_entropy": float(tokens.predictive_entropy.mean()),
        "mean_token_mutual_information": float(tokens.mutual_information.mean()),
        "max_token_mutual_information": float(tokens.mutual_information.max()),
    }


def mean_pairwise_chrf(hypotheses: list[str]) -> float:
    """Mean sentence chrF (0..1) over ordered pairs i ≠ j of T sampled outputs (D-Lex-Sim style: high =
    the samples agree). 1.0 for fewer than two samples."""
    from sacrebleu.metrics import CHRF

    if len(hypotheses) < 2:
        return 1.0
    chrf = CHRF()
    scores = [
        chrf.sentence_score(hypotheses[i], [hypotheses[j]]).score / 100.0
        for i in range(len(hypotheses))
        for j in range(len(hypotheses))
        if i != j
    ]
    return sum(scores) / len(scores)
