"""The causal LM of the generation task: a Llama-architecture model (SmolLM2-135M, or a tiny random one for
tests) with dropout added where the pretrained model has none.

Llama has no residual dropout and attention-probability dropout 0. `install_dropout` adds both without
changing the state dict (so `save_pretrained`/`from_pretrained` round-trip as a plain LlamaForCausalLM):
- "attention": `config.attention_dropout`, which LlamaAttention hands to the attention kernel in training;
- "hidden": forward hooks on each layer's `self_attn.o_proj` and `mlp.down_proj` that apply dropout to
  their outputs (the two branches added to the residual stream) when the module is in training mode,
  the GPT-2 "resid_pdrop" placement. The rate lives in `config.residual_dropout`, which the config saves;
  the hooks do not, so a loaded model gets them back from `restore_dropout` (the predictor calls it).
Dropout may be limited to the top N layers (`config.dropout_layers`): a fine-tune can then train only
those layers (the ones last-k MC samples) with the frozen lower layers exact and cheap.
The serving MC pass (models/generation/mc.py) applies seeded masks at exactly those two places.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from models.core.tokenizers import train_joint_tokenizer

RESIDUAL_ATTR = "residual_dropout"
LAYERS_ATTR = "dropout_layers"
_HOOK_FLAG = "_mc_dropout_hooked"


@dataclass(frozen=True)
class LlamaDropoutRates:
    """Dropout rates of a Llama model: attention probabilities and the residual branches ("hidden")."""

    attention: float
    hidden: float

    @classmethod
    def of(cls, model: LlamaForCausalLM) -> LlamaDropoutRates:
        config = model.config
        return cls(attention=float(config.attention_dropout or 0.0),
                   hidden=float(getattr(config, RESIDUAL_ATTR, 0.0) or 0.0))

    def live(self, sites: frozenset[str]) -> LlamaDropoutRates:
        """The rates active at MC time for `sites` (others 0)."""
        return LlamaDropoutRates(self.attention if "attention" in sites else 0.0,
                                 self.hidden if "hidden" in sites else 0.0)

    @property
    def any(self) -> bool:
        return self.attention > 0 or self.hidden > 0


def residual_branches(model: LlamaForCausalLM) -> list[nn.Linear]:
    """The output projections whose outputs join the residual stream, two per layer, in layer order."""
    return [m for layer in model.model.layers for m in (layer.self_attn.o_proj, layer.mlp.down_proj)]


def dropout_layers(model: LlamaForCausalLM) -> int:
    """How many top layers carry dropout (`config.dropout_layers`; absent = all)."""
    return _live_layers(model.config, len(model.model.layers))


def _live_layers(config: LlamaConfig, total: int) -> int:
    return min(total, int(getattr(config, LAYERS_ATTR, None) or total))


def install_dropout(model: LlamaForCausalLM, attention: float, hidden: float,
                    layers: int | None = None) -> LlamaForCausalLM:
    """Set the model's dropout rates (module docstring) in the top `layers` decoder layers (None = keep the
    config's, all when it has none) in place and return it. Idempotent: the hooks are installed once and
    read the rates and the layer count from the config at every call."""
    for name, rate in (("attention", attention), ("hidden", hidden)):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{name} dropout must be in [0, 1), got {rate}")
    config = model.config
    total = len(model.model.layers)
    if layers is not None and not 1 <= layers <= total:
        raise ValueError(f"dropout layers must be in 1..{total}, got {layers}")
    config.attention_dropout = attention
    setattr(config, RESIDUAL_ATTR, hidden)
    if layers is not None:
        setattr(config, LAYERS_ATTR, layers)
    first = total - dropout_layers(model)
    for index, layer in enumerate(model.model.layers):
        layer.self_attn.attention_dropout = attention if index >= first else 0.0
    if not getattr(model, _HOOK_FLAG, False):
        for index, module in enumerate(residual_branches(model)):
            module.register_forward_hook(_residual_dropout_hook(config, index // 2, total))
        setattr(model, _HOOK_FLAG, True)
    return model


def _residual_dropout_hook(config: LlamaConfig, layer: int, total: int):
    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        rate = float(getattr(config, RESIDUAL_ATTR, 0.0) or 0.0)
        live = layer >= total - _live_layers(config, total)
        return F.dropout(output, rate, training=module.training) if rate > 0 and live else output

    return hook


def restore_dropout(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """Install the dropout a saved config records (rates, top-layer count) on a model just loaded with
    `from_pretrained`, which builds a plain LlamaForCausalLM without the residual hooks. Idempotent."""
    rates = LlamaDropoutRates.of(model)
    return install_dropout(model, rates.attention, rates.hidden, getattr(model.config, LAYERS_ATTR, None))


def build_tiny_llama(vocab_size: int, *, hidden_size: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                     intermediate: int = 64, max_positions: int = 256, attention_dropout: float = 0.1,
                     hidden_dropout: float = 0.1, eos_token_id: int = 2, pad_token_id: int = 0,
                     seed: int = 0) -> LlamaForCausalLM:
    """A tiny random Llama (tests and the `tiny` preset: seconds on a CPU) with dropout installed."""
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    return install_dropout(model, attention_dropout, hidden_dropout)


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 400) -> PreTrainedTokenizerBase:
    """A byte-level BPE for the tiny model (the shared deterministic trainer, models/core/tokenizers.py; specials
    <pad>=0, <s>=1, </s>=2, <unk>=3). Generation prompts are encoded without special tokens."""
    return train_joint_tokenizer(texts, vocab_size)
