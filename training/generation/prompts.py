"""Prompt / true-continuation pairs for the generation evaluation, and the quality loss they define.

- `windows(blocks [n, S], prompt_tokens, continuation_tokens, eos_id)`: from the start of each held-out
  block, its first `prompt_tokens` ids as a prompt and the next `continuation_tokens` as the true
  continuation; a window that crosses a segment seam (an `eos_id` inside) is skipped. Blocks come from
  fixed, disjoint parts of one split (training/generation/job.py), so windows of different parts never
  share text.
- `prompt_items(predictor, prompts, max_new_tokens)`: the PreparedItems the server would make for these
  prompts with its default decoding parameters (sampling defaults from the manifest) and `max_new_tokens`,
  built from the ids (a decode → re-encode round trip could change them).
- `token_errors(predictor, prompts, continuations, ...)`: the loss of a prompt, the token error rate of its
  true continuation: the share of positions where the served model's deterministic argmax (teacher-forced on
  the true text, through the predictor's `score`) is not the true next token. It judges how well the model
  knows where this text goes, which is what an abstain flag on a continuation should warn about; unlike
  comparing a sampled continuation with the true one, it does not penalise a different but plausible text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from models.core.predictor import PreparedItem
from training.core.predicting import score_all

Window = tuple[list[int], list[int]]


def windows(blocks: torch.Tensor, prompt_tokens: int, continuation_tokens: int, eos_id: int | None) -> list[Window]:
    """See module docstring."""
    if prompt_tokens < 1 or continuation_tokens < 1 or prompt_tokens + continuation_tokens > blocks.shape[-1]:
        raise ValueError(f"prompt {prompt_tokens} + continuation {continuation_tokens} tokens must fit the "
                         f"{blocks.shape[-1]}-token blocks (each at least 1)")
    out = []
    for block in blocks.tolist():
        window = block[: prompt_tokens + continuation_tokens]
        if eos_id is None or eos_id not in window:
            out.append((window[:prompt_tokens], window[prompt_tokens:]))
    return out


def prompt_items(predictor: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[PreparedItem]:
    """See module docstring."""
    template = predictor.prepare(predictor.warmup_text, {"max_new_tokens": max_new_tokens})
    return [dataclasses.replace(template, text=predictor.tokenizer.decode(list(ids)), input_ids=tuple(ids),
                                n_tokens=len(ids)) for ids in prompts]


def token_errors(predictor: Any, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                 seed: int, batch_size: int, phase: str) -> torch.Tensor:
    """Token error rate of each true continuation, float64 [N] (module docstring)."""
    rates = score_all(predictor, prompts, continuations, 0, seed, batch_size, phase,
                      lambda i, scored: sum(a != b for a, b in zip(scored.det_top, continuations[i], strict=True))
                      / len(continuations[i]))
    return torch.tensor(rates, dtype=torch.float64)
