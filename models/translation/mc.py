"""MC-dropout teacher-forced scoring (and stochastic greedy decoding) for MarianMTModel.

`decoder_logits` scores fixed decoder inputs for a batch of B items as ONE forward over R rows, where item i
owns `counts[i]` consecutive rows and row r draws its dropout masks from `row_seeds[r]` (None = a
deterministic row, exactly the eval forward):
- the encoder runs once per item, without dropout (`encode`);
- decoder layers below the top k run once per item on B rows, without dropout; the tensor is expanded to
  R rows at the first stochastic layer (k ≥ L is full MC, embedding dropout included);
- cross-attention keys/values are projections of the deterministic encoder states, so they are computed
  on B rows and expanded by indexing, never recomputed per sample.

Dropout sites: "hidden" = residual dropouts (embeddings, self-/cross-attention output, FFN output) and the
FFN activation dropout; "attention" = self- and cross-attention probabilities; Marian has no "head" dropout.
Masks come from `models.core.dropout.MaskSource`; hidden-state masks are position-leading, so a row's mask at a
position does not depend on the batch or on padding (attention-probability masks do depend on the padded
key length, as in models/sentiment/mc.py).

The layer maths mirrors transformers' MarianDecoderLayer (post-LayerNorm); a test checks it against the
library's eval forward, so a transformers change that breaks the mirror fails loudly. Dropout in the encoder
(last-k beyond the decoder's layers, "whole-model") is models/translation/mc_encoder.py: it runs the encoder per
row and hands this module R rows of encoder states with counts of 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.core.dropout import MaskSource, check_rows, row_index, validate_sites
from models.core.ood import pool

EMBEDDINGS_SITE = 0
_SLOTS = 6  # self-attn probs, self-attn out, cross-attn probs, cross-attn out, FFN activation, FFN out


def _site(layer: int, slot: int) -> int:
    return 1 + _SLOTS * layer + slot


@dataclass(frozen=True)
class MarianDropoutRates:
    """Dropout probabilities of a Marian model: residual, FFN activation, attention probabilities."""

    hidden: float
    activation: float
    attention: float

    @classmethod
    def of(cls, model: nn.Module) -> MarianDropoutRates:
        config = model.config
        return cls(float(config.dropout), float(config.activation_dropout), float(config.attention_dropout))

    def live(self, sites: frozenset[str]) -> MarianDropoutRates:
        """These rates with the sites that are off at MC time set to 0."""
        hidden = "hidden" in sites
        return MarianDropoutRates(
            self.hidden if hidden else 0.0,
            self.activation if hidden else 0.0,
            self.attention if "attention" in sites else 0.0,
        )

    @property
    def any(self) -> bool:
        return max(self.hidden, self.activation, self.attention) > 0


def num_decoder_layers(model: nn.Module) -> int:
    return len(model.model.decoder.layers)


def encode(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Deterministic encoder states [B, S, d] (the model must be in eval mode)."""
    return encode_with_features(model, input_ids, attention_mask)[0]


