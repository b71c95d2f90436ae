"""The translation job's tokenizer and model: a joint byte-level BPE trained on the training pairs (or the resumed
run's saved one) and a randomly initialised model of the configured architecture (`--arch`) with the preset's sizes
and the config's dropout rates. The job (training/translation/job.py) and the settings comparison
(training/translation/tune.py) build them the same way."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from models.core.tokenizers import train_joint_tokenizer
from models.translation.model import PRESET_SIZES, build_marian_preset, build_rnn_preset
from training.core.distributed import is_main_process
from training.translation.config import TranslationConfig


def build_tokenizer(config: TranslationConfig, train: Sequence[tuple[str, str]],
                    checkpoints: Path) -> PreTrainedTokenizerBase:
    """Joint BPE on train source + target (deterministic); a resumed run reloads the saved one."""
    saved = checkpoints / "tokenizer"
    if saved.is_dir() and (config.resume or not is_main_process()):  # other ranks: rank 0's (main_process_first)
        # Our own checkpoint directory, not a Hub id (bandit B615 is a false positive).
        return AutoTokenizer.from_pretrained(saved, local_files_only=True)  # nosec B615
    vocab = config.vocab_size or PRESET_SIZES[config.model].vocab_size
    tokenizer = train_joint_tokenizer([text for pair in train for text in pair], vocab)
    tokenizer.save_pretrained(saved)
    return tokenizer



def build_model(config: TranslationConfig, tokenizer: PreTrainedTokenizerBase) -> nn.Module:
    """A randomly initialised model of `config.arch` with the preset's sizes and the config's dropout rates."""
    rates = config.rates
    if config.arch == "rnn":
        return build_rnn_preset(config.model, len(tokenizer), config.rnn_cell, config.rnn_hidden, config.rnn_layers,
                                config.rnn_embed, rates["hidden"], config.rnn_recurrent_dropout, config.seed)
    return build_marian_preset(config.model, len(tokenizer), dropout=rates["hidden"],
                               attention_dropout=rates["attention"], activation_dropout=rates["activation"],
                               seed=config.seed)
