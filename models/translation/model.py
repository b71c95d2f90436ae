"""Translation model and tokenizer builders: a joint byte-level BPE vocabulary and a Marian-style
encoder-decoder built from a config (trained from scratch; no pretrained EN→DE model is available offline), or a
user's MarianMT checkpoint directory (`--base-model`, the opus-mt architecture, with its own tokenizer) to fine-tune;
or the recurrent encoder-decoder of models/translation/rnn.py (`--arch rnn`, `build_rnn_preset`).

Token conventions (shared by training and serving, so they live here):
- specials `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3, fixed ids independent of the corpus;
- `tokenizer(text)` appends `</s>` (Marian style, no BOS on the source); the same call gives the labels;
- the decoder starts from `<s>` (`decoder_start_token_id`), so `<pad>` only ever means padding;
- byte-level pre-tokenization: every input string encodes without `<unk>` and `decode(...,
  skip_special_tokens=True)` returns the text exactly (German umlauts, odd punctuation, OOD probes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, MarianConfig, MarianMTModel

from models.core.loading import CheckpointError, checkpoint_dir
from models.translation.rnn import RnnMTConfig, RnnMTModel


@dataclass(frozen=True)
class MarianSize:
    """Architecture sizes of one preset (dropout rates belong to the training config, not here)."""

    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    ffn: int
    max_positions: int


# quick: DATA.md measured 7.6 M parameters and ~0.4 s per batch of 32 on 2 CPU threads for this size.
PRESET_SIZES: dict[str, MarianSize] = {
    "tiny": MarianSize(vocab_size=600, d_model=32, encoder_layers=1, decoder_layers=1, heads=2, ffn=64,
                       max_positions=128),
    "quick": MarianSize(vocab_size=8000, d_model=256, encoder_layers=3, decoder_layers=3, heads=4, ffn=1024,
                        max_positions=256),
    "full": MarianSize(vocab_size=16000, d_model=512, encoder_layers=6, decoder_layers=6, heads=8, ffn=2048,
                       max_positions=512),
}


def build_marian(
    vocab_size: int,
    d_model: int,
    encoder_layers: int,
    decoder_layers: int,
    heads: int,
    ffn: int,
    dropout: float = 0.1,
    attention_dropout: float = 0.1,
    activation_dropout: float = 0.1,
    max_positions: int = 256,
    pad_token_id: int = 0,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
    decoder_start_token_id: int = 1,
    seed: int = 0,
) -> MarianMTModel:
    """A randomly initialised Marian encoder-decoder (post-LN, sinusoidal positions, swish FFN, scaled
    embeddings) with one embedding matrix shared by encoder, decoder and LM head.

    `dropout` acts on residual/hidden states, `attention_dropout` on attention probabilities,
    `activation_dropout` inside the FFN — the three MC-dropout sites. `max_positions` bounds source and
    target length in tokens (including `</s>`). Same arguments and seed → same weights.
    """
    if d_model % heads:
        raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
    config = MarianConfig(
        vocab_size=vocab_size,
        decoder_vocab_size=vocab_size,
        d_model=d_model,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        dropout=dropout,
        attention_dropout=attention_dropout,
        activation_dropout=activation_dropout,
        activation_function="swish",
        max_position_embeddings=max_positions,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        forced_eos_token_id=eos_token_id,
        decoder_start_token_id=decoder_start_token_id,
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config)
    # Generation defaults travel with save_pretrained; the checkpoint alone must decode correctly.
    model.generation_config.pad_token_id = pad_token_id
    model.generation_config.bos_token_id = bos_token_id
    model.generation_config.eos_token_id = eos_token_id
    model.generation_config.decoder_start_token_id = decoder_start_token_id
    model.generation_config.forced_eos_token_id = eos_token_id
    return model


def build_marian_preset(preset: str, vocab_size: int | None = None, **overrides: float | int) -> MarianMTModel:
    """`build_marian` with the sizes of `PRESET_SIZES[preset]`; `vocab_size` should be the trained
    tokenizer's `len()`. KeyError names the known presets."""
    if preset not in PRESET_SIZES:
        raise KeyError(f"unknown preset {preset!r}; known: {sorted(PRESET_SIZES)}")
    size = PRESET_SIZES[preset]
    kwargs = {**size.__dict__, **overrides}
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    return build_marian(**kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RnnSize:
    """Sizes of one preset of the recurrent model (models/translation/rnn.py); layers of encoder and decoder each."""

    vocab_size: int
    embed_dim: int
    hidden_size: int
    layers: int
    max_positions: int


# quick: sized so that a training step costs what the transformer quick's does, for a comparison at the same
# wall-clock: 32 pairs of 48/56 source/target tokens, fp32, 2 threads on the idle 2-core AMD EPYC (no AVX-512):
# transformer quick 1.66 s (7.7 M parameters), GRU 2+2 × 256 1.25 s (3.8 M), × 384 1.70 s (5.5 M), × 512 2.62 s.
# max_positions only caps serving's token limits (an RNN has no position table).
RNN_PRESET_SIZES: dict[str, RnnSize] = {
    "tiny": RnnSize(vocab_size=600, embed_dim=32, hidden_size=32, layers=1, max_positions=128),
    "quick": RnnSize(vocab_size=8000, embed_dim=256, hidden_size=384, layers=2, max_positions=256),
    "full": RnnSize(vocab_size=16000, embed_dim=512, hidden_size=1024, layers=2, max_positions=512),
}


def build_rnn_preset(preset: str, vocab_size: int | None = None, cell: str = "gru", hidden_size: int | None = None,
                     layers: int | None = None, embed_dim: int | None = None, dropout: float = 0.1,
                     recurrent_dropout: float | None = None, seed: int = 0) -> RnnMTModel:
    """A randomly initialised RnnMTModel with the sizes of `RNN_PRESET_SIZES[preset]` (None keeps the preset's;
    recurrent_dropout None = dropout); same arguments and seed → same weights. KeyError names the known presets."""
    if preset not in RNN_PRESET_SIZES:
        raise KeyError(f"unknown preset {preset!r}; known: {sorted(RNN_PRESET_SIZES)}")
    size = RNN_PRESET_SIZES[preset]
    config = RnnMTConfig(vocab_size=vocab_size or size.vocab_size, embed_dim=embed_dim or size.embed_dim,
                         hidden_size=hidden_size or size.hidden_size, encoder_layers=layers or size.layers,
                         decoder_layers=layers or size.layers, cell=cell, dropout=dropout,
                         recurrent_dropout=dropout if recurrent_dropout is None else recurrent_dropout,
                         max_position_embeddings=size.max_positions)
    torch.manual_seed(seed)
    return RnnMTModel(config)


def load_pretrained_marian(path: Path | str, dropout: float | None = None, attention_dropout: float | None = None,
                           activation_dropout: float | None = None) -> tuple[MarianMTModel, Any]:
    """(MarianMTModel, its tokenizer) from a local checkpoint directory, with the given dropout rates (None keeps
    the checkpoint's). CheckpointError naming the directory: not a checkpoint, another architecture (only Marian
    has the translation fast path), a tokenizer that cannot load (opus-mt's MarianTokenizer needs the
    `sentencepiece` package), or no dropout at all."""
    path = checkpoint_dir(path)
    config = AutoConfig.from_pretrained(path, local_files_only=True)  # nosec B615 - a local directory
    if config.model_type != "marian":
        raise CheckpointError(f"--base-model {path}: a {config.model_type!r} checkpoint; translation fine-tunes "
                              "MarianMT checkpoints (the architecture of the opus-mt models)")
    rates = {"dropout": dropout, "attention_dropout": attention_dropout, "activation_dropout": activation_dropout}
    overrides = {name: rate for name, rate in rates.items() if rate is not None}
    try:
        model = MarianMTModel.from_pretrained(path, use_safetensors=True, local_files_only=True,  # nosec B615 - local files only
                                              **overrides)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)  # nosec B615 - local files only
    except ImportError as exc:  # MarianTokenizer without sentencepiece
        raise CheckpointError(f"--base-model {path}: its tokenizer needs a package that is missing ({exc}); "
                              "pip install sentencepiece") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"--base-model {path}: cannot load: {exc}") from exc
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise CheckpointError(f"--base-model {path}: its tokenizer has no eos or pad token")
    if max(model.config.dropout, model.config.attention_dropout, model.config.activation_dropout) <= 0:
        raise CheckpointError(f"--base-model {path}: no dropout (set --dropout > 0 to fine-tune with it)")
    return model, tokenizer
