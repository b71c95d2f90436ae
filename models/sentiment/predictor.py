"""Sentiment predictor: texts in, label + calibrated probabilities + MC-dropout uncertainty + abstain out.

The artifact's manifest supplies the truncation policy (`preprocessing`), the MC defaults (`dropout`:
live sites, last-k) and the calibration (`calibration`, models/core/calibration.py: temperature τ applied to
every sample's logits before the softmax; the confidence map chosen on validation; abstain measure and
threshold chosen on validation). `PredictorOptions` override the MC mode, device and dtype. See
models/core/predictor.py for the batch contract.

What the map touches: `probabilities` and `confidence` are the mean of the τ-scaled samples passed through the
confidence map (T = 0: the deterministic τ and map), which keeps the label. The uncertainty measures, and so
the abstain rule (whose threshold training chose on the same quantities), are computed from the τ-scaled
samples before the map: the map recalibrates one number, the top-label probability, and has no per-sample
form that entropies or mutual information could be computed from.

OOD (models/core/ood.py): when the artifact has OOD statistics, the mean-pooled hidden state of the chosen encoder
layer is taken inside the same forward (`forward_logits(..., features_out=...)`) and scored; every prediction, at
any T, carries `ood_score` and `out_of_distribution`, and `abstain` / `abstain_reason` combine it with the
calibrated rule (out of distribution first).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from models.core.artifacts import Manifest
from models.core.base import BasePredictor
from models.core.device import autocast_context
from models.core.ood import abstain_decision
from models.core.padding import pad_ids
from models.core.predictor import (
    ClassificationUncertainty,
    InputError,
    MCRequest,
    PredictorOptions,
    PreparedItem,
    SentimentPrediction,
)
from models.core.uncertainty import MEASURES, calibrated_probs, classification_uncertainty
from models.sentiment.encoders import FAST_CLASSES, family_of
from models.sentiment.mc import DropoutRates, forward_logits, num_layers
from models.sentiment.model import encode_head_tail

TASK = "sentiment"


class SentimentPredictor(BasePredictor):
    """Predictor protocol implementation for the sentiment task (models/core/predictor.py)."""

    task: ClassVar[str] = TASK
    model_class = FAST_CLASSES  # BERT, RoBERTa, DistilBERT (models/sentiment/encoders.py)
    load_class = AutoModelForSequenceClassification  # any classifier loads; the others take the generic path
    generic_path = True
    abstain_measures = frozenset((*MEASURES, "one_minus_confidence"))
    # τ was fitted at the serving T; a deterministic pass has its own (sharper) logits and τ.
    separate_deterministic_temperature = True

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, manifest: Manifest,
                 options: PredictorOptions) -> None:
        super().__init__(model, tokenizer, manifest, options)
        config = self.model.config
        self.labels = list(self.manifest.labels or [config.id2label[i] for i in range(config.num_labels)])
        pre = self.manifest.preprocessing or {}
        trained_max = int(pre.get("max_length", config.max_position_embeddings))
        self.max_input_tokens = min(trained_max, self.options.max_input_tokens or trained_max)
        self.head_tokens = int(pre.get("head_tokens", self.max_input_tokens // 4))
        self.fast_path = family_of(self.model) is not None
        # The fast path draws its masks per call and never touches module flags; the generic one flips them.
        self.concurrent_batches = self.fast_path
        if not self.fast_path:  # the generic path is full MC whatever the manifest chose (models/sentiment/generic.py)
            self.last_k = self.num_layers

    def _count_layers(self) -> int:
        return num_layers(self.model)

    def _dropout_rates(self) -> DropoutRates:
        return DropoutRates.of(self.model)

    # -- Predictor protocol -------------------------------------------------------------------------

    def prepare(self, text: str, parameters: Mapping[str, Any]) -> PreparedItem:
        if parameters:
            raise InputError(f"sentiment takes no parameters, got {sorted(parameters)}")
        if not text or not text.strip():
            raise InputError("text must not be empty")
        ((ids, truncated),) = encode_head_tail(self.tokenizer, [text], self.max_input_tokens, self.head_tokens)
        return PreparedItem(text=text, input_ids=tuple(ids), n_tokens=len(ids), truncated=truncated)

    def batch_key(self, item: PreparedItem) -> Hashable:
        return None

    def cost(self, item: PreparedItem, request: MCRequest) -> int:
        if not self.fast_path:  # every sample runs the whole model
            return max(1, item.n_tokens * max(request.mc_samples, 1))
        # Rows × tokens through the layers that actually run per sample; the top layer is [CLS]-only.
        repeated = max(min(self.last_k, self.num_layers) - 1, 0) if request.mc_samples else 0
        per_sample_layers = self.num_layers + repeated * (request.mc_samples - 1)
        return max(1, item.n_tokens * per_sample_layers // self.num_layers + request.mc_samples)

    def _predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[SentimentPrediction]:
        layers = list(self.ood.layers) if self.ood is not None else []
        features: dict[int, torch.Tensor] = {}
        with torch.inference_mode(), autocast_context(self.device, self.options.dtype):
            input_ids, mask = pad_ids([item.input_ids for item in items], self.tokenizer.pad_token_id, self.device)
            per_item = forward_logits(
                self.model,
                input_ids,
                mask,
                [r.mc_samples for r in requests],
                [r.seed for r in requests],
                self.last_k,
                self.sites,
                feature_layers=layers,
                features_out=features,
            )
            if any(layer not in features for layer in layers):  # full MC expands rows before them: one more pass
                features = self.ood_features(items, layers)
        outcomes = self._ood_outcomes(features if layers else None, items)
        return [self._prediction(item, request, logits.cpu(), outcome)
                for item, request, logits, outcome in zip(items, requests, per_item, outcomes, strict=True)]

    def _prediction(self, item: PreparedItem, request: MCRequest, logits: torch.Tensor,
                    outcome: tuple[float | None, bool]) -> SentimentPrediction:
        probs = calibrated_probs(logits, self.calibration.temperature_for(request.mc_samples))  # [T or 1, C]
        scaled = probs.double().mean(dim=0)
        top = int(scaled.argmax())
        served = self.calibration.calibrated_mean(probs, request.mc_samples)  # same argmax (module docstring)
        uncertainty = None
        uncertain = False
        if request.mc_samples > 0:
            measures = {name: float(value) for name, value in classification_uncertainty(probs).items()}
            uncertainty = ClassificationUncertainty(**measures)
            measures["one_minus_confidence"] = 1.0 - float(scaled[top])
            uncertain = self.calibration.abstains(measures)
        ood_score, out_of_distribution = outcome
        abstain, reason = abstain_decision(out_of_distribution, uncertain)
        return SentimentPrediction(
            label=self.labels[top],
            confidence=float(served[top]),
            probabilities={label: float(p) for label, p in zip(self.labels, served, strict=True)},
            uncertainty=uncertainty,
            abstain=abstain,
            input_tokens=item.n_tokens,
            truncated=item.truncated,
            ood_score=ood_score,
            out_of_distribution=out_of_distribution,
            abstain_reason=reason,
        )

    # -- OOD features (models/core/ood.py): the hidden states of the encoder's deterministic layers ------------

    def ood_feature_layers(self) -> int:
        return self.num_layers  # 0 = embeddings .. L − 1; the top layer computes [CLS] only

    def ood_features(self, items: Sequence[PreparedItem], layers: Sequence[int],
                     pooling: str = "mean") -> dict[int, torch.Tensor]:
        if pooling != "mean":
            raise ValueError(f"sentiment pools by mean, not {pooling!r}")
        features: dict[int, torch.Tensor] = {}
        with torch.inference_mode(), autocast_context(self.device, self.options.dtype):
            input_ids, mask = pad_ids([item.input_ids for item in items], self.tokenizer.pad_token_id, self.device)
            forward_logits(self.model, input_ids, mask, [0] * len(items), [0] * len(items), self.last_k, self.sites,
                           feature_layers=layers, features_out=features)
        return features

    def _task_facts(self) -> dict[str, Any]:
        family = family_of(self.model)
        path = {"path": family.name if family is not None else "generic"}
        if family is None:
            path["warning"] = (f"{type(self.model).__name__} has no fast MC path: served by train-mode dropout on the "
                               "whole model, one forward per MC item (correct, slower)")
        return {"labels": self.labels, "truncation": {"policy": "head+tail", "head_tokens": self.head_tokens},
                "mc": path}
