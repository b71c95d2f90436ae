"""Decoding for the recurrent model (models/translation/rnn.py): batched greedy, batched beam search (Marian uses
`model.generate`; the RNN's state is a [rows, layers, width] tensor, so a small decoder of its own is simpler than
wiring it into generate's cache), and the "sampling" mode's stochastic greedy decodes.

Every decoder carries the recurrent state, so a step costs the same at any length (no prefix recomputation); the
stochastic one holds each row's variational masks fixed over the steps, which is the model its teacher-forced
score (models/translation/rnn_mc.py) sees. Outputs are token lists without <s>, `</s>` included when reached.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.translation.rnn import Memory, RnnMTModel, decoder_step, make_memory, project
from models.translation.rnn_mc import row_memory


def _trim(rows: list[list[int]], eos: int) -> list[list[int]]:
    return [row[: row.index(eos) + 1] if eos in row else row for row in rows]


def greedy_decode(model: RnnMTModel, memory: Memory, max_new_tokens: int,
                  masks: dict[int, torch.Tensor] | None = None) -> list[list[int]]:
    """Greedy decodes of the N rows of `memory` under `masks` ([N, dim] per site; None = deterministic)."""
    config, masks = model.config, masks or {}
    rows = memory.states.shape[0]
    tokens = torch.full((rows,), config.decoder_start_token_id, dtype=torch.long, device=memory.states.device)
    state, done, out = memory.init, torch.zeros(rows, dtype=torch.bool, device=tokens.device), []
    for _ in range(max_new_tokens):
        hidden, state = decoder_step(model, tokens, state, memory, masks)
        tokens = project(model, hidden).argmax(dim=-1).masked_fill(done, config.pad_token_id)
        out.append(tokens)
        done |= tokens == config.eos_token_id
        if bool(done.all()):
            break
    return _trim(torch.stack(out, dim=1).tolist(), config.eos_token_id) if out else [[] for _ in range(rows)]


def beam_search(model: RnnMTModel, memory: Memory, max_new_tokens: int, num_beams: int,
                length_penalty: float = 1.0) -> list[list[int]]:
    """Deterministic beam search of each of the B rows of `memory`, as transformers' generate scores it: a finished
    hypothesis scores Σ log p / (generated tokens incl. `</s>`)^length_penalty; an `</s>` counts only among the
    top `num_beams` candidates; an item is done with `num_beams` finished hypotheses none of which its best live
    beam can beat; at the limit the live beams join the finished ones. One beam is greedy search."""
    config, k = model.config, num_beams
    items, eos = memory.states.shape[0], config.eos_token_id
    device = memory.states.device
    memory = memory.select(torch.arange(items, device=device).repeat_interleave(k))
    state = memory.init
    tokens = torch.full((items * k,), config.decoder_start_token_id, dtype=torch.long, device=device)
    scores = torch.full((items, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the beams start identical: only one may expand at the first step
    seqs: list[list[int]] = [[] for _ in range(items * k)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(items)]
    done = [False] * items
    for step in range(max_new_tokens):
        hidden, state = decoder_step(model, tokens, state, memory, {})
        log_probs = torch.log_softmax(project(model, hidden), dim=-1)
        vocab = log_probs.shape[-1]
        top_scores, top_ids = (scores.view(-1, 1) + log_probs).view(items, -1).topk(2 * k, dim=1)
        sources, next_tokens, next_scores = [], [], []
        for item, (row_scores, row_ids) in enumerate(zip(top_scores.tolist(), top_ids.tolist(), strict=True)):
            chosen: list[tuple[int, int, float]] = []
            for rank, (score, flat) in enumerate(zip(row_scores, row_ids, strict=True)):
                beam, token = item * k + flat // vocab, flat % vocab
                if done[item] or score == float("-inf"):
                    break
                if token == eos:
                    if rank < k:
                        finished[item].append((score / (step + 1) ** length_penalty, [*seqs[beam], eos]))
                else:
                    chosen.append((beam, token, score))
                if len(chosen) == k:
                    break
            if not done[item] and len(finished[item]) >= k:
                worst = sorted(s for s, _ in finished[item])[-k]
                done[item] = worst >= max(s for _, _, s in chosen) / (step + 1) ** length_penalty if chosen else True
            chosen += [(item * k, config.pad_token_id, float("-inf"))] * (k - len(chosen))  # a finished item idles
            for beam, token, score in chosen:
                sources.append(beam)
                next_tokens.append(token)
                next_scores.append(score)
        if all(done):
            break
        index = torch.tensor(sources, device=device)
        state, seqs = state.index_select(0, index), [[*seqs[b], t] for b, t in zip(sources, next_tokens, strict=True)]
        tokens = torch.tensor(next_tokens, device=device)
        scores = torch.tensor(next_scores, device=device).view(items, k)
    else:  # the length limit: live beams are hypotheses too (a cut-off output says so by having no </s>)
        for item in range(items):
            if not done[item]:
                finished[item] += [(s / max(1, len(seqs[item * k + j])) ** length_penalty, seqs[item * k + j])
                                   for j, s in enumerate(scores[item].tolist()) if s > float("-inf")]
    return [max(hyps, key=lambda h: h[0])[1] if hyps else [] for hyps in finished]


def decode(model: RnnMTModel, encoder_states: torch.Tensor, encoder_mask: torch.Tensor, max_new_tokens: int,
           num_beams: int) -> list[list[int]]:
    """Deterministic greedy (num_beams 1) or beam decodes of B encoded sources (model in eval mode)."""
    memory = make_memory(model, encoder_states, encoder_mask.bool())
    if num_beams == 1:
        return greedy_decode(model, memory, max_new_tokens)
    return beam_search(model, memory, max_new_tokens, num_beams)


def stochastic_greedy_decode(
    model: RnnMTModel,
    encoder_states: torch.Tensor,
    encoder_mask: torch.Tensor,
    row_seeds: Sequence[int | None],
    counts: Sequence[int],
    last_k: int,
    sites: frozenset[str],
    max_new_tokens: int,
    input_ids: torch.Tensor | None = None,
) -> list[list[int]]:
    """Greedy decodes of R rows, each under its own masks (the contract of models/translation/mc.py's; `input_ids`
    as in rnn_mc.decoder_hidden). Returns R token lists."""
    memory, masks, index, _ = row_memory(model, encoder_states, encoder_mask, row_seeds, counts, last_k, sites,
                                         input_ids)
    if memory.states.shape[0] != len(row_seeds):
        memory = memory.select(index)
    return greedy_decode(model, memory, max_new_tokens, masks)
