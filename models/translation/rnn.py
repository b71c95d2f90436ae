"""A recurrent encoder-decoder for translation (`--arch rnn`): a transformers model of its own type ("uq_rnn_mt",
registered with AutoConfig / AutoModelForSeq2SeqLM below, no remote code), saved and loaded with safetensors like the
Marian model, with the token conventions of models/translation/model.py (pad 0, <s> 1, </s> 2; decoder starts at <s>).

- Encoder: bidirectional GRU (default) or LSTM, hidden_size / 2 per direction; decoder: unidirectional, initial
  state tanh(bridge(masked mean of the encoder states)).
- Attention: Luong "general" (score = h_t · W_a h̄_s), computed on the top decoder layer's output AFTER the
  recurrence, without input feeding: teacher-forced scoring then runs the recurrence step by step (the cells are
  cheap) and attention + projection for all positions in one batched matmul, and the attention keys W_a h̄_s are
  a per-item projection that MC rows share by indexing. (Bahdanau puts attention inside the recurrence: a
  per-step attention over the source for every MC row.)
- Output: h̃ = tanh(W_c [context; h_t]) sized to the embedding, logits = h̃ · Eᵀ + bias: ONE embedding matrix for
  source, target and output (the joint BPE vocabulary), so nothing needs weight tying.

Variational dropout (Gal & Ghahramani 2016): a mask is drawn once per sequence and site and used at every time step,
on the embeddings, on each layer's output (= the next layer's input), on the recurrent state inside the
hidden-to-hidden product (the carried state itself is not masked, as Keras' recurrent_dropout) and on h̃. A mask is
[rows, dim]; `masks` maps a site id (below) to it, and a site not in the map is off. Training draws them from the
torch RNG per sequence (`forward` in train mode); MC scoring draws them per row from a seeded MaskSource
(models/translation/rnn_mc.py). The maths is written over the cells' own weights so that the input projection of
all time steps is one matmul; a test checks it against nn.GRUCell / nn.LSTMCell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import Seq2SeqLMOutput

MODEL_TYPE = "uq_rnn_mt"
CELLS = ("gru", "lstm")

# Site ids (MaskSource seeds a row's mask by (row seed, site)): encoder embeddings, per encoder layer the recurrent
# state of each direction and the layer's output; decoder embeddings, per decoder layer recurrent state and output;
# the attentional vector h̃.
ENC_EMB, DEC_EMB, ATTENTIONAL = 0, 100_000, 200_000
ENC, DEC = "encoder", "decoder"


def site(part: str, layer: int, slot: int) -> int:
    """Site id of `slot` of a layer: encoder 0/1 = recurrent state forward/backward, 2 = output; decoder 0 =
    recurrent state, 1 = output."""
    return (1 if part == ENC else DEC_EMB + 1) + 3 * layer + slot


class RnnMTConfig(PretrainedConfig):
    """Sizes, cell and dropout rates of an RnnMTModel; `dropout` (embeddings, layer outputs, h̃) and
    `recurrent_dropout` (state) travel with the checkpoint so serving knows them."""

    model_type = MODEL_TYPE

    def __init__(self, vocab_size: int = 600, embed_dim: int = 32, hidden_size: int = 32, encoder_layers: int = 1,
                 decoder_layers: int = 1, cell: str = "gru", dropout: float = 0.1, recurrent_dropout: float = 0.1,
                 max_position_embeddings: int = 128, pad_token_id: int = 0, bos_token_id: int = 1,
                 eos_token_id: int = 2, decoder_start_token_id: int = 1, **kwargs: Any) -> None:
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        if hidden_size % 2:
            raise ValueError(f"hidden_size {hidden_size} must be even (the encoder is bidirectional)")
        self.vocab_size, self.embed_dim, self.hidden_size = vocab_size, embed_dim, hidden_size
        self.encoder_layers, self.decoder_layers, self.cell = encoder_layers, decoder_layers, cell
        self.dropout, self.recurrent_dropout = dropout, recurrent_dropout
        self.max_position_embeddings = max_position_embeddings  # serving's token cap; an RNN has no position table
        self.decoder_start_token_id = decoder_start_token_id
        kwargs = {"tie_word_embeddings": False, "is_encoder_decoder": True, **kwargs}  # one embedding, used thrice
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)


@dataclass(frozen=True)
class MaskSpec:
    """One variational dropout site: its id, mask width, rate, and the (part, layer) whose dropouts it belongs to
    (embeddings count as layer 0's input, h̃ as the top decoder layer's)."""

    site: int
    dim: int
    rate: float
    part: str
    layer: int


def mask_specs(config: RnnMTConfig) -> list[MaskSpec]:
    """Every dropout site of a model with `config`, encoder first."""
    p, q, h, e = float(config.dropout), float(config.recurrent_dropout), config.hidden_size, config.embed_dim
    specs = [MaskSpec(ENC_EMB, e, p, ENC, 0)]
    for i in range(config.encoder_layers):
        specs += [MaskSpec(site(ENC, i, 0), h // 2, q, ENC, i), MaskSpec(site(ENC, i, 1), h // 2, q, ENC, i),
                  MaskSpec(site(ENC, i, 2), h, p, ENC, i)]
    specs.append(MaskSpec(DEC_EMB, e, p, DEC, 0))
    for i in range(config.decoder_layers):
        specs += [MaskSpec(site(DEC, i, 0), h, q, DEC, i), MaskSpec(site(DEC, i, 1), h, p, DEC, i)]
    return [*specs, MaskSpec(ATTENTIONAL, e, p, DEC, config.decoder_layers - 1)]


def training_masks(config: RnnMTConfig, rows: int, device: torch.device) -> dict[int, torch.Tensor]:
    """One inverted-dropout mask per sequence and site (the same at every time step), from the torch RNG."""
    return {s.site: torch.bernoulli(torch.full((rows, s.dim), 1.0 - s.rate, device=device)) / (1.0 - s.rate)
            for s in mask_specs(config) if s.rate > 0}


def drop(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x [N, ..., dim] times a per-row mask [N, dim] broadcast over the middle (time) axes; None = no dropout."""
    return x if mask is None else x * mask.view(mask.shape[0], *([1] * (x.dim() - 2)), mask.shape[1]).to(x.dtype)


