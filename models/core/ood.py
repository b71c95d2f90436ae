"""Out-of-distribution (OOD) scores from a model's own hidden states (docs/architecture.md §4, "Out of distribution").

A detector holds statistics of the training data's features, fitted by the training job (training/core/ood_fit.py)
and saved in the artifact beside the model, and scores a new input's features in the request that predicts it:

- features: one hidden state of the served model's own deterministic pass (`layer`: 0 = the embeddings' output,
  i = the output of layer i; each task says which stack, models/<task>/predictor.py), mean-pooled over the input's
  real tokens (`pooling` "mean", or "mean_skip_first" for a causal LM whose first position is an attention sink
  with outsized activations), then L2-normalised (`pool`).
- methods: "knn_cosine": 1 − cosine similarity to the k-th nearest feature of a stored bank of training inputs
  (Sun et al. 2022); "mahalanobis": squared Mahalanobis distance to one Gaussian fitted on the bank, covariance
  shrunk towards its mean variance (Lee et al. 2018, without classes so every task can use it); "token_bigram":
  no hidden state at all, the input's mean per-token negative log-likelihood under a bigram density of the
  training inputs' token ids (models/core/token_density.py; `scores_of_ids`, `layer` unused).
- length term: the distance minus `length_coef` × ln(input tokens). Short inputs' pooled features lie further from
  any bank than long ones' (fewer tokens average out less), so a raw distance ranks a short in-domain input (a
  one-sentence review) with short out-of-domain ones; the fit (training/core/ood_fit.py) estimates the slope of
  in-domain distance on ln(tokens) on validation and keeps a fraction of it chosen there (0 = the raw distance).
- score: that distance divided by `threshold`, the distance above which at most `max_flag_rate` (5 %) of in-domain
  validation inputs fall, so `ood_score` > 1 means `out_of_distribution` whatever the method and task.

Files in an artifact: `ood/ood.json` (method, layer, pooling, k, length_coef (absent = 0), threshold, what it was
fitted on) and
`ood/stats.safetensors` (knn_cosine: "bank" [N, d]; mahalanobis: "mean" [d], "precision" [d, d]; token_bigram: the
counts of models/core/token_density.py, its λ and α under "bigram" in ood.json), both listed in
the manifest's sha256 file list. `load_detector` returns None when an artifact has neither file (older artifacts
serve `ood_score` null) and raises ArtifactError for anything malformed; no pickle anywhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.core import token_density
from models.core.artifacts import ArtifactError, Manifest

OOD_DIR = "ood"
CONFIG_FILE = f"{OOD_DIR}/ood.json"
STATS_FILE = f"{OOD_DIR}/stats.safetensors"
METHODS = ("knn_cosine", "mahalanobis", "token_bigram")
TOKEN_METHODS = ("token_bigram",)  # scored on the input's token ids, not on features
POOLINGS = ("mean", "mean_skip_first")
_TENSORS = {"knn_cosine": ("bank",), "mahalanobis": ("mean", "precision"), "token_bigram": token_density.TENSORS}
REASONS = ("out_of_distribution", "uncertain")


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """L2-normalised mean of `hidden` [B, L, d] over the positions where `mask` [B, L] is true, float32 [B, d].
    "mean_skip_first" leaves out each row's first real position when the row has more than one."""
    keep = mask.bool()
    if pooling == "mean_skip_first":
        first = keep.int().argmax(dim=1)
        later = keep.clone()
        rows = torch.arange(keep.shape[0], device=keep.device)
        later[rows, first] = False
        keep = torch.where(later.any(dim=1, keepdim=True), later, keep)
    elif pooling != "mean":
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    weights = keep.to(torch.float32)[..., None]
    summed = (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
    return torch.nn.functional.normalize(summed, dim=-1)


def distances(method: str, tensors: Mapping[str, torch.Tensor], features: torch.Tensor, k: int) -> torch.Tensor:
    """Raw distance [B] (float32) of L2-normalised `features` [B, d] to the fitted statistics (module docstring)."""
    x = features.float()
    if method == "knn_cosine":
        bank = tensors["bank"]
        similarity = x @ bank.to(x.device).T  # [B, N]
        return 1.0 - similarity.topk(min(k, bank.shape[0]), dim=1).values[:, -1]
    if method == "mahalanobis":
        centred = x - tensors["mean"].to(x.device)
        return ((centred @ tensors["precision"].to(x.device)) * centred).sum(dim=1)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def length_adjusted(raw: torch.Tensor, lengths: Sequence[int] | None, coef: float) -> torch.Tensor:
    """`raw` distances [B] minus `coef` × ln(tokens) of each input (module docstring); `raw` when coef is 0.
    Raises ValueError when the lengths are missing or do not match."""
    if coef == 0.0:
        return raw
    if lengths is None or len(lengths) != raw.shape[0]:
        raise ValueError(f"{raw.shape[0]} distances but lengths {lengths!r}")
    logs = torch.tensor(lengths, dtype=torch.float32, device=raw.device).clamp_min(1.0).log()
    return raw - coef * logs


def fit_statistics(method: str, bank: torch.Tensor, shrinkage: float = 1e-3) -> dict[str, torch.Tensor]:
    """The tensors `distances` needs, from training features `bank` [N, d] (L2-normalised). Mahalanobis: mean and
    the inverse of the covariance + `shrinkage` × its mean variance × I (computed in float64; N < d stays
    invertible)."""
    if bank.ndim != 2 or bank.shape[0] < 2:
        raise ValueError(f"need a [N >= 2, d] feature bank, got {tuple(bank.shape)}")
    if method == "knn_cosine":
        return {"bank": bank.float().contiguous()}
    if method == "mahalanobis":
        x = bank.double()
        mean = x.mean(dim=0)
        covariance = torch.cov((x - mean).T)
        covariance += shrinkage * covariance.diagonal().mean() * torch.eye(x.shape[1], dtype=x.dtype)
        return {"mean": mean.float(), "precision": torch.linalg.inv(covariance).float().contiguous()}
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def flag_threshold(in_domain: torch.Tensor, max_flag_rate: float) -> float:
    """The smallest observed distance t such that at most floor(`max_flag_rate` × n) of the in-domain distances
    are > t: flagging `distance > t` flags at most that share of these inputs, by construction."""
    values = torch.sort(in_domain.double().flatten()).values
    n = values.numel()
    if n == 0:
        raise ValueError("no in-domain distances to fit a threshold on")
    allowed = math.floor(max_flag_rate * n)
    return float(values[n - allowed - 1])


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
    bigram: dict[str, float] = field(default_factory=dict)  # token_bigram: {"lam", "alpha"}

    def __post_init__(self) -> None:
        problems = _problems(self.method, self.layer, self.threshold, self.pooling, self.k, self.tensors)
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
    def feature_dim(self) -> int:
        """The feature dimension it scores (token_bigram: the vocabulary size)."""
        name = {"knn_cosine": "bank", "mahalanobis": "mean"}.get(self.method, "unigram")
        return int(self.tensors[name].shape[-1])

    def to(self, device: torch.device | str) -> OODDetector:
        """The same detector with its tensors on `device` (where the model's features are; token counts stay on
        the CPU, where the ids are)."""
        if self.uses_tokens:
            return self
        return OODDetector(self.method, self.layer, self.threshold, {n: t.to(device) for n, t in self.tensors.items()},
                           self.pooling, self.k, self.info, self.length_coef, self.bigram)

    def density(self) -> token_density.TokenBigram:
        """The bigram density of a token_bigram detector."""
        return token_density.TokenBigram(self.tensors, **self.bigram)

    def scores_of_ids(self, ids: Sequence[Sequence[int]]) -> list[float]:
        """`ood_score` of each input from its served token ids (token_bigram), length term and threshold as
        `scores`."""
        raw = self.density().nll(ids)
        return (length_adjusted(raw, [len(x) for x in ids], self.length_coef) / self.threshold).tolist()

    def scores(self, features: torch.Tensor, lengths: Sequence[int] | None = None) -> list[float]:
        """`ood_score` of each row of `features` [B, d] whose input had `lengths[i]` tokens: length-adjusted
        distance / threshold (> 1 = out of distribution). `lengths` may be None only when `length_coef` is 0."""
        if self.uses_tokens:
            raise ValueError("a token_bigram detector scores token ids (scores_of_ids), not features")
        if features.shape[-1] != self.feature_dim:
            raise ValueError(f"features have dimension {features.shape[-1]}, the detector {self.feature_dim}")
        raw = distances(self.method, self.tensors, features, self.k)
        return (length_adjusted(raw, lengths, self.length_coef) / self.threshold).tolist()

    def config(self) -> dict[str, Any]:
        """The JSON half of the saved detector (also what `describe` shows)."""
        return {"method": self.method, "layer": self.layer, "pooling": self.pooling, "k": self.k,
                "length_coef": self.length_coef, "threshold": self.threshold, "feature_dim": self.feature_dim,
                "score": "distance / threshold; > 1 = out_of_distribution", **({"bigram": self.bigram} if self.bigram
                                                                               else {}),
                **({"info": self.info} if self.info else {})}

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
        return [*out, *token_density.problems(tensors)]
    wanted = _TENSORS[method]
    if set(tensors) != set(wanted):
        return [*out, f"tensors {sorted(tensors)}, expected {sorted(wanted)}"]
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
    return out


def load_detector(artifact_dir: Path, manifest: Manifest) -> OODDetector | None:
    """The detector saved in a verified artifact, None when it has none. Raises ArtifactError when the OOD files
    are malformed, half present, or not covered by the manifest's checksums."""
    artifact_dir = Path(artifact_dir)
    present = [name for name in (CONFIG_FILE, STATS_FILE) if (artifact_dir / name).exists()]
    if not present:
        return None
    where = f"{artifact_dir}: OOD statistics"
    if len(present) != 2:
        raise ArtifactError(f"{where}: {present} without its pair ({CONFIG_FILE} and {STATS_FILE} go together)")
    unlisted = [name for name in present if name not in manifest.files]
    if unlisted:
        raise ArtifactError(f"{where}: {unlisted} not in the manifest's checksums")
    try:
        config = json.loads((artifact_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(artifact_dir / STATS_FILE))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError) as exc:
        raise ArtifactError(f"{where}: unreadable: {exc}") from exc
    if not isinstance(config, dict):
        raise ArtifactError(f"{where}: {CONFIG_FILE} is not a JSON object")
    try:
        detector = OODDetector(method=config.get("method"), layer=config.get("layer"),
                               threshold=config.get("threshold"), tensors=dict(tensors),
                               pooling=config.get("pooling", "mean"), k=config.get("k", 1),
                               info=config.get("info") or {}, length_coef=config.get("length_coef", 0.0),
                               bigram=config.get("bigram") or {})
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{where}: {exc}") from exc
    if config.get("feature_dim", detector.feature_dim) != detector.feature_dim:
        raise ArtifactError(f"{where}: feature_dim {config.get('feature_dim')} but tensors of {detector.feature_dim}")
    return detector
