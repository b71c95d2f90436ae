"""Tiny random Hugging Face checkpoints saved to disk (safetensors) as a user would bring them to `--base-model`:
BERT, RoBERTa, DistilBERT and ALBERT (no fast path) classifiers, a Marian translation model with a sentencepiece
MarianTokenizer (the opus-mt layout) and a Llama causal LM. Each builds in well under a second."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AlbertConfig,
    AlbertForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    MarianConfig,
    MarianMTModel,
    PreTrainedModel,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from models.generation.model import build_tiny_llama, train_tiny_tokenizer
from models.sentiment.model import train_wordpiece_tokenizer

TEXTS = ["a quiet moving film with a wonderful cast", "the plot was dull and the acting was terrible",
         "I loved every minute of this brilliant story", "boring, predictable and far too long",
         "an average movie with some good moments", "the ticket was refunded after two weeks",
         "my package never arrived and support did not answer", "how do I change the password of my account"] * 3


def _classifier_config(family: str, vocab: int, pad: int, labels: Sequence[str], dropout: float) -> object:
    id2label = dict(enumerate(labels))
    common = {"vocab_size": vocab, "pad_token_id": pad, "num_labels": len(labels), "id2label": id2label,
              "label2id": {v: k for k, v in id2label.items()}}
    if family == "distilbert":
        return DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, dropout=dropout,
                                attention_dropout=dropout, seq_classif_dropout=dropout, max_position_embeddings=128,
                                **common)
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout, "classifier_dropout": dropout,
             "max_position_embeddings": 130, **common}
    if family == "albert":
        return AlbertConfig(embedding_size=16, classifier_dropout_prob=dropout, **sizes)
    return {"bert": BertConfig, "roberta": RobertaConfig}[family](**sizes)


CLASSES: dict[str, type[PreTrainedModel]] = {
    "bert": BertForSequenceClassification, "roberta": RobertaForSequenceClassification,
    "distilbert": DistilBertForSequenceClassification, "albert": AlbertForSequenceClassification}


def save_classifier(directory: Path, family: str, labels: Sequence[str] = ("LABEL_0", "LABEL_1"),
                    dropout: float = 0.1, seed: int = 0) -> Path:
    """A tiny random `family` classifier with a WordPiece tokenizer in `directory` (created); returns it."""
    tokenizer = train_wordpiece_tokenizer(TEXTS, vocab_size=200)
    torch.manual_seed(seed)
    model = CLASSES[family](_classifier_config(family, len(tokenizer), tokenizer.pad_token_id, labels, dropout))
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return Path(directory)


PAIRS = [("the house is small", "das haus ist klein"), ("the dog is old", "der hund ist alt"),
         ("the cat sleeps", "die katze schläft"), ("I read a book", "ich lese ein buch"),
         ("the sun is warm", "die sonne ist warm"), ("we eat bread", "wir essen brot")] * 4


def save_marian(directory: Path, dropout: float = 0.1, seed: int = 0) -> Path:
    """A tiny random MarianMTModel with the opus-mt tokenizer layout (source.spm, target.spm, vocab.json),
    sentencepiece models trained on a few sentence pairs; returns `directory`."""
    import sentencepiece as spm
    from transformers import MarianTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, side in (("source", 0), ("target", 1)):
        spm.SentencePieceTrainer.train(sentence_iterator=iter([p[side] for p in PAIRS]),
                                       model_prefix=str(directory / name), vocab_size=40, model_type="unigram",
                                       hard_vocab_limit=False,
                                       character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1,
                                       minloglevel=2)
        (directory / f"{name}.model").rename(directory / f"{name}.spm")
        (directory / f"{name}.vocab").unlink()
    pieces: list[str] = ["</s>", "<unk>"]
    for name in ("source", "target"):
        processor = spm.SentencePieceProcessor(model_file=str(directory / f"{name}.spm"))
        pieces += [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    vocab["<pad>"] = len(vocab)  # opus-mt: pad last, eos 0, the decoder starts from pad
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = MarianTokenizer(*(str(directory / f) for f in ("source.spm", "target.spm", "vocab.json")))
    config = MarianConfig(vocab_size=len(vocab), decoder_vocab_size=len(vocab), d_model=32, encoder_layers=1,
                          decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, dropout=dropout, attention_dropout=dropout, activation_dropout=dropout,
                          max_position_embeddings=64, pad_token_id=vocab["<pad>"], eos_token_id=0,
                          decoder_start_token_id=vocab["<pad>"], forced_eos_token_id=0, scale_embedding=True)
    torch.manual_seed(seed)
    model = MarianMTModel(config)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def save_llama(directory: Path, dropout: float = 0.0, seed: int = 0) -> Path:
    """A tiny random LlamaForCausalLM (no dropout, as pretrained Llamas come) with a byte-level BPE tokenizer."""
    tokenizer = train_tiny_tokenizer(TEXTS, vocab_size=300)
    model = build_tiny_llama(len(tokenizer), attention_dropout=dropout, hidden_dropout=dropout,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, seed=seed)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return Path(directory)
