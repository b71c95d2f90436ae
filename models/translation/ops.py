"""The architecture-specific half of the translation predictor: one ops object per architecture, chosen by the
model's type (`ops_for`), so models/translation/predictor.py serves both with one code path.

- `MarianOps` ("transformer"): models/translation/mc.py (decoder scoring, stochastic greedy decode),
  mc_encoder.py (the same when last-k reaches the encoder) and `model.generate` (greedy or beam, KV cache) for the
  deterministic decode.
- `RnnOps` ("rnn"): models/translation/rnn_mc.py and rnn_decode.py.
In both, last-k counts decoder then encoder layers (`num_layers` = both): k ≤ decoder layers keeps the encoder once
per item without dropout; a larger k drops out in the top encoder layers too, which then run once per MC row;
k = all layers is "whole-model" (mc_encoder's and rnn_mc's docstrings).
Both take and return the same shapes: an `Encoded` batch, hidden states [R, Ly, d] of R rows (item i owns
counts[i] consecutive rows of the row seeds, None = deterministic), float32 logits, token lists without <s>.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import MarianMTModel
from transformers.modeling_outputs import BaseModelOutput

from models.core.dropout import SITES
from models.translation import mc, mc_encoder, rnn_decode, rnn_mc
from models.translation.rnn import RnnMTModel, project

Seeds = Sequence[int | None]


@dataclass(frozen=True)
class Encoded:
    """A batch's deterministic encoder states [B, S, d] with its source ids and mask [B, S] (an encoder that
    drops out per row re-encodes the ids)."""

    states: torch.Tensor
    mask: torch.Tensor
    input_ids: torch.Tensor

    def select(self, index: torch.Tensor) -> Encoded:
        return Encoded(self.states.index_select(0, index), self.mask.index_select(0, index),
                       self.input_ids.index_select(0, index))


class MarianOps:
    """The transformer (MarianMTModel): last-k over decoder then encoder layers (models/translation/mc_encoder.py)."""

    architecture: ClassVar[str] = "transformer"
    supported_sites: ClassVar[frozenset[str]] = SITES

    def num_layers(self, model: nn.Module) -> int:
        return mc_encoder.num_layers(model)

    def layer_counts(self, model: nn.Module) -> tuple[int, int]:
        return mc_encoder.layer_counts(model)

    def rates(self, model: nn.Module) -> mc.MarianDropoutRates:
        return mc.MarianDropoutRates.of(model)

    def encode(self, model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, layers: Sequence[int] = (),
               pooling: str = "mean") -> tuple[Encoded, dict[int, torch.Tensor]]:
        states, features = mc.encode_with_features(model, input_ids, mask, layers, pooling)
        return Encoded(states, mask, input_ids), features

    def decode(self, model: nn.Module, enc: Encoded, max_new_tokens: int, num_beams: int) -> list[list[int]]:
        generated = model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=enc.states),
            attention_mask=enc.mask,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            use_cache=True,
            forced_eos_token_id=None,  # a cut-off output must say so (finish_reason "length"), not fake an end
        )
        pad, eos = model.config.pad_token_id, model.config.eos_token_id
        outputs = []
        for row in generated[:, 1:].tolist():  # position 0 is <s>
            tokens: list[int] = []
            for token in row:
                if token == pad:
                    break
                tokens.append(token)
                if token == eos:
                    break
            outputs.append(tokens)
        return outputs

    def hidden(self, model: nn.Module, enc: Encoded, decoder_inputs: torch.Tensor, seeds: Seeds,
               counts: Sequence[int], last_k: int, sites: frozenset[str]) -> torch.Tensor:
        return mc_encoder.model_hidden(model, enc.states, enc.mask, enc.input_ids, decoder_inputs, seeds, counts,
                                       last_k, sites)

    def project(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return mc.project(model, hidden)

    def sample(self, model: nn.Module, enc: Encoded, seeds: Seeds, counts: Sequence[int], last_k: int,
               sites: frozenset[str], max_new_tokens: int) -> list[list[int]]:
        return mc_encoder.stochastic_greedy_decode(model, enc.states, enc.mask, enc.input_ids, seeds, counts, last_k,
                                                   sites, max_new_tokens)

    def feature_layers(self, model: nn.Module) -> int:  # 0 = embeddings .. the encoder's output
        return len(model.model.encoder.layers) + 1

    def feature_dim(self, model: nn.Module) -> int:
        return int(model.config.d_model)

    def facts(self, model: nn.Module, last_k: int) -> dict[str, Any]:
        (enc, dec), k = self.layer_counts(model), min(last_k, self.num_layers(model))
        encoder_live = k > dec
        return {
            "architecture": self.architecture,
            "num_layers": {"encoder": enc, "decoder": dec},
            "mc": {"scope": "encoder and decoder (encoder per MC row)" if encoder_live
                   else "decoder (encoder runs once, deterministic)",
                   "mode": mc_encoder.mode(model, k),
                   # the "sampling" mode's decodes drop out where the scoring pass does
                   "sampling": "same last-k as scoring" + (" (encoder per row)" if encoder_live else "")},
        }


class RnnOps:
    """The recurrent encoder-decoder (RnnMTModel): variational dropout, last-k over decoder then encoder layers."""

    architecture: ClassVar[str] = "rnn"
    supported_sites: ClassVar[frozenset[str]] = rnn_mc.SUPPORTED_SITES

    def num_layers(self, model: nn.Module) -> int:
        return rnn_mc.num_layers(model)

    def layer_counts(self, model: nn.Module) -> tuple[int, int]:
        return int(model.config.encoder_layers), int(model.config.decoder_layers)

    def rates(self, model: nn.Module) -> rnn_mc.RnnDropoutRates:
        return rnn_mc.RnnDropoutRates.of(model)

    def encode(self, model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, layers: Sequence[int] = (),
               pooling: str = "mean") -> tuple[Encoded, dict[int, torch.Tensor]]:
        states, features = rnn_mc.encode_with_features(model, input_ids, mask, layers, pooling)
        return Encoded(states, mask, input_ids), features

    def decode(self, model: nn.Module, enc: Encoded, max_new_tokens: int, num_beams: int) -> list[list[int]]:
        return rnn_decode.decode(model, enc.states, enc.mask, max_new_tokens, num_beams)  # type: ignore[arg-type]

    def hidden(self, model: nn.Module, enc: Encoded, decoder_inputs: torch.Tensor, seeds: Seeds,
               counts: Sequence[int], last_k: int, sites: frozenset[str]) -> torch.Tensor:
        return rnn_mc.decoder_hidden(model, enc.states, enc.mask, decoder_inputs, seeds, counts, last_k, sites,
                                     enc.input_ids)

    def project(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return project(model, hidden)  # type: ignore[arg-type]

    def sample(self, model: nn.Module, enc: Encoded, seeds: Seeds, counts: Sequence[int], last_k: int,
               sites: frozenset[str], max_new_tokens: int) -> list[list[int]]:
        return rnn_decode.stochastic_greedy_decode(model, enc.states, enc.mask, seeds, counts, last_k,  # type: ignore[arg-type]
                                                   sites, max_new_tokens, enc.input_ids)

    def feature_layers(self, model: nn.Module) -> int:  # i = after encoder layer i + 1 (rnn_mc.encode_with_features)
        return int(model.config.encoder_layers)

    def feature_dim(self, model: nn.Module) -> int:
        return int(model.config.hidden_size)

    def facts(self, model: nn.Module, last_k: int) -> dict[str, Any]:
        config, k = model.config, min(last_k, self.num_layers(model))
        encoder_live = k > config.decoder_layers
        return {
            "architecture": f"{self.architecture} ({config.cell}, bidirectional encoder, Luong attention)",
            "num_layers": {"encoder": int(config.encoder_layers), "decoder": int(config.decoder_layers)},
            "mc": {"scope": "encoder and decoder (encoder per MC row)" if encoder_live
                   else "decoder (encoder runs once, deterministic)",
                   "mode": rnn_mc.mode(model, k), "variational": "one mask per row and site at every time step"},
        }


TranslationOps = MarianOps | RnnOps


def ops_for(model: nn.Module) -> TranslationOps:
    """The ops of `model`'s architecture; TypeError for a model neither serves."""
    if isinstance(model, RnnMTModel):
        return RnnOps()
    if isinstance(model, MarianMTModel):
        return MarianOps()
    raise TypeError(f"{type(model).__name__} is not a translation model this service serves "
                    "(MarianMTModel, RnnMTModel)")
