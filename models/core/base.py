"""What the three task predictors share: loading, placement, the MC settings, the refusal of a model with no
live dropout, calibration, warm-up, `describe`'s common facts, and saving a model into an artifact.

A task predictor subclasses `BasePredictor`, names its task and model class, and supplies the task
specifics: the layers last-k counts (`_count_layers`), its dropout rates (`_dropout_rates`), `prepare`,
`batch_key`, `cost`, `_predict` and its own `describe` facts (`_task_facts`). The batch contract is
models/core/predictor.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from models.core.artifacts import MODEL_DIR, ArtifactError, Manifest
from models.core.calibration import Calibration
from models.core.device import place_model
from models.core.dropout import DEFAULT_MC_SITES, SITES, validate_sites
from models.core.loading import load_verified
from models.core.ood import OODDetector
from models.core.ood_files import load_detector
from models.core.predictor import MCRequest, PredictorOptions, PreparedItem, served_samples

log = logging.getLogger(__name__)


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Write `model` (safetensors only) and its tokenizer into `directory/model/`, the layout `write_artifact`
    hashes and `load_verified` reads."""
    target = Path(directory) / MODEL_DIR
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


class DropoutRates(Protocol):
    """A task's dropout rates (a dataclass of named rates): `live(sites)` zeroes the sites off at MC time."""

    def live(self, sites: frozenset[str]) -> DropoutRates: ...

    @property
    def any(self) -> bool: ...


