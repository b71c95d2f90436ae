"""Last-k-layer MC dropout for a Llama causal LM, scored teacher-forced in one batched pass (docs/architecture.md §4).

The deterministic decode (models/generation/decode.py) already ran every layer once without dropout; a
pre-hook on layer L−k (`capture_layer_input`) keeps that layer's input at every position. Scoring then
runs only the top k layers, on R = Σ T_i rows (item i's states repeated T_i times), each row under its own
seeded masks (models/dropout.MaskSource) at the residual branches where training applied dropout
(outputs of `o_proj` and `down_proj`, models/generation/model.py), then the final norm and the output
layer on the scored positions only. With k = L the captured input is the embedding output, so this is
full MC. Attention-probability dropout is not a serving site for this model ("hidden" only): the fused
attention kernel has no per-row seeded dropout.

`mask` [B, S] marks real tokens; positions count from each row's first real token, so left padding (the
decoder's) and right padding both work. Masks are laid out by column, so a caller that wants a row's masks
independent of its batch passes it right-padded (models/generation/predictor.py does).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from models.core.dropout import MaskSource, check_rows, row_index

SUPPORTED_SITES = frozenset({"hidden"})


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Position ids [B, S] of a padded mask: 0 at each row's first real token (left pads get 0)."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


@contextmanager
def capture_layer_input(model: nn.Module, layer_index: int) -> Iterator[list[torch.Tensor]]:
    """Collect the hidden-state input of decoder layer `layer_index` (== L captures the final norm's input)
    on every forward inside the block; yields the list the chunks [B, s, d] are appended to."""
    layers = model.model.layers
    target = layers[layer_index] if layer_index < len(layers) else model.model.norm
    chunks: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], kwargs: dict) -> None:
        chunks.append((args[0] if args else kwargs["hidden_states"]).detach())

    handle = target.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield chunks
    finally:
        handle.remove()


def _attention_mask(mask: torch.Tensor) -> torch.Tensor:
    """Boolean [R, 1, S, S]: causal and key is a real token; a padding query may see itself (no NaN rows)."""
    length = mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    allowed = causal & mask.bool()[:, None, None, :]
    return allowed | torch.eye(length, dtype=torch.bool, device=mask.device)


def top_layers(
    model: nn.Module,
    hidden: torch.Tensor,
    mask: torch.Tensor,
    row_seeds: Sequence[int | None],
    counts: Sequence[int],
    last_k: int,
) -> torch.Tensor:
    """Run the top `last_k` decoder layers on captured inputs `hidden` [B, S, d] (padded, `mask` [B, S])
    for R = Σ counts rows (item i owns counts[i] consecutive rows of `row_seeds`; None = no dropout).
    Returns the final-normed states [R, S, d]. Call under torch.inference_mode() with model.eval()."""
    if model.training:
        raise RuntimeError("top_layers expects model.eval(); MC dropout is applied explicitly")
    layers = model.model.layers
    k = min(max(1, last_k), len(layers))
    check_rows(hidden.shape[0], counts, row_seeds)
    device = hidden.device
    index = row_index(counts, device)
    h = hidden.index_select(0, index)
    row_mask = mask.index_select(0, index)
    attn_mask = _attention_mask(row_mask)
    cos, sin = model.model.rotary_emb(h, positions_of(row_mask))
    rate = float(getattr(model.config, "residual_dropout", 0.0) or 0.0)
    drop = MaskSource(row_seeds, device)
    for offset, layer in enumerate(layers[len(layers) - k:]):
        site = 1000 * (len(layers) - k + offset)
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        shape = (*x.shape[:-1], -1, attn.head_dim)
        q = attn.q_proj(x).view(shape).transpose(1, 2)
        key = attn.k_proj(x).view(shape).transpose(1, 2)
        value = attn.v_proj(x).view(shape).transpose(1, 2)
        q, key = apply_rotary_pos_emb(q, key, cos, sin)
        out = F.scaled_dot_product_attention(q, key, value, attn_mask=attn_mask, scale=attn.scaling,
                                             enable_gqa=key.shape[1] != q.shape[1])
        out = attn.o_proj(out.transpose(1, 2).reshape(*x.shape[:-1], -1))
        h = h + drop.dropout(out, rate, site + 1)
        x = layer.post_attention_layernorm(h)
        h = h + drop.dropout(layer.mlp(x), rate, site + 2)
    return model.model.norm(h)


def project(model: nn.Module, states: torch.Tensor) -> torch.Tensor:
    """Output-layer logits [..., V] (float32) of final-normed states [..., d]."""
    return model.lm_head(states).float()
