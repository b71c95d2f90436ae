"""Fast MC-dropout forward for BERT-style sequence classifiers: BERT, RoBERTa and DistilBERT, each seen through
its family view (models/sentiment/encoders.py); other classifiers take the generic path (models/sentiment/generic.py).

One call runs every item's T samples as ONE forward over R = Σ max(T_i, 1) rows:
- embeddings and the layers below the top k run once per item, without dropout, on B rows;
- the tensor is expanded to R rows (item i repeated T_i times; a T = 0 item keeps one deterministic
  row) just before the first live dropout, and the top k layers, pooler and head run on R rows.
  Cost ≈ (L − k + k·T)/L of a deterministic pass; k ≥ L is full MC (embedding dropout included).
- the top layer only feeds the pooler through the [CLS] position, so it computes the [CLS] query alone
  (keys/values still come from every position). Exact, and with k = 1 and attention dropout off the
  whole stochastic part is a few [R, hidden] matmuls: MC costs about what a deterministic pass does.

The deterministic layers below the stochastic region run on packed tokens ([N_tokens, hidden], padding
removed): projections and the feed-forward, most of the arithmetic at these lengths, never touch pad
positions, and only the attention kernel sees the padded [B, L] layout. Batches of mixed lengths (what a
server gets) lose nothing to padding there.

Attention uses the fused scaled_dot_product_attention kernel unless attention-probability dropout is
live in a stochastic layer, where it is computed explicitly so the mask can be seeded per row.
The layer maths mirrors transformers' BertLayer / RobertaLayer / DistilBERT TransformerBlock (post-LayerNorm);
tests check each against the library's own eval forward, so a transformers change that breaks a mirror fails loudly.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.core.dropout import MaskSource, mix_seed, row_index, validate_sites
from models.core.ood import pool
from models.sentiment import generic
from models.sentiment.encoders import DropoutRates, Family, LayerView, family_of

__all__ = ["DropoutRates", "forward_logits", "mc_logits", "num_layers", "row_seeds"]

EMBEDDINGS_SITE = 0


def _site(layer: int, slot: int) -> int:
    """Stable site id: slot 0 = attention probs, 1 = attention output, 2 = feed-forward output."""
    return 1 + 3 * layer + slot


def _family(model: nn.Module) -> Family:
    family = family_of(model)
    if family is None:
        raise TypeError(f"{type(model).__name__} has no fast MC path (models/sentiment/generic.py serves it)")
    return family


def num_layers(model: nn.Module) -> int:
    """Encoder layers of the classifier (a model without a fast path: as its config states them)."""
    family = family_of(model)
    return len(family.layers(model)) if family is not None else generic.num_layers(model)


def row_seeds(mc_samples: Sequence[int], seeds: Sequence[int]) -> tuple[list[int | None], list[int]]:
    """Expand items to rows: item i gives T_i rows seeded (seed_i, t), or one deterministic row if T_i = 0.
    Returns (seed per row, rows per item)."""
    per_row: list[int | None] = []
    counts: list[int] = []
    for samples, seed in zip(mc_samples, seeds, strict=True):
        if samples < 0:
            raise ValueError(f"mc_samples must be >= 0, got {samples}")
        if samples == 0:
            per_row.append(None)
            counts.append(1)
        else:
            per_row.extend(mix_seed(seed, t) for t in range(samples))
            counts.append(samples)
    return per_row, counts


class _Rows:
    """Tracks whether activations are still per item (B rows) or already per sample (R rows)."""

    def __init__(self, counts: list[int], device: torch.device) -> None:
        self.index = row_index(counts, device)
        self.expanded = False

    def expand(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.expanded = True
        return tuple(t.index_select(0, self.index) for t in tensors)


def _attention(
    layer: LayerView,
    h: torch.Tensor,
    key_mask: torch.Tensor,
    cls_only: bool,
    drop: MaskSource | None,
    p_attn: float,
    site: int,
) -> torch.Tensor:
    """Self-attention context [rows, Lq, hidden]; Lq = 1 when cls_only."""
    rows, length, hidden = h.shape
    heads = layer.heads
    head_dim = hidden // heads
    q_in = h[:, :1] if cls_only else h
    q = layer.query(q_in).view(rows, -1, heads, head_dim).transpose(1, 2)
    k = layer.key(h).view(rows, length, heads, head_dim).transpose(1, 2)
    v = layer.value(h).view(rows, length, heads, head_dim).transpose(1, 2)
    mask = key_mask[:, None, None, :]
    if drop is not None and p_attn > 0:
        scores = (q @ k.transpose(-1, -2)) * head_dim**-0.5
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = drop.dropout(torch.softmax(scores, dim=-1), p_attn, site)
        context = probs @ v
    else:
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return context.transpose(1, 2).reshape(rows, -1, hidden)


class _Packing:
    """Maps between padded [B, L, ·] activations and packed [N, ·] rows of the real tokens."""

    def __init__(self, key_mask: torch.Tensor) -> None:
        self.batch, self.length = key_mask.shape
        self.index = key_mask.reshape(-1).nonzero().squeeze(1)

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.reshape(self.batch * self.length, -1).index_select(0, self.index)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        out = packed.new_zeros(self.batch * self.length, packed.shape[-1])
        out.index_copy_(0, self.index, packed)
        return out.view(self.batch, self.length, -1)


def _packed_layer(layer: LayerView, x: torch.Tensor, packing: _Packing, key_mask: torch.Tensor) -> torch.Tensor:
    """One deterministic encoder layer on packed tokens x [N, hidden] → [N, hidden]."""
    heads = layer.heads
    head_dim = x.shape[-1] // heads

    def heads_view(t: torch.Tensor) -> torch.Tensor:
        return packing.unpack(t).view(packing.batch, packing.length, heads, head_dim).transpose(1, 2)

    q, k, v = heads_view(layer.query(x)), heads_view(layer.key(x)), heads_view(layer.value(x))
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    context = packing.pack(context.transpose(1, 2))
    attended = layer.attention_norm(layer.attention_out(context) + x)
    return layer.output_norm(layer.ffn_out(layer.ffn_in(attended)) + attended)


def forward_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mc_samples: Sequence[int],
    seeds: Sequence[int],
    last_k: int,
    sites: frozenset[str],
    feature_layers: Collection[int] = (),
    features_out: dict[int, torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Logits per item: a [max(T_i, 1), C] tensor for item i. Inputs are [B, L] (mask 1 = token).

    `last_k` ≥ 1 layers run stochastically (≥ L means full MC). Call under torch.inference_mode() and,
    for reduced precision, torch.autocast. The model must be in eval mode (checked).
    `features_out`, when given, receives for each of `feature_layers` (0 = embeddings, i = after layer i, i < L)
    the pooled OOD features [B, d] (models/core/ood.pool) of that hidden state, taken while it is still
    deterministic and per item; a layer the pass reaches only after rows expanded (full MC) is left out.
    """
    if family_of(model) is None:  # no fast path: the generic one (full MC, one forward per MC item)
        return generic.forward_logits(model, input_ids, attention_mask, mc_samples, seeds, sites, feature_layers,
                                      features_out)
    if model.training:
        raise RuntimeError("forward_logits expects model.eval(); MC dropout is applied explicitly")
    sites = validate_sites(sites)
    family = _family(model)
    views = family.layers(model)
    n_layers = len(views)
    if last_k < 1:
        raise ValueError(f"last_k must be >= 1, got {last_k}")
    k = min(last_k, n_layers)
    rates = DropoutRates.of(model).live(sites)
    seeds_per_row, counts = row_seeds(mc_samples, seeds)
    drop = MaskSource(seeds_per_row, input_ids.device)
    stochastic = drop.any_stochastic
    rows = _Rows(counts, input_ids.device)
    key_mask = attention_mask.bool()

    wanted = set(feature_layers) if features_out is not None else set()

    def keep(layer: int, hidden: torch.Tensor) -> None:
        if layer in wanted and features_out is not None:
            features_out[layer] = pool(hidden, key_mask)

    h = family.embed(model, input_ids, attention_mask)  # eval mode: no dropout inside
    keep(0, h)
    if stochastic and last_k >= n_layers and rates.hidden > 0:
        h, key_mask = rows.expand(h, key_mask)
        h = drop.dropout(h, rates.hidden, EMBEDDINGS_SITE)

    # Layers that run once per item with no dropout (below the stochastic region and below the [CLS]-only
    # top layer) run packed; with full MC and live embedding dropout there are none.
    first_live = n_layers - k if stochastic else n_layers
    packed_layers = 0 if rows.expanded else min(first_live, n_layers - 1)
    if packed_layers:
        packing = _Packing(key_mask)
        x = packing.pack(h)
        for index, layer in enumerate(views[:packed_layers]):
            x = _packed_layer(layer, x, packing, key_mask)
            if index + 1 in wanted:
                keep(index + 1, packing.unpack(x))
        h = packing.unpack(x)

    for index, layer in enumerate(views):
        if index < packed_layers:
            continue
        live = stochastic and index >= n_layers - k
        cls_only = index == n_layers - 1
        layer_drop = drop if live else None
        if live and rates.attention > 0 and not rows.expanded:
            h, key_mask = rows.expand(h, key_mask)
        context = _attention(layer, h, key_mask, cls_only, layer_drop, rates.attention, _site(index, 0))
        residual = h[:, :1] if cls_only else h
        out = layer.attention_out(context)
        if live and rates.hidden > 0 and layer.attention_out_dropout:
            if not rows.expanded:
                out, residual, h, key_mask = rows.expand(out, residual, h, key_mask)
            out = drop.dropout(out, rates.hidden, _site(index, 1))
        attended = layer.attention_norm(out + residual)
        ff = layer.ffn_out(layer.ffn_in(attended))
        if live and rates.hidden > 0:
            if not rows.expanded:  # DistilBERT: its attention output has no dropout, rows expand here
                ff, attended, h, key_mask = rows.expand(ff, attended, h, key_mask)
            ff = drop.dropout(ff, rates.hidden, _site(index, 2))
        h = layer.output_norm(ff + attended)
        if not rows.expanded and not cls_only:
            keep(index + 1, h)

    head_calls = [0]

    def head_dropout(x: torch.Tensor) -> torch.Tensor:
        # Each head dropout of the family (RoBERTa has two) gets its own site; BERT's one keeps site (L, 0).
        slot, head_calls[0] = head_calls[0], head_calls[0] + 1
        if not (stochastic and rates.head > 0):
            return x
        if not rows.expanded:
            (x,) = rows.expand(x)
        return drop.dropout(x, rates.head, _site(n_layers, slot))

    logits = family.head(model, h[:, 0], head_dropout)
    if not rows.expanded:
        (logits,) = rows.expand(logits)
    logits = logits.float()
    return list(torch.split(logits, counts))


def mc_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mc_samples: int,
    seed: int,
    last_k: int | None,
    sites: frozenset[str],
) -> torch.Tensor:
    """Every item with the same T: logits [B, max(T, 1), C]. Item i uses seed mix(seed, i), so results
    are reproducible and independent across items. `last_k=None` means full MC."""
    batch = input_ids.shape[0]
    k = num_layers(model) if last_k is None else last_k
    seeds = [mix_seed(seed, 1_000_003 + i) for i in range(batch)]
    per_item = forward_logits(model, input_ids, attention_mask, [mc_samples] * batch, seeds, k, sites)
    return torch.stack(per_item)
