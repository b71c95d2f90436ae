"""Marian MC dropout that reaches into the encoder ("whole-model" MC), with the row contract of
models/translation/mc.py: B items, item i owns `counts[i]` consecutive rows of `row_seeds` (R = Σ counts), row r
draws its masks from `row_seeds[r]` (None = a deterministic row, the eval forward up to float rounding).

What last-k means for Marian (as for the recurrent model, models/translation/rnn_mc.py): k counts layers from the top
of the whole stack, decoder layers first, then encoder layers; `num_layers` = decoder + encoder layers.
- k ≤ D (decoder layers): exactly `mc.decoder_hidden` as before: the encoder runs once per item without dropout;
  k = D is "decoder-full".
- D < k < D + E: the top k − D encoder layers drop out too. The encoder layers below them run once per item on B
  rows without dropout; the tensor is expanded to R rows at the first live encoder layer, and the decoder then runs
  decoder-full on the R rows, its cross-attention keys/values projected from each row's own encoder states.
- k ≥ D + E ("whole-model"): also the dropout on the encoder's embedding output (the encoder runs per row from its
  embeddings on).

Sites: "hidden" = residual dropouts (embeddings, self-attention output, FFN output) and the FFN activation dropout;
"attention" = self-attention probabilities. Encoder site ids start at ENCODER_SITE_BASE, far above every decoder site
id (mc._site), so a row's encoder and decoder masks are drawn from different seeds. Hidden masks are
position-leading (models.core.dropout.MaskSource): a row's mask does not depend on batch composition or padding;
attention-probability masks depend on the padded source length, as in the decoder.

The layer maths mirrors transformers' MarianEncoderLayer (post-LayerNorm); tests check deterministic rows against
the library's eval encoder and the sampled rows' distribution against its train-mode dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.core.dropout import MaskSource, check_rows, row_index, validate_sites
from models.translation import mc

ENCODER_SITE_BASE = 1 << 20  # above 1 + 6 · decoder layers for any real Marian: encoder masks never reuse a seed
ENCODER_EMBEDDINGS_SITE = ENCODER_SITE_BASE
_SLOTS = 4  # self-attn probs, self-attn out, FFN activation, FFN out


def encoder_site(layer: int, slot: int) -> int:
    """MaskSource site id of `slot` (0 self-attn probs, 1 self-attn out, 2 FFN activation, 3 FFN out) of encoder
    layer `layer` (0 = bottom)."""
    return ENCODER_SITE_BASE + 1 + _SLOTS * layer + slot


def layer_counts(model: nn.Module) -> tuple[int, int]:
    """(encoder layers, decoder layers)."""
    return len(model.model.encoder.layers), len(model.model.decoder.layers)


def num_layers(model: nn.Module) -> int:
    """Layers last-k counts: decoder then encoder layers (module docstring)."""
    return sum(layer_counts(model))


def live_encoder_layers(model: nn.Module, last_k: int) -> int:
    """How many top encoder layers last-k makes stochastic (0 when k ≤ decoder layers)."""
    enc, dec = layer_counts(model)
    return min(max(0, last_k - dec), enc)


def mode(model: nn.Module, last_k: int) -> str:
    """describe's name of the MC mode of last-k (the recurrent model's names)."""
    enc, dec = layer_counts(model)
    if last_k >= enc + dec:
        return "whole-model"
    if last_k < dec:
        return f"last-{last_k}-decoder-layers"
    return "decoder-full" if last_k == dec else f"decoder-full+last-{last_k - dec}-encoder-layers"


def encoder_rows(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    row_seeds: Sequence[int | None],
    counts: Sequence[int],
    live_layers: int,
    sites: frozenset[str],
    embeddings: bool,
) -> torch.Tensor:
    """Encoder states [R, S, d] of the source `input_ids` [B, S] (right-padded, `attention_mask` [B, S]) per row,
    with the top `live_layers` encoder layers (and the embedding output when `embeddings`) under each row's masks.
    Call under torch.inference_mode(); the model must be in eval mode (checked)."""
    if model.training:
        raise RuntimeError("encoder_rows expects model.eval(); MC dropout is applied explicitly")
    check_rows(input_ids.shape[0], counts, row_seeds)
    encoder = model.model.encoder
    layers = encoder.layers
    rates = mc.MarianDropoutRates.of(model).live(validate_sites(sites))
    device = input_ids.device
    drop = MaskSource(row_seeds, device)
    index = row_index(counts, device)
    key_mask = attention_mask.bool()

    h = encoder.embed_tokens(input_ids) * encoder.embed_scale
    h = h + encoder.embed_positions(input_ids.shape)
    expanded = False
    if embeddings and rates.hidden > 0:
        h, key_mask, expanded = h.index_select(0, index), key_mask.index_select(0, index), True
        h = drop.dropout(h, rates.hidden, ENCODER_EMBEDDINGS_SITE)
    first_live = len(layers) - min(live_layers, len(layers))
    for i, layer in enumerate(layers):
        live = i >= first_live
        if live and not expanded:  # the layers below ran once per item: rows start here
            h, key_mask, expanded = h.index_select(0, index), key_mask.index_select(0, index), True
        d = drop if live else None

        sa = layer.self_attn
        out = mc.attend(sa, h, mc.split_heads(sa.k_proj(h), sa.num_heads), mc.split_heads(sa.v_proj(h), sa.num_heads),
                        key_mask, d, rates.attention, encoder_site(i, 0))
        if d is not None:
            out = d.dropout(out, rates.hidden, encoder_site(i, 1))
        h = layer.self_attn_layer_norm(h + out)

        h = mc.feed_forward(layer, h, d, rates, encoder_site(i, 2), encoder_site(i, 3))
        if h.dtype == torch.float16 and not torch.isfinite(h).all():  # the library's fp16 overflow guard
            limit = torch.finfo(h.dtype).max - 1000
            h = h.clamp(-limit, limit)
    return h if expanded else h.index_select(0, index)


def model_hidden(
    model: nn.Module,
    encoder_states: torch.Tensor,
    encoder_mask: torch.Tensor,
    input_ids: torch.Tensor | None,
    decoder_input_ids: torch.Tensor,
    row_seeds: Sequence[int | None],
    counts: Sequence[int],
    last_k: int,
    sites: frozenset[str],
) -> torch.Tensor:
    """Top decoder states [R, Ly, d] under last-k over the whole stack (module docstring); the contract of
    `mc.decoder_hidden` plus the source `input_ids` [B, S], needed when k reaches the encoder."""
    per_row = _encoder_per_row(model, encoder_states, encoder_mask, input_ids, row_seeds, counts, last_k, sites)
    if per_row is None:  # k ≤ decoder layers, or nothing stochastic: the decoder-side pass, unchanged
        return mc.decoder_hidden(model, encoder_states, encoder_mask, decoder_input_ids, row_seeds, counts, last_k,
                                 sites)
    states, mask, index = per_row
    return mc.decoder_hidden(model, states, mask, decoder_input_ids.index_select(0, index), row_seeds,
                             [1] * len(row_seeds), layer_counts(model)[1], sites)


def stochastic_greedy_decode(
    model: nn.Module,
    encoder_states: torch.Tensor,
    encoder_mask: torch.Tensor,
    input_ids: torch.Tensor | None,
    row_seeds: Sequence[int | None],
    counts: Sequence[int],
    last_k: int,
    sites: frozenset[str],
    max_new_tokens: int,
) -> list[list[int]]:
    """`mc.stochastic_greedy_decode` under last-k over the whole stack: when k reaches the encoder, each row's
    decode reads its own encoder states, computed once under the row's masks (the same masks its score sees)."""
    per_row = _encoder_per_row(model, encoder_states, encoder_mask, input_ids, row_seeds, counts, last_k, sites)
    if per_row is None:
        return mc.stochastic_greedy_decode(model, encoder_states, encoder_mask, row_seeds, counts, last_k, sites,
                                           max_new_tokens)
    states, mask, _ = per_row
    return mc.stochastic_greedy_decode(model, states, mask, row_seeds, [1] * len(row_seeds),
                                       layer_counts(model)[1], sites, max_new_tokens)


def _encoder_per_row(
    model: nn.Module,
    encoder_states: torch.Tensor,
    encoder_mask: torch.Tensor,
    input_ids: torch.Tensor | None,
    row_seeds: Sequence[int | None],
    counts: Sequence[int],
    last_k: int,
    sites: frozenset[str],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(encoder states [R, S, d], mask [R, S], row → item index) when last-k drops out in the encoder and some row
    is stochastic; None when the deterministic per-item encoder states serve (the fast path)."""
    live = live_encoder_layers(model, last_k)
    stochastic = any(seed is not None for seed in row_seeds)
    if live == 0 or not stochastic or not mc.MarianDropoutRates.of(model).live(validate_sites(sites)).any:
        return None
    if input_ids is None:
        raise ValueError(f"last_k {last_k} drops out in the encoder: the source input_ids are needed")
    check_rows(encoder_states.shape[0], counts, row_seeds)
    states = encoder_rows(model, input_ids, encoder_mask, row_seeds, counts, live, sites,
                          embeddings=last_k >= num_layers(model))
    index = row_index(counts, encoder_states.device)
    return states, encoder_mask.index_select(0, index), index

