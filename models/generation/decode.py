"""Batched autoregressive decoding of a Llama causal LM with a KV cache, dropout off.

Several requests decode together: prompts are left-padded into one batch, each row keeps its own
sampling parameters, seeded generator, stop strings and token budget, and a finished row rides along
as masked padding until every row is done. Per generated token the decode records the deterministic
model's log-probability of that token and the entropy of its distribution (after the calibration
temperature), which are TP and the token table when no MC samples are asked. Optionally it keeps the
input of one decoder layer at every position (models/generation/mc.capture_layer_input) so the MC pass
starts from there instead of recomputing the lower layers.

`use_cache=False` recomputes the whole prefix at every step: the reference the cached path is tested
against, and the "without cache" side of the benchmark. `teacher_force` gives the same result for outputs
fixed in advance (a reference continuation) in one forward, so they are scored like a decode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedTokenizerBase

from models.core.ood import pool
from models.core.padding import pad_ids
from models.generation.mc import capture_layer_input, positions_of
from models.generation.sampling import SamplingParams, StopText, choose_token

TextSink = Callable[[str], None]


@dataclass
class DecodedRow:
    """One decoded request. `tokens` are the generated ids (the end-of-sequence token included when the
    model produced it); `text` is their decoded text, cut before a stop string; `log_probs`/`entropies`
    [n] come from the deterministic distribution of each step, `top_tokens`/`top_log_probs` [n] are its
    argmax (the greedy choice, whatever was sampled) and that token's log-probability."""

    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"
    log_probs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    top_tokens: list[int] = field(default_factory=list)
    top_log_probs: list[float] = field(default_factory=list)
    alternatives: list[list[tuple[int, float]]] = field(default_factory=list)  # per step, when asked
    first_token_seconds: float | None = None
    seconds: float = 0.0
    streamed: int = 0  # characters of `text` already handed to the sink


@dataclass
class DecodeResult:
    """Rows in input order; `hidden` [B, S, d] is the captured layer input at every position of `ids`
    [B, S] (left-padded prompt + generated tokens but the last), `mask` [B, S] their real positions, and
    `prompt_width` the padded prompt length (generated token j of a row is predicted at column
    prompt_width − 1 + j)."""

    rows: list[DecodedRow]
    ids: torch.Tensor
    mask: torch.Tensor
    prompt_width: int
    hidden: torch.Tensor | None
    prompt_features: dict[int, torch.Tensor] = field(default_factory=dict)  # [B, d] pooled OOD features by layer


def decode_batch(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    params: Sequence[SamplingParams],
    seeds: Sequence[int],
    *,
    eos_ids: frozenset[int],
    pad_id: int,
    temperature: float = 1.0,
    use_cache: bool = True,
    capture_layer: int | None = None,
    sinks: Sequence[TextSink | None] | None = None,
    feature_layers: Sequence[int] = (),
    feature_pooling: str = "mean",
) -> DecodeResult:
    """Decode every prompt (module docstring). `temperature` is the calibration τ of the recorded
    log-probabilities (sampling uses each row's own temperature). `sinks[i]`, when given, receives row i's
    text as it becomes safe to stream (models/sampling.StopText); the deltas join into the final text.
    `feature_layers`: the input of each of those decoder layers, pooled over the prompt's positions in the first
    (prompt) forward, into `prompt_features` by layer (models/core/ood.pool). Call under torch.inference_mode() with
    model.eval()."""
    if model.training:
        raise RuntimeError("decode_batch expects model.eval()")
    device = next(model.parameters()).device
    started = time.perf_counter()
    ids, mask = pad_ids(prompts, pad_id, device, left=True)
    prompt_width = ids.shape[1]
    rows = [DecodedRow() for _ in prompts]
    stops = [StopText(p.stop) for p in params]
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    sinks = list(sinks) if sinks is not None else [None] * len(prompts)
    active = [True] * len(prompts)
    cache = DynamicCache(config=model.config) if use_cache else None
    capture = capture_layer_input(model, capture_layer) if capture_layer is not None else nullcontext([])
    prompt_features: dict[int, torch.Tensor] = {}
    with capture as chunks, ExitStack() as stack:
        feature_chunks = {layer: stack.enter_context(capture_layer_input(model, layer)) for layer in feature_layers}
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions_of(mask), past_key_values=cache,
                       use_cache=use_cache).logits[:, -1]
        prompt_features = {layer: pool(got[0], mask, feature_pooling) for layer, got in feature_chunks.items()}
        while True:
            log_dist = torch.log_softmax(logits.float() / temperature, dim=-1)
            entropy = -(log_dist.exp() * log_dist).nan_to_num(nan=0.0).sum(dim=-1)
            top_lp, top = (v.tolist() for v in log_dist.max(dim=-1))
            step = torch.full((len(prompts),), pad_id, dtype=torch.long)
            for b, row in enumerate(rows):
                if not active[b]:
                    continue
                history = torch.cat([ids[b][mask[b].bool()].cpu(), torch.tensor(row.tokens, dtype=torch.long)])
                token = choose_token(logits[b], params[b], history, generators[b])
                step[b] = token
                row.tokens.append(token)
                row.log_probs.append(float(log_dist[b, token]))
                row.entropies.append(float(entropy[b]))
                row.top_tokens.append(top[b])
                row.top_log_probs.append(top_lp[b])
                if params[b].top_logprobs:
                    best, best_ids = log_dist[b].topk(min(params[b].top_logprobs, log_dist.shape[-1]))
                    row.alternatives.append(list(zip(best_ids.tolist(), best.tolist(), strict=True)))
                if row.first_token_seconds is None:
                    row.first_token_seconds = time.perf_counter() - started
                active[b] = _advance(row, tokenizer, stops[b], params[b], eos_ids, sinks[b])
                if not active[b]:
                    row.seconds = time.perf_counter() - started
            if not any(active):
                break
            ids = torch.cat([ids, step.to(device)[:, None]], dim=1)
            mask = torch.cat([mask, torch.tensor(active, dtype=torch.long, device=device)[:, None]], dim=1)
            if use_cache:
                position = positions_of(mask)[:, -1:]
                logits = model(input_ids=ids[:, -1:], attention_mask=mask, position_ids=position,
                               past_key_values=cache, use_cache=True).logits[:, -1]
            else:
                logits = model(input_ids=ids, attention_mask=mask, position_ids=positions_of(mask),
                               use_cache=False).logits[:, -1]
    hidden = None
    if capture_layer is not None:
        hidden = torch.cat(chunks, dim=1) if use_cache else chunks[-1]
    return DecodeResult(rows=rows, ids=ids, mask=mask, prompt_width=prompt_width, hidden=hidden,
                        prompt_features=prompt_features)


