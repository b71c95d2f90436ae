"""Out-of-distribution (OOD) scores from a model's own hidden states (docs/architecture.md §4, "Out of distribution").

A detector holds statistics of the training data's features, fitted by the training job (training/core/ood_fit.py)
and saved in the artifact beside the model, and scores a new input's features in the request that predicts it:

- features: one hidden state of the served model's own deterministic pass (`layer`: 0 = the embeddings' output,
  i = the output of layer i; each task says which stack, models/<task>/predictor.py), mean-pooled over the input's
  real tokens (`pooling` "mean", or "mean_skip_first" for a causal LM whose first position is an attention sink
  with outsized activations), then L2-normalised (`pool`); optionally mapped onto a sentence-embedding model's space
  (for sentiment, its base model) by a fitted linear map (models/core/ood_projection.py).
- methods: "knn_cosine": 1 − cosine similarity to the k-th nearest feature of a stored bank of training inputs
  (Sun et al. 2022); "mahalanobis": squared Mahalanobis distance to one Gaussian fitted on the bank, covariance
  shrunk towards its mean variance (Lee et al. 2018, without classes so every task can use it); "token_bigram" and
  "token_trigram": no hidden state at all, the input's mean per-token negative log-likelihood under a density of
  the training inputs' token ids (interpolated bigram, models/core/token_density.py; Kneser-Ney trigram,
  models/core/token_trigram.py; `scores_of_ids`, `layer` unused); "hybrid": both kinds of evidence,
  w · (length-adjusted feature distance) / s_f + (1 − w) · (token NLL) / s_b, `hybrid` = {"feature_method",
  "weight" w, "scales" [s_f, s_b], "density" (the token method; absent = token_bigram)} with the scales the
  in-domain validation standard deviations, so neither term dominates by its units (what one says of register,
  the other says of meaning); `hybrid["extra"]` may add a third part, the kNN distance of a second layer's features
  (models/core/ood_extra.py; the detector then reads `layers`, both).
- length term: the distance minus `length_coef` × ln(input tokens). Short inputs' pooled features lie further from
  any bank than long ones' (fewer tokens average out less), so a raw distance ranks a short in-domain input (a
  one-sentence review) with short out-of-domain ones; the fit (training/core/ood_fit.py) estimates the slope of
  in-domain distance on ln(tokens) on validation and keeps a fraction of it chosen there (0 = the raw distance).
- score: that distance divided by `threshold`, the distance above which at most `max_flag_rate` (5 %) of in-domain
  validation inputs fall, so `ood_score` > 1 means `out_of_distribution` whatever the method and task.

Files in an artifact: `ood/ood.json` (method, layer, pooling, k, length_coef (absent = 0), threshold, what it was
fitted on) and
`ood/stats.safetensors` (knn_cosine: "bank" [N, d]; mahalanobis: "mean" [d], "precision" [d, d]; either may add the
projection's "proj_*" tensors; token_bigram: the
counts of models/core/token_density.py, its λ and α under "bigram" in ood.json; token_trigram: the counts of
models/core/token_trigram.py, its D and α under "trigram"; hybrid: a feature method's and a density's, and an extra
part's "extra_bank", models/core/ood_extra.py), both listed in the manifest's sha256 file list.
`models/core/ood_files.load_detector` returns None when an artifact has neither file (older artifacts serve
`ood_score` null) and raises ArtifactError for anything malformed; no pickle anywhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from models.core import ood_extra, ood_projection, token_density, token_trigram
from models.core.ood_methods import (
    FEATURE_METHODS,
    POOLINGS,
    distances,
    fit_statistics,
    flag_threshold,
    length_adjusted,
    pool,
)

__all__ = ["METHODS", "OODDetector", "abstain_decision", "distances", "fit_statistics", "flag_threshold",
           "length_adjusted", "pool"]

OOD_DIR = "ood"
CONFIG_FILE = f"{OOD_DIR}/ood.json"
STATS_FILE = f"{OOD_DIR}/stats.safetensors"
METHODS = (*FEATURE_METHODS, "token_bigram", "token_trigram", "hybrid")
TOKEN_METHODS = ("token_bigram", "token_trigram")  # scored on the input's token ids alone, not on features
# each density's saved tensor names and their check
_DENSITIES = {"token_bigram": (token_density.TENSORS, token_density.problems),
              "token_trigram": (token_trigram.TENSORS, token_trigram.problems)}
_TOKEN_TENSORS = frozenset((*token_density.TENSORS, *token_trigram.TENSORS))
_TENSORS = {"knn_cosine": ("bank",), "mahalanobis": ("mean", "precision")}
REASONS = ("out_of_distribution", "uncertain")


def abstain_decision(out_of_distribution: bool, uncertain: bool) -> tuple[bool, str | None]:
    """(abstain, abstain_reason): out of distribution first (the model's uncertainty is not to be trusted on
    inputs unlike its training data), then the calibrated uncertainty rule, else (False, None)."""
    if out_of_distribution:
        return True, "out_of_distribution"
    if uncertain:
        return True, "uncertain"
    return False, None


@dataclass(frozen=True)
class OODDetector:
    """Fitted OOD statistics of one artifact (module docstring); `info` is free JSON (what it was fitted on)."""

    method: str
    layer: int
    threshold: float
    tensors: dict[str, torch.Tensor] = field(repr=False)
    pooling: str = "mean"
    k: int = 1
    info: dict[str, Any] = field(default_factory=dict)
    length_coef: float = 0.0
    bigram: dict[str, float] = field(default_factory=dict)  # token_bigram (and its hybrid): {"lam", "alpha"}
    hybrid: dict[str, Any] = field(default_factory=dict)  # hybrid: {"feature_method", "weight", "scales", "density"}
    trigram: dict[str, float] = field(default_factory=dict)  # token_trigram (and its hybrid): {"discount", "alpha"}

    def __post_init__(self) -> None:
        problems = _problems(self.method, self.layer, self.threshold, self.pooling, self.k, self.tensors)
        if self.method == "hybrid":
            problems += _hybrid_problems(self.hybrid, self.tensors, self.layer)
            if not problems and self.hybrid.get("extra") and self.tensors[ood_extra.BANK].shape[-1] != self.feature_dim:
                problems.append(f"hybrid extra bank of dimension {self.tensors[ood_extra.BANK].shape[-1]}, the "
                                f"features {self.feature_dim}")  # every layer of these models has one width
        if not isinstance(self.length_coef, (int, float)) or isinstance(self.length_coef, bool) \
                or not math.isfinite(self.length_coef):
            problems.append(f"length_coef {self.length_coef!r} is not a finite number")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def uses_tokens(self) -> bool:
        """True when the detector scores token ids (`scores_of_ids`) rather than features (`scores`)."""
        return self.method in TOKEN_METHODS

    @property
    def uses_density(self) -> bool:
        """True when the detector holds a token density (token_bigram, token_trigram, hybrid)."""
        return self.method in (*TOKEN_METHODS, "hybrid")

    @property
    def density_method(self) -> str:
        """The token method of its density (the method itself, or a hybrid's density part)."""
        return self.method if self.uses_tokens else str(self.hybrid.get("density", "token_bigram"))

    @property
    def feature_method(self) -> str:
        """The hidden-state method it scores features with (the method itself, or a hybrid's feature part)."""
        return str(self.hybrid.get("feature_method", self.method))

    @property
    def layers(self) -> tuple[int, ...]:
        """The hidden-state layers it reads: its own, then a hybrid's extra part's (models/core/ood_extra.py)."""
        extra = self.hybrid.get("extra")
        return (self.layer, int(extra["layer"])) if extra else (self.layer,)

    @property
    def feature_dim(self) -> int:
        """The feature dimension it scores (a token method: the vocabulary size)."""
        if self.uses_tokens:
            return self.density().vocab_size
        statistics = int(self.tensors["bank" if self.feature_method == "knn_cosine" else "mean"].shape[-1])
        return ood_projection.input_dim(self.tensors, statistics)

    def to(self, device: torch.device | str) -> OODDetector:
        """The same detector with its feature statistics on `device` (where the model's features are; token counts
        stay on the CPU, where the ids are)."""
        if self.uses_tokens:
            return self
        moved = {n: t if n in _TOKEN_TENSORS else t.to(device) for n, t in self.tensors.items()}
        return OODDetector(self.method, self.layer, self.threshold, moved, self.pooling, self.k, self.info,
                           self.length_coef, self.bigram, self.hybrid, self.trigram)

    def density(self) -> token_density.TokenBigram | token_trigram.TokenTrigram:
        """The token density of a token_bigram, token_trigram or hybrid detector."""
        if self.density_method == "token_trigram":
            return token_trigram.TokenTrigram({n: self.tensors[n] for n in token_trigram.TENSORS}, **self.trigram)
        return token_density.TokenBigram({n: self.tensors[n] for n in token_density.TENSORS}, **self.bigram)

    def score_items(self, features: torch.Tensor | Mapping[int, torch.Tensor] | None,
                    ids: Sequence[Sequence[int]]) -> list[float]:
        """`ood_score` of each input from what the serving pass has: its pooled features [B, d] of `layer`, or by
        layer those of every layer in `layers` (None for a token method), and its served token ids."""
        if self.uses_tokens:
            return self.scores_of_ids(ids)
        by_layer = features if isinstance(features, Mapping) else {self.layer: features}
        if any(by_layer.get(layer) is None for layer in self.layers):
            raise ValueError(f"a {self.method} detector needs the inputs' features of layers {list(self.layers)}")
        lengths = [len(x) for x in ids]
        if self.method != "hybrid":
            return self.scores(by_layer[self.layer], lengths)
        weight, (feature_scale, token_scale) = self.hybrid["weight"], self.hybrid["scales"]
        feature = self._feature_distance(by_layer[self.layer], lengths).cpu()  # where the ids' NLL is
        raw = weight * feature / feature_scale + (1.0 - weight) * self.density().nll(ids) / token_scale
        if extra := self.hybrid.get("extra"):
            second = ood_extra.distance(self.tensors, by_layer[extra["layer"]], self.k).cpu()
            raw = raw + extra["weight"] * second / extra["scale"]
        return (raw / self.threshold).tolist()

    def scores_of_ids(self, ids: Sequence[Sequence[int]]) -> list[float]:
        """`ood_score` of each input from its served token ids (token_bigram), length term and threshold as
        `scores`."""
        raw = self.density().nll(ids)
        return (length_adjusted(raw, [len(x) for x in ids], self.length_coef) / self.threshold).tolist()

    def scores(self, features: torch.Tensor, lengths: Sequence[int] | None = None) -> list[float]:
        """`ood_score` of each row of `features` [B, d] whose input had `lengths[i]` tokens: length-adjusted
        distance / threshold (> 1 = out of distribution). `lengths` may be None only when `length_coef` is 0."""
        if self.method == "hybrid":
            raise ValueError("a hybrid detector scores features and token ids together (score_items)")
        return (self._feature_distance(features, lengths) / self.threshold).tolist()

    def _feature_distance(self, features: torch.Tensor, lengths: Sequence[int] | None) -> torch.Tensor:
        """The length-adjusted hidden-state distance [B] (a hybrid's feature part), before the threshold."""
        if self.uses_tokens:
            raise ValueError(f"a {self.method} detector scores token ids (scores_of_ids), not features")
        if features.shape[-1] != self.feature_dim:
            raise ValueError(f"features have dimension {features.shape[-1]}, the detector {self.feature_dim}")
        raw = distances(self.feature_method, self.tensors, ood_projection.project(self.tensors, features), self.k)
        return length_adjusted(raw, lengths, self.length_coef)

    def config(self) -> dict[str, Any]:
        """The JSON half of the saved detector (also what `describe` shows)."""
        return {"method": self.method, "layer": self.layer, "pooling": self.pooling, "k": self.k,
                "length_coef": self.length_coef, "threshold": self.threshold, "feature_dim": self.feature_dim,
                "score": "distance / threshold; > 1 = out_of_distribution",
                **{name: value for name, value in (("bigram", self.bigram), ("trigram", self.trigram),
                                                   ("hybrid", self.hybrid), ("info", self.info)) if value}}

    def save(self, directory: Path) -> None:
        """Write `ood/ood.json` and `ood/stats.safetensors` under `directory` (an artifact's staging dir)."""
        directory = Path(directory)
        (directory / OOD_DIR).mkdir(parents=True, exist_ok=True)
        save_file({n: t.detach().cpu().contiguous() for n, t in self.tensors.items()}, str(directory / STATS_FILE))
        (directory / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2, sort_keys=True), encoding="utf-8")


