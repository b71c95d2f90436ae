"""Per-family views of BERT-style sequence classifiers, so one fast MC forward (models/sentiment/mc.py) serves
BERT, RoBERTa and DistilBERT, and everything else is named as such (the generic path, models/sentiment/generic.py).

A family maps a transformers classifier onto the same post-LayerNorm layer maths:
- `layers(model)`: per encoder layer a `LayerView` (q/k/v projections, attention output projection + norm, the
  feed-forward in/out + norm, and whether the attention output has a dropout: DistilBERT's has none);
- `embed(model, input_ids, mask)`: the embeddings in eval mode (RoBERTa's position ids start after its padding
  index and are computed from the mask, as the library computes them from the padding);
- `head(model, cls, dropout)`: the classification head on the [CLS] rows [R, hidden] → logits [R, C], calling
  `dropout(x)` exactly where the library applies head dropout (BERT: after the pooler; RoBERTa: before and after
  its dense layer; DistilBERT: after pre_classifier + ReLU);
- `rates(model)`: `DropoutRates` (hidden, attention, head); `dropout_config(hidden, attention)`: the config
  fields `from_pretrained` takes to set them; `output_layer(model)`: the label projection (re-initialised when a
  checkpoint's labels are not the user's).
`family_of(model)` returns the family or None (no fast path).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (
    BertForSequenceClassification,
    DistilBertForSequenceClassification,
    RobertaForSequenceClassification,
)

from models.core.dropout import classify_module


@dataclass(frozen=True)
class DropoutRates:
    """Dropout probabilities of a classifier, per site."""

    hidden: float
    attention: float
    head: float

    @classmethod
    def of(cls, model: nn.Module) -> DropoutRates:
        """The rates of a fast-path family, else those of the model's dropout modules (`generic_rates`)."""
        family = family_of(model)
        return family.rates(model) if family is not None else generic_rates(model)

    def live(self, sites: frozenset[str]) -> DropoutRates:
        """These rates with the sites that are off at MC time set to 0."""
        return DropoutRates(
            self.hidden if "hidden" in sites else 0.0,
            self.attention if "attention" in sites else 0.0,
            self.head if "head" in sites else 0.0,
        )

    @property
    def any(self) -> bool:
        return max(self.hidden, self.attention, self.head) > 0