class BasePredictor:
    """The shared part of every task predictor (module docstring). Attributes after construction: `manifest`,
    `options`, `name`, `version`, `default_mc_samples`, `tokenizer`, `device`, `model` (placed, eval mode),
    `num_layers`, `sites` (live at MC time), `last_k`, `rates`, `calibration`; the subclass sets
    `max_input_tokens`."""

    task: ClassVar[str]
    # The class(es) the task's fast path serves; `load_class` loads the weights when it is wider (None = it).
    model_class: ClassVar[Any]
    load_class: ClassVar[Any] = None
    # True: a loaded model of another class is served by the task's generic MC path (slower; logged as a warning,
    # `describe()` says so) instead of being refused.
    generic_path: ClassVar[bool] = False
    default_sites: ClassVar[frozenset[str]] = DEFAULT_MC_SITES
    supported_sites: ClassVar[frozenset[str]] = SITES
    # Names an abstain rule may use (None = any); True when T = 0 passes have their own temperature.
    abstain_measures: ClassVar[Collection[str] | None] = None
    separate_deterministic_temperature: ClassVar[bool] = False
    layers_word: ClassVar[str] = "layers"  # describe's MC mode: "last-{k}-{layers_word}"
    warmup_text: ClassVar[str] = "A short warm-up sentence for the model."

    max_input_tokens: int
    # True when two threads may run `predict` on this predictor at once (no shared mutable state: dropout
    # masks drawn per call, the model's flags never toggled). The service then may run concurrent batches.
    concurrent_batches: bool = False

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, manifest: Manifest,
                 options: PredictorOptions) -> None:
        self.manifest = manifest
        self.options = options
        self.name = manifest.model_name
        self.version = manifest.version
        self.default_mc_samples = int(manifest.default_mc_samples)
        self.tokenizer = tokenizer
        self.device = torch.device(options.device)
        self.model = place_model(self._prepare_model(model).eval(), self.device, options.dtype)
        self.num_layers = self._count_layers()
        dropout = manifest.dropout or {}
        self.sites = validate_sites(options.mc_dropout_sites or dropout.get("mc_sites") or self.default_sites)
        self.last_k = int(options.mc_last_k or dropout.get("mc_last_k") or self.num_layers)
        self.rates = self._dropout_rates()
        self._check_mc_capable()
        try:
            self.calibration = Calibration.from_manifest(
                manifest.calibration, deterministic=self.separate_deterministic_temperature,
                measures=self.abstain_measures)
        except ValueError as exc:
            raise ArtifactError(f"{self.name} {self.version}: calibration: {exc}") from exc
        self.ood: OODDetector | None = None  # `attach_ood`; None = no OOD statistics (ood_score null)

    @classmethod
    def load(cls, artifact_dir: Path, options: PredictorOptions) -> Self:
        """Verify and load an artifact of this task. Raises ArtifactError (corrupt, wrong task, a model class
        without this task's fast path unless the task has a generic path, no live dropout)."""
        manifest, model, tokenizer = load_verified(artifact_dir, cls.task, cls.load_class or cls.model_class)
        if not isinstance(model, cls.model_class):
            if not cls.generic_path:
                raise ArtifactError(f"{artifact_dir}: {type(model).__name__} has no {cls.task} fast path")
            log.warning("%s: %s has no %s fast path; serving it on the generic MC path (train-mode dropout on the "
                        "whole model: correct, slower)", artifact_dir, type(model).__name__, cls.task)
        predictor = cls(model, tokenizer, manifest, options)
        predictor.attach_ood(load_detector(artifact_dir, manifest))
        return predictor

    def attach_ood(self, detector: OODDetector | None) -> None:
        """Serve `detector`'s OOD score with every prediction (None: none). Raises ArtifactError when its layer
        or feature dimension does not fit this model."""
        if detector is not None and detector.uses_density:
            vocab = detector.density().vocab_size
            if vocab != len(self.tokenizer):
                raise ArtifactError(f"{self.name} {self.version}: OOD token statistics over {vocab} "
                                    f"ids, but the tokenizer has {len(self.tokenizer)}")
        if detector is not None and not detector.uses_tokens:
            layers, dim = self.ood_feature_layers(), self._ood_feature_dim()
            if detector.layer >= layers or detector.feature_dim != dim:
                raise ArtifactError(f"{self.name} {self.version}: OOD statistics of layer {detector.layer} and "
                                    f"dimension {detector.feature_dim}, but the model has feature layers "
                                    f"0..{layers - 1} of dimension {dim}")
            detector = detector.to(self.device)
        self.ood = detector

    # -- task hooks ---------------------------------------------------------------------------------

    def _prepare_model(self, model: PreTrainedModel) -> PreTrainedModel:
        """The model as it will be served, before placement (default: as loaded)."""
        return model

    def _count_layers(self) -> int:
        """How many layers last-k counts from the top (`self.model` is placed)."""
        raise NotImplementedError

    def _dropout_rates(self) -> DropoutRates:
        raise NotImplementedError

    def _predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[Any]:
        """`predict` for a non-empty batch with one request per item."""
        raise NotImplementedError

    def _warmup_parameters(self) -> dict[str, Any]:
        return {}

    def ood_feature_layers(self) -> int:
        """How many hidden states OOD features may come from (layers 0..n−1; models/core/ood.py)."""
        raise NotImplementedError

    def _ood_feature_dim(self) -> int:
        config = self.model.config  # the width of every hidden state (BERT, Llama: hidden_size; Marian: d_model)
        return int(getattr(config, "hidden_size", None) or config.d_model)

    def ood_features(self, items: Sequence[PreparedItem], layers: Sequence[int],
                     pooling: str = "mean") -> dict[int, torch.Tensor]:
        """Pooled, L2-normalised features [B, d] of `items` at each of `layers`, from the deterministic pass the
        serving path takes them from (for fitting and evaluating detectors; training/core/ood_fit.py)."""
        raise NotImplementedError

    def _ood_outcomes(self, features: torch.Tensor | Mapping[int, torch.Tensor] | None,
                      items: Sequence[PreparedItem]) -> list[tuple[float | None, bool]]:
        """(ood_score, out_of_distribution) per item from its pooled features [B, d] (by layer, for a detector that
        reads several: `ood.layers`) and its token ids (the detector's length term and density), (None, False)
        without a detector."""
        if self.ood is None or (features is None and not self.ood.uses_tokens):
            return [(None, False)] * len(items)
        scores = self.ood.score_items(features, [item.input_ids for item in items])
        return [(score, score > 1.0) for score in scores]

    def _task_facts(self) -> dict[str, Any]:
        """`describe` keys of this task; an "mc" entry is merged into the common "mc" facts."""
        return {}

    # -- shared behaviour ---------------------------------------------------------------------------

    def _check_mc_capable(self) -> None:
        # A model with no dropout at the live sites would serve zero uncertainty as if it were a measurement.
        if not self.sites <= self.supported_sites:
            raise ArtifactError(f"{self.task} MC supports dropout sites {sorted(self.supported_sites)}, "
                                f"not {sorted(self.sites)}")
        if not self.rates.live(self.sites).any:
            raise ArtifactError(f"{self.name} {self.version}: no active dropout at MC sites {sorted(self.sites)} "
                                f"(rates {self.rates}); MC dropout would report zero uncertainty")

    def predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[Any]:
        if len(items) != len(requests):
            raise ValueError(f"{len(items)} items but {len(requests)} MC requests")
        # T = 1 runs as T = 0 in every task (models/core/predictor.py); the seed still fixes sampling.
        requests = [r if served_samples(r.mc_samples) == r.mc_samples else replace(r, mc_samples=0) for r in requests]
        return self._predict(items, requests) if items else []

    def warmup(self) -> None:
        """One deterministic and one MC prediction of a short input, so lazy initialisation (kernels, caches,
        allocator) happens before the first request."""
        item = self.prepare(self.warmup_text, self._warmup_parameters())
        self.predict([item, item], [MCRequest(0, 0), MCRequest(self.default_mc_samples, 1)])

    def prepare(self, text: str, parameters: Mapping[str, Any]) -> PreparedItem:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        k = min(self.last_k, self.num_layers)
        task = self._task_facts()
        return {
            "task": self.task,
            "name": self.name,
            "version": self.version,
            "model_class": type(self.model).__name__,
            "device": str(self.device),
            "dtype": self.options.dtype,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "num_layers": self.num_layers,
            "max_input_tokens": self.max_input_tokens,
            "truncation": {"policy": "refuse"},
            **{key: value for key, value in task.items() if key != "mc"},
            "mc": {
                "default_mc_samples": self.default_mc_samples,
                "last_k": k,
                "mode": "full" if self.last_k >= self.num_layers else f"last-{k}-{self.layers_word}",
                "live_sites": sorted(self.sites),
                "dropout_rates": asdict(self.rates),
                **task.get("mc", {}),
            },
            "calibration": self.calibration.describe(),
            "ood": self.ood.config() if self.ood is not None else None,
            "created_at": self.manifest.created_at,
        }
