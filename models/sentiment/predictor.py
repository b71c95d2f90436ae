"""Sentiment predictor: texts in, label + calibrated probabilities + MC-dropout uncertainty + abstain out.

The artifact's manifest supplies the truncation policy (`preprocessing`), the MC defaults (`dropout`:
live sites, last-k) and the calibration (`calibration`: temperature τ applied to every sample's logits
before the softmax; abstain measure and threshold chosen on validation). `PredictorOptions` override
the MC mode, device and dtype. See models/core/predictor.py for the batch contract.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, PreTrainedTokenizerBase

from models.core.artifacts import MODEL_DIR, ArtifactError, Manifest
from models.core.device import autocast_context, place_model
from models.core.dropout import DEFAULT_MC_SITES, validate_sites
from models.core.loading import load_verified
from models.core.padding import pad_ids
from models.core.predictor import (
    ClassificationUncertainty,
    InputError,
    MCRequest,
    PredictorOptions,
    PreparedItem,
    SentimentPrediction,
)
from models.core.uncertainty import calibrated_probs, classification_uncertainty
from models.sentiment.mc import DropoutRates, forward_logits, num_layers
from models.sentiment.model import encode_head_tail

TASK = "sentiment"


def save_sentiment_model(model: BertForSequenceClassification, tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Write model (safetensors) and tokenizer into `directory/model/` for `write_artifact`."""
    target = Path(directory) / MODEL_DIR
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


