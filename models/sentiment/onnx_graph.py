"""The last-k MC-dropout forward of models/sentiment/mc.py as an exportable graph, with the dropout masks as inputs.

`MCGraph(model, last_k)` is an nn.Module that computes what `forward_logits` computes with the attention
dropout site off (the default), and `export_onnx` writes it as ONNX. As in the torch path, the deterministic
layers below the stochastic region run on the real tokens only (packed inside the graph from `attention_mask`,
so a batch of mixed lengths costs its tokens, not B × L) and rows expand at the first live dropout. Inputs:

- `input_ids`, `attention_mask`: int64 [B, L] (mask 1 = token);
- `row_index`: int64 [R], the item each output row belongs to (item i repeated max(T_i, 1) times);
- the dropout multipliers, float32, one per live site in `mask_names(num_layers, last_k)` order: keep/(1 − p)
  or 0 for a sampled row, 1 for a deterministic row (T = 0). Shapes: `mask_embeddings` [R, L, H] (full MC only),
  `mask_layer{i}_attention_output` and `mask_layer{i}_output` [R, L, H] below the top layer and [R, 1, H] for
  the top layer (it computes only the [CLS] query), `mask_head` [R, H].

Output `logits` float32 [R, C] (before temperature); with `feature_layers` also, for each of them in order,
`ood_features_<layer>` float32 [B, H] (`ood_output`), the L2-normalised mean of that layer's hidden state over
each item's tokens (models/core/ood.pool), the OOD detector's input, so serving needs no second pass.
`masks_for` draws the multipliers with `MaskSource`, seeded per row exactly as the torch path draws them, so the
same request and seed give the same answer on either
backend (up to float rounding: the graph runs attention as explicit matmuls in float32, where the torch path
uses the fused kernel and possibly bf16 autocast). A device app may draw its masks from any RNG instead.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from models.core.dropout import MaskSource
from models.core.ood import pool
from models.sentiment.mc import EMBEDDINGS_SITE, DropoutRates, _site, num_layers, row_seeds

INPUTS = ("input_ids", "attention_mask", "row_index")
OUTPUT = "logits"
OOD_OUTPUT = "ood_features"  # the prefix of each feature output's name (`ood_output`)
# Opset 17: LayerNormalization as one op (onnxruntime, Core ML and most mobile runtimes take it).
OPSET = 17


def mask_names(n_layers: int, last_k: int) -> list[str]:
    """Names of the mask inputs of a graph with `last_k` stochastic layers (k ≥ n_layers: full MC)."""
    k = min(last_k, n_layers)
    names = ["mask_embeddings"] if last_k >= n_layers else []
    for index in range(n_layers - k, n_layers):
        names += [f"mask_layer{index}_attention_output", f"mask_layer{index}_output"]
    return [*names, "mask_head"]


def masks_for(n_layers: int, last_k: int, hidden: int, length: int, mc_samples: Sequence[int],
              seeds: Sequence[int], rates: DropoutRates) -> dict[str, torch.Tensor]:
    """The mask inputs for items with T = `mc_samples` and `seeds`, padded length `length` (see module doc).
    Raises ValueError when attention-probability dropout is live (the graph has no such site)."""
    if rates.attention > 0:
        raise ValueError("the exported MC graph has no attention-probability dropout; serve sites hidden/head")
    per_row, _ = row_seeds(mc_samples, seeds)
    source = MaskSource(per_row, "cpu")
    rows = len(per_row)
    k = min(last_k, n_layers)

    def draw(shape: tuple[int, ...], p: float, site: int) -> torch.Tensor:
        return source.dropout(torch.ones((rows, *shape)), p, site)

    masks: dict[str, torch.Tensor] = {}
    if last_k >= n_layers:
        masks["mask_embeddings"] = draw((length, hidden), rates.hidden, EMBEDDINGS_SITE)
    for index in range(n_layers - k, n_layers):
        positions = 1 if index == n_layers - 1 else length
        masks[f"mask_layer{index}_attention_output"] = draw((positions, hidden), rates.hidden, _site(index, 1))
        masks[f"mask_layer{index}_output"] = draw((positions, hidden), rates.hidden, _site(index, 2))
    masks["mask_head"] = draw((hidden,), rates.head, _site(n_layers, 0))
    return masks


def row_index(mc_samples: Sequence[int]) -> torch.Tensor:
    """int64 [R]: item i repeated max(T_i, 1) times."""
    return torch.repeat_interleave(torch.arange(len(mc_samples)), torch.tensor([max(t, 1) for t in mc_samples]))


def ood_output(layer: int) -> str:
    """The name of the graph output holding the pooled OOD features of `layer`."""
    return f"{OOD_OUTPUT}_{layer}"


def feature_layer_in_graph(n_layers: int, last_k: int, layer: int) -> bool:
    """Whether the hidden state after layer `layer` (0 = embeddings) is still deterministic and per item in the
    graph, so it can give the OOD features: the embeddings, and the layers below the stochastic region."""
    return 0 <= layer <= max(0, min(n_layers - min(last_k, n_layers), n_layers - 1))


class MCGraph(nn.Module):
    """BertForSequenceClassification's last-k MC forward with mask inputs (module docstring). Eval mode only.

    `packed`: the deterministic layers below the stochastic region run on the real tokens only, as in the torch
    path (GEMMs see no padding; attention alone sees [B, L]); off for Core ML, which has no dynamic-length
    NonZero. `feature_layers`: also output the pooled features of each (models/core/ood.pool, `ood_output`); each
    must satisfy `feature_layer_in_graph`."""

    def __init__(self, model: nn.Module, last_k: int, packed: bool = True, feature_layers: Sequence[int] = ()) -> None:
        super().__init__()
        self.model = model.eval()
        self.n_layers = num_layers(model)
        self.last_k = last_k
        self.names = mask_names(self.n_layers, last_k)
        self.packed = packed
        for layer in feature_layers:
            if not feature_layer_in_graph(self.n_layers, last_k, layer):
                raise ValueError(f"layer {layer} is stochastic or per sample in a last-{last_k} graph")
        self.feature_layers = tuple(feature_layers)

    def _attention(self, layer: nn.Module, q_in: torch.Tensor, kv_in: torch.Tensor,
                   key_bias: torch.Tensor) -> torch.Tensor:
        att = layer.attention.self
        split = (att.num_attention_heads, att.attention_head_size)
        # unflatten/flatten, not view(rows, …): no shape read back into Python ints, which Core ML cannot convert.
        q = att.query(q_in).unflatten(-1, split).transpose(1, 2)
        k = att.key(kv_in).unflatten(-1, split).transpose(1, 2)
        v = att.value(kv_in).unflatten(-1, split).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) * att.scaling + key_bias
        return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).flatten(2)

    def _packed_layers(self, h: torch.Tensor, attention_mask: torch.Tensor, key_bias: torch.Tensor, count: int,
                       features: dict[int, torch.Tensor]) -> torch.Tensor:
        """The first `count` layers on packed tokens [N, H]; returns the padded [B, L, H] output."""
        flat = attention_mask.flatten()
        pack = flat.nonzero().squeeze(1)  # [N] flat positions of the real tokens
        # Flat position → packed row; a pad points at a real token of its row (left-aligned), which attention
        # masks as a key and packing drops as a query, so pads never reach the output.
        unpack = (flat.cumsum(0) - 1).clamp(min=0)
        x = h.flatten(0, 1).index_select(0, pack)
        for index, layer in enumerate(self.model.bert.encoder.layer[:count]):
            padded = x.index_select(0, unpack).reshape_as(h)
            context = self._attention(layer, padded, padded, key_bias).flatten(0, 1).index_select(0, pack)
            attended = layer.attention.output.LayerNorm(layer.attention.output.dense(context) + x)
            x = layer.output.LayerNorm(layer.output.dense(layer.intermediate(attended)) + attended)
            if index + 1 in self.feature_layers:
                features[index + 1] = pool(x.index_select(0, unpack).reshape_as(h), attention_mask)
        return x.index_select(0, unpack).reshape_as(h)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, row_index: torch.Tensor,
                *masks: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        mask = dict(zip(self.names, masks, strict=True))
        bert = self.model.bert
        # Additive key bias [B, 1, 1, L]: 0 for tokens, a large negative number for padding.
        key_bias = (1.0 - attention_mask[:, None, None, :].float()) * -1e9
        h = bert.embeddings(input_ids=input_ids)
        features = {0: pool(h, attention_mask)} if 0 in self.feature_layers else {}
        expanded = False
        if "mask_embeddings" in mask:
            h, key_bias, expanded = h.index_select(0, row_index) * mask["mask_embeddings"], \
                key_bias.index_select(0, row_index), True
        # As in the torch path: the layers below the stochastic region and below the [CLS]-only top layer.
        packed = min(self.n_layers - min(self.last_k, self.n_layers), self.n_layers - 1)
        packed = packed if self.packed and not expanded else 0
        if packed > 0:
            h = self._packed_layers(h, attention_mask, key_bias, packed, features)
        for index, layer in enumerate(bert.encoder.layer):
            if index < packed:
                continue
            cls_only = index == self.n_layers - 1
            residual = h[:, :1] if cls_only else h
            context = self._attention(layer, residual, h, key_bias)
            out = layer.attention.output.dense(context)
            name = f"mask_layer{index}_attention_output"
            if name in mask:
                if not expanded:  # rows expand at the first live dropout, as in the torch path
                    out, residual = out.index_select(0, row_index), residual.index_select(0, row_index)
                    h, key_bias, expanded = h.index_select(0, row_index), key_bias.index_select(0, row_index), True
                out = out * mask[name]
            attended = layer.attention.output.LayerNorm(out + residual)
            ff = layer.output.dense(layer.intermediate(attended))
            if f"mask_layer{index}_output" in mask:
                ff = ff * mask[f"mask_layer{index}_output"]
            h = layer.output.LayerNorm(ff + attended)
            if index + 1 in self.feature_layers and not expanded:
                features[index + 1] = pool(h, attention_mask)
        pooled = bert.pooler(h)
        if not expanded:
            pooled = pooled.index_select(0, row_index)
        logits = self.model.classifier(pooled * mask["mask_head"]).float()
        return (logits, *(features[layer] for layer in self.feature_layers)) if self.feature_layers else logits


def example_inputs(graph: MCGraph, hidden: int) -> tuple[torch.Tensor, ...]:
    """Inputs of two items (T = 2 and T = 0) for tracing: batch, length and rows all differ, so no axis is
    mistaken for a constant."""
    ids = torch.tensor([[2, 7, 8, 9, 3], [2, 7, 3, 0, 0]])
    attention = (ids != 0).long()
    rates = DropoutRates(0.1, 0.0, 0.1)
    masks = masks_for(graph.n_layers, graph.last_k, hidden, ids.shape[1], [2, 0], [1, 2], rates)
    return (ids, attention, row_index([2, 0]), *(masks[name] for name in graph.names))


def export_onnx(model: nn.Module, last_k: int, target: Path | None = None,
                feature_layers: Sequence[int] = ()) -> bytes:
    """The packed MC graph of `model` (fp32, CPU) as ONNX bytes, also written to `target` when given; with
    `feature_layers`, their OOD features are further outputs (`ood_output`). Dynamic axes: batch, length, rows."""
    # A float32 CPU copy: the caller's model (perhaps placed on a GPU, perhaps serving) is left as it is.
    model = copy.deepcopy(model).float().cpu().eval()
    # A new Module trains by default, and export restores that mode.
    graph = MCGraph(model, last_k, packed=True, feature_layers=feature_layers).eval()
    hidden = int(model.config.hidden_size)
    axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "length"},
                                       "attention_mask": {0: "batch", 1: "length"},
                                       "row_index": {0: "rows"}, OUTPUT: {0: "rows"}}
    outputs = [OUTPUT, *(ood_output(layer) for layer in graph.feature_layers)]
    axes |= {ood_output(layer): {0: "batch"} for layer in graph.feature_layers}
    top = graph.n_layers - 1
    per_row = {"mask_head", f"mask_layer{top}_attention_output", f"mask_layer{top}_output"}  # no length axis
    for name in graph.names:
        axes[name] = {0: "rows"} if name in per_row else {0: "rows", 1: "length"}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False): the torch.export one needs onnxscript and gains nothing for
        # this static graph; its deprecation notice is not news to the caller.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(graph, example_inputs(graph, hidden), buffer, input_names=[*INPUTS, *graph.names],
                          output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    data = buffer.getvalue()
    if target is not None:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_bytes(data)
    return data