def _problems(method: Any, layer: Any, threshold: Any, pooling: Any, k: Any,
              tensors: Mapping[str, Any]) -> list[str]:
    out = []
    if method not in METHODS:
        return [f"method {method!r} is not one of {METHODS}"]
    if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
        out.append(f"layer {layer!r} is not an integer >= 0")
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold) \
            or threshold <= 0:
        out.append(f"threshold {threshold!r} is not a finite number > 0")
    if pooling not in POOLINGS:
        out.append(f"pooling {pooling!r} is not one of {POOLINGS}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        out.append(f"k {k!r} is not an integer >= 1")
    if method in TOKEN_METHODS:
        return [*out, *_DENSITIES[method][1](tensors)]
    if method == "hybrid":  # _hybrid_problems checks its two parts
        return out
    wanted = _TENSORS[method]
    if set(tensors) - set(ood_projection.TENSORS) != set(wanted):
        return [*out, f"tensors {sorted(tensors)}, expected {sorted(wanted)} (and optionally a projection)"]
    if not all(isinstance(t, torch.Tensor) and t.is_floating_point() and bool(torch.isfinite(t).all())
               for t in tensors.values()):
        return [*out, "tensors must be finite floating-point tensors"]
    if method == "knn_cosine":
        bank = tensors["bank"]
        if bank.ndim != 2 or bank.shape[0] < 1:
            out.append(f"bank has shape {tuple(bank.shape)}, expected [N >= 1, d]")
    else:
        mean, precision = tensors["mean"], tensors["precision"]
        if mean.ndim != 1 or tuple(precision.shape) != (mean.shape[0], mean.shape[0]):
            out.append(f"mean {tuple(mean.shape)} and precision {tuple(precision.shape)} do not match")
    statistics = tensors["bank" if method == "knn_cosine" else "mean"]
    return out or ood_projection.problems(tensors, int(statistics.shape[-1]))


def _hybrid_problems(hybrid: Mapping[str, Any], tensors: Mapping[str, Any], layer: int) -> list[str]:
    method, weight, scales = hybrid.get("feature_method"), hybrid.get("weight"), hybrid.get("scales")
    density = hybrid.get("density", "token_bigram")
    if method not in FEATURE_METHODS:
        return [f"hybrid feature_method {method!r} is not one of {FEATURE_METHODS}"]
    if density not in _DENSITIES:
        return [f"hybrid density {density!r} is not one of {tuple(_DENSITIES)}"]
    out = []
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0.0 < weight < 1.0:
        out.append(f"hybrid weight {weight!r} is not in (0, 1)")
    if not isinstance(scales, (list, tuple)) or len(scales) != 2 or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0 for x in scales):
        out.append(f"hybrid scales {scales!r} are not two finite numbers > 0")
    features = {n: t for n, t in tensors.items() if n not in _TOKEN_TENSORS and not n.startswith(ood_extra.PREFIX)}
    tokens = {n: t for n, t in tensors.items() if n in _TOKEN_TENSORS}
    return [*out, *_problems(method, 0, 1.0, "mean", 1, features), *_DENSITIES[density][1](tokens),
            *ood_extra.problems(hybrid.get("extra"), layer, tensors)]
