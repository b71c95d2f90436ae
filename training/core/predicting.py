"""An evaluation's way to a model's numbers: the predictor the server would run, built in memory, over many
inputs in batches (docs/architecture.md §4), so a report measures what a client gets.

- `in_memory_predictor(cls, model, tokenizer, manifest, device, dtype)`: the task predictor the service would
  load from the artifact being written (same manifest sections: preprocessing, dropout, calibration), built
  from the trained objects without writing or reading anything. On CUDA with a 16-bit dtype it serves a copy,
  because placement casts weights in place and the job saves float32 weights afterwards.
- `rebuilt(predictor, calibration=..., last_k=..., sites=...)`: the same model under another calibration, last-k
  or live dropout sites (a choice being fitted, a lever compared), sharing the placed weights.
- `prepare_all(predictor, texts, parameters)`: the prepared items of the texts the server would accept and
  their indices (a text `prepare` refuses, e.g. over the token limit, would be refused with 422, so it is
  left out of the report, and counted by the caller).
- `predict_all(predictor, items, mc_samples, seed, batch_size, phase)`: predictions of prepared items in input
  order; batches hold items of one `batch_key`, longest first; item i always gets the seed mix_seed(seed, i),
  so its answer does not depend on what it was batched with.
- `score_all(predictor, prompts, outputs, mc_samples, seed, batch_size, phase, reduce)`: the predictor's
  `score` (fixed outputs, teacher-forced) over many pairs; `reduce(i, scored)` runs per item as each batch
  finishes, so the [T, n, V] distributions of one batch at most are alive at a time. Returns the reductions.
Both log progress lines per phase (training.core.progress).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from models.core.artifacts import Manifest
from models.core.dropout import mix_seed
from models.core.predictor import InputError, MCRequest, PredictorOptions, PreparedItem, ScoredOutput
from training.core.progress import ProgressLog

P = TypeVar("P")
R = TypeVar("R")
HEARTBEAT_S = 60.0  # one batch of stochastic decodes can take minutes on a busy CPU: say it is alive


def in_memory_predictor(cls: type[P], model: Any, tokenizer: Any, manifest: Manifest, device: torch.device,
                        dtype: str) -> P:
    """See module docstring; the model ends in eval mode."""
    if device.type == "cuda" and dtype != "float32":
        model = copy.deepcopy(model)
    return cls(model, tokenizer, manifest, PredictorOptions(device=str(device), dtype=dtype))  # type: ignore[call-arg]


def rebuilt(predictor: Any, *, calibration: dict[str, Any] | None = None, last_k: int | None = None,
            sites: frozenset[str] | None = None) -> Any:
    """A predictor of the same class and placed model with another manifest calibration, MC last-k and/or live
    dropout sites (None keeps each)."""
    manifest = dataclasses.replace(predictor.manifest, calibration=predictor.manifest.calibration
                                   if calibration is None else calibration)
    options = dataclasses.replace(predictor.options, mc_last_k=last_k or predictor.options.mc_last_k,
                                  mc_dropout_sites=predictor.options.mc_dropout_sites if sites is None else sites)
    return type(predictor)(predictor.model, predictor.tokenizer, manifest, options)


def prepare_all(predictor: Any, texts: Sequence[str],
                parameters: dict[str, Any]) -> tuple[list[PreparedItem], list[int]]:
    """See module docstring."""
    items, kept = [], []
    for i, text in enumerate(texts):
        try:
            items.append(predictor.prepare(text, parameters))
        except InputError:
            continue
        kept.append(i)
    return items, kept


def _batches(lengths: Sequence[int], keys: Sequence[Any], batch_size: int) -> list[list[int]]:
    groups: dict[Any, list[int]] = {}
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        groups.setdefault(keys[i], []).append(i)
    return [group[start: start + batch_size] for group in groups.values()
            for start in range(0, len(group), batch_size)]


def predict_all(predictor: Any, items: Sequence[PreparedItem], mc_samples: int, seed: int, batch_size: int,
                phase: str) -> list[Any]:
    """See module docstring."""
    out: list[Any] = [None] * len(items)
    batches = _batches([item.n_tokens for item in items], [predictor.batch_key(item) for item in items], batch_size)
    with ProgressLog(phase, len(items), heartbeat_s=HEARTBEAT_S) as progress:
        for index in batches:
            requests = [MCRequest(mc_samples, mix_seed(seed, i)) for i in index]
            for i, prediction in zip(index, predictor.predict([items[i] for i in index], requests), strict=True):
                out[i] = prediction
            progress.update(len(index))
    return out


def score_all(predictor: Any, prompts: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]], mc_samples: int,
              seed: int, batch_size: int, phase: str, reduce: Callable[[int, ScoredOutput], R]) -> list[R]:
    """See module docstring."""
    if len(prompts) != len(outputs):
        raise ValueError(f"{len(prompts)} prompts but {len(outputs)} outputs")
    out: list[Any] = [None] * len(prompts)
    lengths = [len(p) + len(o) for p, o in zip(prompts, outputs, strict=True)]
    with ProgressLog(phase, len(prompts), heartbeat_s=HEARTBEAT_S) as progress:
        for index in _batches(lengths, [None] * len(prompts), batch_size):
            requests = [MCRequest(mc_samples, mix_seed(seed, i)) for i in index]
            scored = predictor.score([prompts[i] for i in index], [outputs[i] for i in index], requests)
            for i, item in zip(index, scored, strict=True):
                out[i] = reduce(i, item)
            del scored
            progress.update(len(index))
    return out
