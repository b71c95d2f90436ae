"""MC-dropout teacher-forced scoring for the recurrent model (models/translation/rnn.py), with the contract of
models/translation/mc.py: B items, item i owns `counts[i]` consecutive rows of `row_seeds` (R = Σ counts), row r
draws its masks from `row_seeds[r]` (None = a deterministic row, exactly the eval forward).

What last-k means here: k counts layers from the top of the whole stack, decoder layers first, then encoder layers.
A layer is live when its recurrent and output masks are; the target embeddings are live once every decoder layer is
(k ≥ decoder layers, "decoder-full", Marian's meaning), h̃ whenever anything is. k ≤ decoder layers is the fast path:
the encoder runs once per item without dropout and its states, attention keys and the decoder's initial state are
expanded to rows by indexing; the decoder layers below the top k run on the B items too. k > decoder layers also
drops out in the top k − decoder-layers encoder layers (the source embeddings at k ≥ all layers, "whole-model"):
from the first live encoder layer on, the encoder runs once per row. `num_layers` (what last-k is counted against,
the manifest's `num_layers`) is encoder + decoder layers, so the default k = all layers is the whole model.

Masks: [rows, dim] per site (rnn.py's site ids), one per row from `MaskSource`, the same at every time step, so a
row's masks depend on neither batch composition nor padding, and a decode step by step sees the masks its
teacher-forced score sees. Only the "hidden" site family exists: embeddings, layer outputs, recurrent state and h̃.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.core.dropout import MaskSource, check_rows, row_index, validate_sites
from models.core.ood import pool
from models.translation.rnn import Memory, RnnMTModel, decoder_layers, encoder_layers, make_memory, mask_specs

SUPPORTED_SITES = frozenset({"hidden"})


@dataclass(frozen=True)
class RnnDropoutRates:
    """Dropout probabilities of an RnnMTModel: embeddings/outputs/h̃ ("hidden") and recurrent state."""

    hidden: float
    recurrent: float

    @classmethod
    def of(cls, model: nn.Module) -> RnnDropoutRates:
        return cls(float(model.config.dropout), float(model.config.recurrent_dropout))

    def live(self, sites: frozenset[str]) -> RnnDropoutRates:
        """These rates with the sites that are off at MC time set to 0 (both belong to "hidden")."""
        return self if "hidden" in sites else RnnDropoutRates(0.0, 0.0)

    @property
    def any(self) -> bool:
        return max(self.hidden, self.recurrent) > 0


def num_layers(model: nn.Module) -> int:
    """Layers last-k counts: decoder then encoder layers (module docstring)."""
    return int(model.config.decoder_layers) + int(model.config.encoder_layers)


def live_from(model: nn.Module, last_k: int) -> tuple[int, int]:
    """(first live encoder layer, first live decoder layer) of last-k; a part with none live gets its layer count."""
    enc, dec = int(model.config.encoder_layers), int(model.config.decoder_layers)
    return enc - min(max(0, last_k - dec), enc), dec - min(last_k, dec)


def mode(model: nn.Module, last_k: int) -> str:
    """describe's name of the MC mode of last-k."""
    dec, total = int(model.config.decoder_layers), num_layers(model)
    if last_k >= total:
        return "whole-model"
    if last_k < dec:
        return f"last-{last_k}-decoder-layers"
    return "decoder-full" if last_k == dec else f"decoder-full+last-{last_k - dec}-encoder-layers"


def row_masks(model: nn.Module, source: MaskSource, live: tuple[int, int], sites: frozenset[str],
              like: torch.Tensor) -> dict[int, torch.Tensor]:
    """The masks [R, dim] of every live site with a positive rate (none when no row is stochastic)."""
    if not source.any_stochastic or "hidden" not in validate_sites(sites):
        return {}
    first = {"encoder": live[0], "decoder": live[1]}
    return {spec.site: source.dropout(like.new_ones(len(source.row_seeds), spec.dim), spec.rate, spec.site)
            for spec in mask_specs(model.config) if spec.rate > 0 and spec.layer >= first[spec.part]}


def encode_with_features(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         feature_layers: Sequence[int] = (),
                         pooling: str = "mean") -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Deterministic encoder states [B, S, H] and, for each of `feature_layers` (i = after encoder layer i + 1; the
    embeddings are not a feature layer: a bag of words, and of another width), pooled OOD features [B, H]."""
    outputs, _ = encoder_layers(model, input_ids, attention_mask.bool(), {})  # type: ignore[arg-type]
    return outputs[-1], {layer: pool(outputs[layer], attention_mask, pooling) for layer in feature_layers}


def encode(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Deterministic encoder states [B, S, H] (the model must be in eval mode)."""
    return encode_with_features(model, input_ids, attention_mask)[0]


def _check(model: nn.Module, last_k: int, items: int, counts: Sequence[int], row_seeds: Sequence[int | None]) -> None:
    if model.training:
        raise RuntimeError("RNN MC scoring expects model.eval(); MC dropout is applied explicitly")
    if last_k < 1:
        raise ValueError(f"last_k must be >= 1, got {last_k}")
    check_rows(items, counts, row_seeds)


def row_memory(model: RnnMTModel, encoder_states: torch.Tensor, encoder_mask: torch.Tensor,
               row_seeds: Sequence[int | None], counts: Sequence[int], last_k: int, sites: frozenset[str],
               input_ids: torch.Tensor | None) -> tuple[Memory, dict[int, torch.Tensor], torch.Tensor, int]:
    """(memory, masks, index, first live decoder layer) of R rows. The memory has R rows when the encoder is live
    (re-encoded per row from `input_ids`), B rows otherwise (the decoder expands it by `index`)."""
    device = encoder_states.device
    index = row_index(counts, device)
    live = live_from(model, min(last_k, num_layers(model)))
    masks = row_masks(model, MaskSource(row_seeds, device), live, sites, encoder_states)
    if masks and live[0] < model.config.encoder_layers:
        if input_ids is None:
            raise ValueError(f"last_k {last_k} drops out in the encoder: the source input_ids are needed")
        outputs, valid = encoder_layers(model, input_ids, encoder_mask.bool(), masks, live[0], index)
        return make_memory(model, outputs[-1], valid), masks, index, live[1]
    return make_memory(model, encoder_states, encoder_mask.bool()), masks, index, live[1] if masks else len(
        model.decoder)


def decoder_hidden(
    model: nn.Module,
    encoder_states: torch.Tensor,
    encoder_mask: torch.Tensor,
    decoder_input_ids: torch.Tensor,
    row_seeds: Sequence[int | None],
    counts: Sequence[int],
    last_k: int,
    sites: frozenset[str],
    input_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """h̃ [R, Ly, E] of `decoder_input_ids` [B, Ly] (right-padded), per row under its masks (module docstring).
    `input_ids` (the source, [B, S]) is needed when last-k reaches the encoder. Call under torch.inference_mode()."""
    _check(model, last_k, decoder_input_ids.shape[0], counts, row_seeds)
    memory, masks, index, first = row_memory(model, encoder_states, encoder_mask, row_seeds, counts, last_k, sites,
                                             input_ids)
    if memory.states.shape[0] != decoder_input_ids.shape[0]:  # the encoder ran per row: so does all the decoder
        return decoder_layers(model, decoder_input_ids.index_select(0, index), memory, masks)  # type: ignore[arg-type]
    return decoder_layers(model, decoder_input_ids, memory, masks, first, index)  # type: ignore[arg-type]
