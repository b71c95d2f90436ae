"""The translation evaluation's MC hooks on models.translation.mc: the batched teacher-forced scorer (the serving
path's pass) and the stochastic-decode sampler (training/translation/evaluation.py's Scorer and Sampler)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from training.translation.evaluation import Sampler, Scorer


def marian_scorer(sites: frozenset[str]) -> Scorer:
    """The Scorer contract on top of models.translation.mc (the serving path's batched teacher-forced pass): per
    item one deterministic row and T dropout rows, then models.core.sequence_uncertainty's measures."""
    from models.core.dropout import mix_seed
    from models.core.sequence_uncertainty import sequence_measures, token_log_probs, token_measures
    from models.translation.mc import decoder_logits, encode, num_decoder_layers

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
    """The Sampler contract on models.translation.mc.stochastic_greedy_decode (T dropout greedy decodes per input)."""
    from models.core.dropout import mix_seed
    from models.translation.mc import encode, num_decoder_layers, stochastic_greedy_decode

    def sample(model: nn.Module, src: torch.Tensor, mask: torch.Tensor, samples: int, seed: int,
               max_new_tokens: int) -> list[list[str]]:
        states = encode(model, src, mask)
        seeds = [mix_seed(seed, 1_000_003 + r) for r in range(samples * src.shape[0])]
        tokens = stochastic_greedy_decode(model, states, mask, seeds, [samples] * src.shape[0],
                                          last_k or num_decoder_layers(model), sites, max_new_tokens)
        texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return [texts[i * samples: (i + 1) * samples] for i in range(src.shape[0])]

    return sample