class SentimentPredictor:
    """Predictor protocol implementation for the sentiment task (models/core/predictor.py)."""

    task: ClassVar[str] = TASK

    def __init__(
        self,
        model: BertForSequenceClassification,
        tokenizer: PreTrainedTokenizerBase,
        manifest: Manifest,
        options: PredictorOptions,
    ) -> None:
        self.manifest = manifest
        self.options = options
        self.name = TASK
        self.version = manifest.version
        self.default_mc_samples = int(manifest.default_mc_samples)
        self.labels = list(manifest.labels or [model.config.id2label[i] for i in range(model.config.num_labels)])
        self.tokenizer = tokenizer
        self.device = torch.device(options.device)
        self.model = place_model(model.eval(), self.device, options.dtype)
        self.num_layers = num_layers(self.model)
        dropout = manifest.dropout or {}
        self.sites = validate_sites(options.mc_dropout_sites or dropout.get("mc_sites") or DEFAULT_MC_SITES)
        self.last_k = int(options.mc_last_k or dropout.get("mc_last_k") or self.num_layers)
        self.rates = DropoutRates.of(self.model)
        self._check_mc_capable()
        pre = manifest.preprocessing or {}
        trained_max = int(pre.get("max_length", self.model.config.max_position_embeddings))
        self.max_length = min(trained_max, options.max_input_tokens or trained_max)
        self.head_tokens = int(pre.get("head_tokens", self.max_length // 4))
        calibration = manifest.calibration or {}
        self.temperature = float(calibration.get("temperature", 1.0))
        # τ was fitted at the serving T; a deterministic pass has its own (sharper) logits and τ.
        self.deterministic_temperature = float(calibration.get("deterministic_temperature", self.temperature))
        abstain = calibration.get("abstain") or {}
        self.abstain_measure: str | None = abstain.get("measure")
        self.abstain_threshold = float(abstain.get("threshold", math.inf))

    @classmethod
    def load(cls, artifact_dir: Path, options: PredictorOptions) -> SentimentPredictor:
        """Verify and load a sentiment artifact. Raises ArtifactError (corrupt, wrong task, no dropout)."""
        manifest, model, tokenizer = load_verified(artifact_dir, TASK, AutoModelForSequenceClassification)
        if not isinstance(model, BertForSequenceClassification):
            raise ArtifactError(f"{artifact_dir}: {type(model).__name__} has no sentiment fast path")
        return cls(model, tokenizer, manifest, options)

    def _check_mc_capable(self) -> None:
        live = self.rates.live(self.sites)
        if not any(rate > 0 for rate in live.values()):
            raise ArtifactError(
                f"{self.name} {self.version}: no active dropout at MC sites {sorted(self.sites)} "
                f"(rates {self.rates}); MC dropout would report zero uncertainty"
            )

    # -- Predictor protocol -------------------------------------------------------------------------

    def prepare(self, text: str, parameters: Mapping[str, Any]) -> PreparedItem:
        if parameters:
            raise InputError(f"sentiment takes no parameters, got {sorted(parameters)}")
        if not text or not text.strip():
            raise InputError("text must not be empty")
        ((ids, truncated),) = encode_head_tail(self.tokenizer, [text], self.max_length, self.head_tokens)
        return PreparedItem(text=text, input_ids=tuple(ids), n_tokens=len(ids), truncated=truncated)

    def batch_key(self, item: PreparedItem) -> Hashable:
        return None

    def cost(self, item: PreparedItem, request: MCRequest) -> int:
        # Rows × tokens through the layers that actually run per sample; the top layer is [CLS]-only.
        repeated = max(min(self.last_k, self.num_layers) - 1, 0) if request.mc_samples else 0
        per_sample_layers = self.num_layers + repeated * (request.mc_samples - 1)
        return max(1, item.n_tokens * per_sample_layers // self.num_layers + request.mc_samples)

    def predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[SentimentPrediction]:
        if len(items) != len(requests):
            raise ValueError(f"{len(items)} items but {len(requests)} MC requests")
        if not items:
            return []
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
            )
        return [self._prediction(item, request, logits.cpu()) for item, request, logits in zip(items, requests, per_item, strict=True)]

    def _prediction(self, item: PreparedItem, request: MCRequest, logits: torch.Tensor) -> SentimentPrediction:
        temperature = self.temperature if request.mc_samples > 0 else self.deterministic_temperature
        probs = calibrated_probs(logits, temperature)  # [T or 1, C]
        mean = probs.double().mean(dim=0)
        top = int(mean.argmax())
        uncertainty = None
        abstain = False
        if request.mc_samples > 0:
            measures = {name: float(value) for name, value in classification_uncertainty(probs).items()}
            uncertainty = ClassificationUncertainty(**measures)
            measures["one_minus_confidence"] = 1.0 - float(mean[top])
            if self.abstain_measure is not None:
                abstain = measures.get(self.abstain_measure, -math.inf) > self.abstain_threshold
        return SentimentPrediction(
            label=self.labels[top],
            confidence=float(mean[top]),
            probabilities={label: float(p) for label, p in zip(self.labels, mean, strict=True)},
            uncertainty=uncertainty,
            abstain=abstain,
            input_tokens=item.n_tokens,
            truncated=item.truncated,
        )

    def warmup(self) -> None:
        item = self.prepare("A short warm-up sentence for the model.", {})
        self.predict([item, item], [MCRequest(0, 0), MCRequest(self.default_mc_samples, 1)])

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "name": self.name,
            "version": self.version,
            "model_class": type(self.model).__name__,
            "labels": self.labels,
            "device": str(self.device),
            "dtype": self.options.dtype,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "num_layers": self.num_layers,
            "max_input_tokens": self.max_length,
            "truncation": {"policy": "head+tail", "head_tokens": self.head_tokens},
            "mc": {
                "default_mc_samples": self.default_mc_samples,
                "last_k": min(self.last_k, self.num_layers),
                "mode": "full" if self.last_k >= self.num_layers else f"last-{self.last_k}-layers",
                "live_sites": sorted(self.sites),
                "dropout_rates": {"hidden": self.rates.hidden, "attention": self.rates.attention, "head": self.rates.head},
            },
            "calibration": {
                "temperature": self.temperature,
                "deterministic_temperature": self.deterministic_temperature,
                "abstain_measure": self.abstain_measure,
                "abstain_threshold": None if math.isinf(self.abstain_threshold) else self.abstain_threshold,
            },
            "created_at": self.manifest.created_at,
        }