@dataclass(frozen=True)
class LayerView:
    """One post-LN encoder layer seen through the same names whatever the family."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    heads: int
    attention_out: nn.Linear
    attention_norm: nn.LayerNorm
    ffn_in: Callable[[torch.Tensor], torch.Tensor]  # first projection + activation
    ffn_out: nn.Linear
    output_norm: nn.LayerNorm
    attention_out_dropout: bool = True


Dropout = Callable[[torch.Tensor], torch.Tensor]


class _Bert:
    name = "bert"

    @staticmethod
    def encoder(model: Any) -> Any:
        return model.bert

    def layers(self, model: Any) -> list[LayerView]:
        return [LayerView(layer.attention.self.query, layer.attention.self.key, layer.attention.self.value,
                          layer.attention.self.num_attention_heads, layer.attention.output.dense,
                          layer.attention.output.LayerNorm, layer.intermediate, layer.output.dense,
                          layer.output.LayerNorm) for layer in self.encoder(model).encoder.layer]

    def embed(self, model: Any, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(model).embeddings(input_ids=input_ids)

    def head(self, model: Any, cls: torch.Tensor, dropout: Dropout) -> torch.Tensor:
        pooler = model.bert.pooler
        return model.classifier(dropout(pooler.activation(pooler.dense(cls))))

    def rates(self, model: Any) -> DropoutRates:
        config = model.config
        return DropoutRates(float(config.hidden_dropout_prob), float(config.attention_probs_dropout_prob),
                            float(model.dropout.p))

    @staticmethod
    def dropout_config(hidden: float, attention: float) -> dict[str, float]:
        return {"hidden_dropout_prob": hidden, "attention_probs_dropout_prob": attention, "classifier_dropout": hidden}

    def output_layer(self, model: Any) -> nn.Linear:
        return model.classifier


class _Roberta(_Bert):
    name = "roberta"

    @staticmethod
    def encoder(model: Any) -> Any:
        return model.roberta

    def embed(self, model: Any, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        embeddings = model.roberta.embeddings
        # fairseq positions: real tokens count from padding_idx + 1, padding sits at padding_idx
        mask = mask.long()
        positions = torch.cumsum(mask, dim=1) * mask + embeddings.padding_idx
        return embeddings(input_ids=input_ids, position_ids=positions)

    def head(self, model: Any, cls: torch.Tensor, dropout: Dropout) -> torch.Tensor:
        head = model.classifier
        return head.out_proj(dropout(torch.tanh(head.dense(dropout(cls)))))

    def rates(self, model: Any) -> DropoutRates:
        config = model.config
        return DropoutRates(float(config.hidden_dropout_prob), float(config.attention_probs_dropout_prob),
                            float(model.classifier.dropout.p))

    def output_layer(self, model: Any) -> nn.Linear:
        return model.classifier.out_proj


class _DistilBert:
    name = "distilbert"

    def layers(self, model: Any) -> list[LayerView]:
        return [LayerView(b.attention.q_lin, b.attention.k_lin, b.attention.v_lin, b.attention.n_heads,
                          b.attention.out_lin, b.sa_layer_norm, _activated(b.ffn.lin1, b.ffn.activation), b.ffn.lin2,
                          b.output_layer_norm, attention_out_dropout=False)
                for b in model.distilbert.transformer.layer]

    def embed(self, model: Any, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return model.distilbert.embeddings(input_ids=input_ids)

    def head(self, model: Any, cls: torch.Tensor, dropout: Dropout) -> torch.Tensor:
        return model.classifier(dropout(torch.relu(model.pre_classifier(cls))))

    def rates(self, model: Any) -> DropoutRates:
        config = model.config
        return DropoutRates(float(config.dropout), float(config.attention_dropout), float(model.dropout.p))

    @staticmethod
    def dropout_config(hidden: float, attention: float) -> dict[str, float]:
        return {"dropout": hidden, "attention_dropout": attention, "seq_classif_dropout": hidden}

    def output_layer(self, model: Any) -> nn.Linear:
        return model.classifier


def _activated(linear: nn.Linear, activation: Callable[[torch.Tensor], torch.Tensor]) -> Dropout:
    return lambda x: activation(linear(x))


Family = _Bert | _DistilBert
# Exact classes: a subclass may change the forward, and a wrong mirror would serve wrong numbers silently.
FAMILIES: dict[type, Family] = {BertForSequenceClassification: _Bert(), RobertaForSequenceClassification: _Roberta(),
                                DistilBertForSequenceClassification: _DistilBert()}
FAST_CLASSES: tuple[type, ...] = tuple(FAMILIES)


def family_of(model: nn.Module) -> Family | None:
    """The fast-path family of `model` (exact class), or None."""
    return FAMILIES.get(type(model))


# Config fields holding dropout rates, by site, across BERT-family configs (BERT, RoBERTa, DistilBERT, ALBERT,
# ELECTRA, DeBERTa, ...): a model of any of them gets its rates set through from_pretrained.
DROPOUT_FIELDS: dict[str, tuple[str, ...]] = {
    "hidden": ("hidden_dropout_prob", "dropout"),
    "attention": ("attention_probs_dropout_prob", "attention_dropout"),
    "head": ("classifier_dropout", "classifier_dropout_prob", "seq_classif_dropout"),
}


def dropout_overrides(config: Any, hidden: float, attention: float) -> dict[str, float]:
    """`from_pretrained` keyword arguments setting every dropout field `config` has (head = `hidden`)."""
    rates = {"hidden": hidden, "attention": attention, "head": hidden}
    return {name: rates[site] for site, names in DROPOUT_FIELDS.items() for name in names if hasattr(config, name)}


def output_layer(model: nn.Module) -> nn.Linear:
    """The layer projecting onto the labels: the family's, else the last Linear with `num_labels` outputs."""
    family = family_of(model)
    if family is not None:
        return family.output_layer(model)
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == model.config.num_labels]
    if not found:
        raise ValueError(f"{type(model).__name__}: no output layer with {model.config.num_labels} outputs")
    return found[-1]


def generic_rates(model: nn.Module) -> DropoutRates:
    """The largest rate per site among the model's dropout modules (models.core.dropout.classify_module)."""
    found = {"hidden": 0.0, "attention": 0.0, "head": 0.0}
    for name, module in model.named_modules():
        site = classify_module(name, module)
        dropout = module if isinstance(module, nn.Dropout) else getattr(module, "dropout", None)
        if site is not None and isinstance(dropout, nn.Dropout):
            found[site] = max(found[site], float(dropout.p))
    return DropoutRates(found["hidden"], found["attention"], found["head"])