def cell_step(cell: nn.Module, gi: torch.Tensor, state: torch.Tensor, rec_mask: torch.Tensor | None) -> torch.Tensor:
    """One step of `cell` (nn.GRUCell or nn.LSTMCell maths) given the input projection `gi` [N, G·H]; the state is
    h [N, H] (GRU) or h‖c [N, 2H] (LSTM). The recurrent mask applies to h in the hidden-to-hidden product only."""
    size = cell.hidden_size
    h = state[:, :size]
    gh = F.linear(drop(h, rec_mask), cell.weight_hh, cell.bias_hh)
    if isinstance(cell, nn.GRUCell):
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h
    i, f, g, o = (gi + gh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * state[:, size:] + torch.sigmoid(i) * torch.tanh(g)
    return torch.cat([torch.sigmoid(o) * torch.tanh(c), c], dim=-1)


def run_cell(cell: nn.Module, x: torch.Tensor, state: torch.Tensor, rec_mask: torch.Tensor | None,
             valid: torch.Tensor | None = None, reverse: bool = False) -> torch.Tensor:
    """Outputs h [N, T, H] of `cell` over x [N, T, D] from `state`. `valid` [N, T] (bool): a padded step keeps the
    state, so a reverse pass starts at each row's last real token and a row's outputs do not depend on padding."""
    size = cell.hidden_size
    gi = F.linear(x, cell.weight_ih, cell.bias_ih)  # every time step's input projection at once
    outputs: list[torch.Tensor] = [x] * x.shape[1]
    for t in reversed(range(x.shape[1])) if reverse else range(x.shape[1]):
        new = cell_step(cell, gi[:, t], state, rec_mask)
        state = new if valid is None else torch.where(valid[:, t, None], new, state)
        outputs[t] = state[:, :size]
    return torch.stack(outputs, dim=1)


def zero_state(cell: nn.Module, rows: int, like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(rows, cell.hidden_size * (2 if isinstance(cell, nn.LSTMCell) else 1))


def encoder_layers(model: RnnMTModel, input_ids: torch.Tensor, valid: torch.Tensor, masks: dict[int, torch.Tensor],
                   live_from: int = 0, index: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each encoder layer's output [N, S, H] (after its output mask) and the valid mask of the last one. `index`
    (MC): rows run on B items up to layer `live_from`, then on the rows `index` picks (the masks' rows)."""
    x, outputs, layers = model.embed(input_ids), [], len(model.encoder_fwd)
    for layer in range(layers):
        if index is not None and layer == live_from:
            x, valid, index = x.index_select(0, index), valid.index_select(0, index), None
        if layer == 0:
            x = drop(x, masks.get(ENC_EMB))
        fwd, bwd = model.encoder_fwd[layer], model.encoder_bwd[layer]
        x = torch.cat([run_cell(fwd, x, zero_state(fwd, len(x), x), masks.get(site(ENC, layer, 0)), valid),
                       run_cell(bwd, x, zero_state(bwd, len(x), x), masks.get(site(ENC, layer, 1)), valid, True)], -1)
        outputs.append(x := drop(x, masks.get(site(ENC, layer, 2))))
    if index is not None:  # no live layer: the rows share their item's states
        outputs[-1], valid = outputs[-1].index_select(0, index), valid.index_select(0, index)
    return outputs, valid


@dataclass(frozen=True)
class Memory:
    """What the decoder reads of the encoder: states [N, S, H], attention keys W_a h̄ [N, S, H], the valid source
    positions [N, S] and the decoder's initial states [N, layers, state width]."""

    states: torch.Tensor
    keys: torch.Tensor
    valid: torch.Tensor
    init: torch.Tensor

    def select(self, index: torch.Tensor) -> Memory:
        return Memory(*(t.index_select(0, index) for t in (self.states, self.keys, self.valid, self.init)))


def make_memory(model: RnnMTModel, states: torch.Tensor, valid: torch.Tensor) -> Memory:
    """The decoder's view of encoder `states` [N, S, H] with `valid` [N, S] (bool)."""
    weights = valid.to(states.dtype)[..., None]
    pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    init = torch.tanh(model.bridge(pooled)).view(states.shape[0], len(model.decoder), model.config.hidden_size)
    if isinstance(model.decoder[0], nn.LSTMCell):  # h from the bridge, the memory cell starts empty
        init = torch.cat([init, torch.zeros_like(init)], dim=-1)
    return Memory(states, model.attention(states), valid, init)


def attend(model: RnnMTModel, h: torch.Tensor, memory: Memory, mask: torch.Tensor | None) -> torch.Tensor:
    """h̃ = tanh(W_c [context; h]) [N, T, E] of top-layer outputs h [N, T, H] (Luong general attention)."""
    scores = h @ memory.keys.transpose(1, 2)
    scores = scores.masked_fill(~memory.valid[:, None, :], torch.finfo(scores.dtype).min)
    context = torch.softmax(scores, dim=-1) @ memory.states
    return drop(torch.tanh(model.combine(torch.cat([context, h], dim=-1))), mask)


def decoder_layers(model: RnnMTModel, decoder_input_ids: torch.Tensor, memory: Memory, masks: dict[int, torch.Tensor],
                   live_from: int = 0, index: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced h̃ [N, T, E] of `decoder_input_ids` (right padding never reaches a real position). `index`
    (MC): layers below `live_from` run on the items (ids and memory), the rest on the rows `index` picks."""
    x = model.embed(decoder_input_ids)
    for layer, cell in enumerate(model.decoder):
        if index is not None and layer == live_from:
            x, memory, index = x.index_select(0, index), memory.select(index), None
        if layer == 0:
            x = drop(x, masks.get(DEC_EMB))
        x = run_cell(cell, x, memory.init[:, layer], masks.get(site(DEC, layer, 0)))
        x = drop(x, masks.get(site(DEC, layer, 1)))
    if index is not None:
        x, memory = x.index_select(0, index), memory.select(index)
    return attend(model, x, memory, masks.get(ATTENTIONAL))


def decoder_step(model: RnnMTModel, tokens: torch.Tensor, state: torch.Tensor, memory: Memory,
                 masks: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step for previous `tokens` [N] from `state` [N, layers, width]: (h̃ [N, E], the next state).
    The same masks as `decoder_layers` give the same numbers (a variational mask does not depend on the step)."""
    x, states = drop(model.embed(tokens), masks.get(DEC_EMB)), []
    for layer, cell in enumerate(model.decoder):
        gi = F.linear(x, cell.weight_ih, cell.bias_ih)
        states.append(new := cell_step(cell, gi, state[:, layer], masks.get(site(DEC, layer, 0))))
        x = drop(new[:, : cell.hidden_size], masks.get(site(DEC, layer, 1)))
    return attend(model, x[:, None], memory, masks.get(ATTENTIONAL))[:, 0], torch.stack(states, dim=1)


def project(model: RnnMTModel, hidden: torch.Tensor) -> torch.Tensor:
    """Logits [..., V] (float32) of h̃ [..., E] through the shared embedding."""
    return (F.linear(hidden, model.embed.weight) + model.final_logits_bias).float()


class RnnMTModel(PreTrainedModel):
    """The recurrent encoder-decoder (module docstring); `forward` is the training/eval forward of the Trainer."""

    config_class = RnnMTConfig
    base_model_prefix = "rnn"

    def __init__(self, config: RnnMTConfig) -> None:
        super().__init__(config)
        cell = nn.GRUCell if config.cell == "gru" else nn.LSTMCell
        e, h = config.embed_dim, config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, e, padding_idx=config.pad_token_id)
        self.encoder_fwd = nn.ModuleList(cell(e if i == 0 else h, h // 2) for i in range(config.encoder_layers))
        self.encoder_bwd = nn.ModuleList(cell(e if i == 0 else h, h // 2) for i in range(config.encoder_layers))
        self.bridge = nn.Linear(h, h * config.decoder_layers)
        self.decoder = nn.ModuleList(cell(e if i == 0 else h, h) for i in range(config.decoder_layers))
        self.attention = nn.Linear(h, h, bias=False)
        self.combine = nn.Linear(2 * h, e)
        self.final_logits_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=module.embedding_dim ** -0.5)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.GRUCell | nn.LSTMCell):
            bound = module.hidden_size ** -0.5
            for weight in module.parameters():
                nn.init.uniform_(weight, -bound, bound)
        elif isinstance(module, RnnMTModel):
            nn.init.zeros_(module.final_logits_bias)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **_: Any) -> Seq2SeqLMOutput:
        """Logits [B, T, V] of `decoder_input_ids` (or of `labels` shifted right behind <s>); the loss when
        `labels` (−100 = ignore). Train mode draws a variational mask per sequence and site."""
        config = self.config
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("forward needs decoder_input_ids or labels")
            start = torch.full_like(labels[:, :1], config.decoder_start_token_id)
            decoder_input_ids = torch.cat([start, labels[:, :-1].clamp_min(0)], dim=1)
        valid = (input_ids != config.pad_token_id) if attention_mask is None else attention_mask.bool()
        masks = training_masks(config, input_ids.shape[0], input_ids.device) if self.training else {}
        outputs, valid = encoder_layers(self, input_ids, valid, masks)
        logits = project(self, decoder_layers(self, decoder_input_ids, make_memory(self, outputs[-1], valid), masks))
        loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return Seq2SeqLMOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def greedy_decode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      max_new_tokens: int) -> list[list[int]]:
        """Deterministic greedy decodes (eval mode): the hook of decoders that would call `generate`."""
        from models.translation.rnn_decode import greedy_decode  # it builds on this module

        valid = attention_mask.bool()
        return greedy_decode(self, make_memory(self, encoder_layers(self, input_ids, valid, {})[0][-1], valid),
                             max_new_tokens)


AutoConfig.register(MODEL_TYPE, RnnMTConfig)
AutoModelForSeq2SeqLM.register(RnnMTConfig, RnnMTModel)