def teacher_force(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    outputs: Sequence[Sequence[int]],
    *,
    eos_ids: frozenset[int],
    pad_id: int,
    temperature: float = 1.0,
    capture_layer: int | None = None,
) -> DecodeResult:
    """`decode_batch`'s result for `outputs` fixed in advance (each non-empty), from ONE forward over the
    left-padded prompts followed by the right-padded outputs but their last tokens: the same layout, so the
    MC pass scores it unchanged. Rows carry tokens, log-probabilities, entropies and argmaxes (no text).
    Call under torch.inference_mode() with model.eval()."""
    if model.training:
        raise RuntimeError("teacher_force expects model.eval()")
    device = next(model.parameters()).device
    ids, mask = pad_ids(prompts, pad_id, device, left=True)
    width = ids.shape[1]
    tail, tail_mask = pad_ids([list(out)[:-1] or [pad_id] for out in outputs], pad_id, device)
    tail_mask = tail_mask * torch.tensor([len(out) > 1 for out in outputs], device=device)[:, None]
    ids, mask = torch.cat([ids, tail], dim=1), torch.cat([mask, tail_mask.to(mask.dtype)], dim=1)
    capture = capture_layer_input(model, capture_layer) if capture_layer is not None else nullcontext([])
    with capture as chunks:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions_of(mask), use_cache=False).logits
    rows = []
    for b, out in enumerate(outputs):
        log_dist = torch.log_softmax(logits[b, width - 1: width - 1 + len(out)].float() / temperature, dim=-1)
        picked = log_dist.gather(-1, torch.tensor(list(out), device=device)[:, None]).squeeze(-1)
        top_lp, top = log_dist.max(dim=-1)
        rows.append(DecodedRow(tokens=list(out), finish_reason="eos" if out[-1] in eos_ids else "length",
                               log_probs=picked.tolist(), top_tokens=top.tolist(), top_log_probs=top_lp.tolist(),
                               entropies=(-(log_dist.exp() * log_dist).nan_to_num(nan=0.0).sum(-1)).tolist()))
    hidden = chunks[0] if capture_layer is not None else None
    return DecodeResult(rows=rows, ids=ids, mask=mask, prompt_width=width, hidden=hidden)


def _advance(row: DecodedRow, tokenizer: PreTrainedTokenizerBase, stop: StopText, params: SamplingParams,
             eos_ids: frozenset[int], sink: TextSink | None) -> bool:
    """Update the row's text and finish state after a new token; stream what is safe. True = continue."""
    ended = row.tokens[-1] in eos_ids
    text = tokenizer.decode(row.tokens, skip_special_tokens=True)
    cut = stop.find(text)
    if cut is not None:
        text, row.finish_reason = text[:cut], "stop"
    elif ended:
        row.finish_reason = "eos"
    finished = cut is not None or ended or len(row.tokens) >= params.max_new_tokens
    row.text = text
    if sink is not None:
        safe = stop.safe_length(text, finished)
        if safe > row.streamed:
            sink(text[row.streamed:safe])
            row.streamed = safe
    return not finished