def encode_with_features(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         feature_layers: Sequence[int] = (),
                         pooling: str = "mean") -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Deterministic encoder states [B, S, d] and, for each of `feature_layers` (0 = embeddings, i = after encoder
    layer i), the pooled OOD features [B, d] of that hidden state (models/core/ood.pool), from the same pass."""
    out = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask,
                              output_hidden_states=bool(feature_layers))
    features = {layer: pool(out.hidden_states[layer], attention_mask, pooling) for layer in feature_layers}
    return out.last_hidden_state, features


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    rows, length, dim = x.shape
    return x.view(rows, length, heads, dim // heads).transpose(1, 2)


def attend(
    attn: nn.Module,
    x: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None,
    drop: MaskSource | None,
    p: float,
    site: int,
) -> torch.Tensor:
    """Attention output (after out_proj) [rows, Lq, d]. `key_mask` None = causal self-attention."""
    rows, length, dim = x.shape
    q = split_heads(attn.q_proj(x), attn.num_heads)
    if drop is not None and p > 0:
        scores = (q @ k.transpose(-1, -2)) * attn.scaling
        if key_mask is None:
            causal = torch.ones(length, k.shape[-2], dtype=torch.bool, device=x.device).tril()
            scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
        else:
            scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        context = drop.dropout(torch.softmax(scores, dim=-1), p, site) @ v
    elif key_mask is None:
        context = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling)
    else:
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :], scale=attn.scaling)
    return attn.out_proj(context.transpose(1, 2).reshape(rows, length, dim))


def feed_forward(layer: nn.Module, h: torch.Tensor, drop: MaskSource | None, rates: MarianDropoutRates,
                 activation_site: int, output_site: int) -> torch.Tensor:
    """A Marian layer's post-LayerNorm feed-forward block (encoder and decoder alike), with the FFN activation and
    output dropouts at the given sites when `drop` is not None."""
    ff = layer.activation_fn(layer.fc1(h))
    if drop is not None:
        ff = drop.dropout(ff, rates.activation, activation_site)
    ff = layer.fc2(ff)
    if drop is not None:
        ff = drop.dropout(ff, rates.hidden, output_site)
    return layer.final_layer_norm(h + ff)


def decoder_hidden(
    model: nn.Module,
    encoder_states: torch.Tensor,
    encoder_mask: torch.Tensor,
    decoder_input_ids: torch.Tensor,
    row_seeds: Sequence[int | None],
    counts: Sequence[int],
    last_k: int,
    sites: frozenset[str],
) -> torch.Tensor:
    """Top decoder states [R, Ly, d] of `decoder_input_ids` [B, Ly] (right-padded; causal attention means
    padding never reaches a real position). Item i owns `counts[i]` consecutive rows of `row_seeds`
    (R = Σ counts). Call under torch.inference_mode(); the model must be in eval mode (checked)."""
    if model.training:
        raise RuntimeError("decoder_logits expects model.eval(); MC dropout is applied explicitly")
    if last_k < 1:
        raise ValueError(f"last_k must be >= 1, got {last_k}")
    check_rows(decoder_input_ids.shape[0], counts, row_seeds)
    sites = validate_sites(sites)
    decoder = model.model.decoder
    layers = decoder.layers
    n_layers = len(layers)
    k = min(last_k, n_layers)
    rates = MarianDropoutRates.of(model).live(sites)
    device = decoder_input_ids.device
    drop = MaskSource(row_seeds, device)
    stochastic = drop.any_stochastic and rates.any
    index = row_index(counts, device)
    expanded = False
    enc_mask = encoder_mask.bool()

    length = decoder_input_ids.shape[1]
    h = decoder.embed_tokens(decoder_input_ids) * decoder.embed_scale
    h = h + decoder.embed_positions((decoder_input_ids.shape[0], length), 0)
    first_live = n_layers - k if stochastic else n_layers
    if stochastic and k >= n_layers and rates.hidden > 0:
        h, expanded = h.index_select(0, index), True
        h = drop.dropout(h, rates.hidden, EMBEDDINGS_SITE)

    for i, layer in enumerate(layers):
        live = i >= first_live
        if live and not expanded:
            h, expanded = h.index_select(0, index), True
        d = drop if live else None
        mask = enc_mask.index_select(0, index) if expanded else enc_mask

        # self-attention (causal)
        sa = layer.self_attn
        out = attend(sa, h, split_heads(sa.k_proj(h), sa.num_heads), split_heads(sa.v_proj(h), sa.num_heads),
                     None, d, rates.attention, _site(i, 0))
        if d is not None:
            out = d.dropout(out, rates.hidden, _site(i, 1))
        h = layer.self_attn_layer_norm(h + out)

        # cross-attention: keys/values projected once per encoder row (B items, or R rows when the encoder ran per
        # row: mc_encoder passes counts of 1), expanded by indexing, never recomputed per sample
        ca = layer.encoder_attn
        k_enc = split_heads(ca.k_proj(encoder_states), ca.num_heads)
        v_enc = split_heads(ca.v_proj(encoder_states), ca.num_heads)
        if expanded:
            k_enc, v_enc = k_enc.index_select(0, index), v_enc.index_select(0, index)
        out = attend(ca, h, k_enc, v_enc, mask, d, rates.attention, _site(i, 2))
        if d is not None:
            out = d.dropout(out, rates.hidden, _site(i, 3))
        h = layer.encoder_attn_layer_norm(h + out)

        h = feed_forward(layer, h, d, rates, _site(i, 4), _site(i, 5))

    if not expanded:
        h = h.index_select(0, index)
    return h


def project(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Output-layer logits [..., V] (float32) of decoder states [..., d]. Callers that score ragged outputs
    pack the real positions first: the vocabulary projection is most of the scoring pass's cost."""
    return (model.lm_head(hidden) + model.final_logits_bias).float()


def decoder_logits(
    model: nn.Module,
    encoder_states: torch.Tensor,
    encoder_mask: torch.Tensor,
    decoder_input_ids: torch.Tensor,
    row_seeds: Sequence[int | None],
    counts: Sequence[int],
    last_k: int,
    sites: frozenset[str],
) -> torch.Tensor:
    """Logits [R, Ly, V] of `decoder_hidden` (same contract) at every position, padding included."""
    hidden = decoder_hidden(model, encoder_states, encoder_mask, decoder_input_ids, row_seeds, counts, last_k, sites)
    return project(model, hidden)


def stochastic_greedy_decode(
    model: nn.Module,
    encoder_states: torch.Tensor,
    encoder_mask: torch.Tensor,
    row_seeds: Sequence[int | None],
    counts: Sequence[int],
    last_k: int,
    sites: frozenset[str],
    max_new_tokens: int,
) -> list[list[int]]:
    """Greedy decodes of R rows, each under its own dropout masks (row r's model is the one its seed
    fixes: position-leading masks make recomputing the prefix each step consistent). No KV cache: cost
    grows with the square of the output length, which is why "sampling" mode is opt-in.
    Returns R token lists (generated ids, `</s>` included when reached)."""
    config = model.config
    start, eos, pad = config.decoder_start_token_id, config.eos_token_id, config.pad_token_id
    rows = len(row_seeds)
    index = row_index(counts, encoder_states.device)
    states, mask = encoder_states.index_select(0, index), encoder_mask.index_select(0, index)
    ids = torch.full((rows, 1), start, dtype=torch.long, device=encoder_states.device)
    done = torch.zeros(rows, dtype=torch.bool, device=ids.device)
    for _ in range(max_new_tokens):
        logits = decoder_logits(model, states, mask, ids, row_seeds, [1] * rows, last_k, sites)
        step = logits[:, -1].argmax(dim=-1)
        step = torch.where(done, torch.full_like(step, pad), step)
        ids = torch.cat([ids, step[:, None]], dim=1)
        done |= step == eos
        if bool(done.all()):
            break
    outputs = []
    for row in ids[:, 1:].tolist():
        tokens = []
        for token in row:
            tokens.append(token)
            if token == eos:
                break
        outputs.append(tokens)
    return outputs
