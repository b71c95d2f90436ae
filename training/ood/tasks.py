"""Each task's OOD sets of an existing artifact and its feature pooling, for the OOD command lines
(`python -m training.ood`, `python -m training.ood.ceiling`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.core.ood_sets import OODSets
from training.generation.probes import OOD_POOLING as GENERATION_POOLING
from training.generation.probes import artifact_ood_sets as generation_sets
from training.sentiment.probes import artifact_ood_sets as sentiment_sets
from training.translation.probes import artifact_ood_sets as translation_sets

# task → OOD sets of an artifact's own data (each task's probes.py; the same sets its job fits at its end)
SETS: dict[str, Callable[[Any, Path], OODSets]] = {"sentiment": sentiment_sets, "translation": translation_sets,
                                                   "generation": generation_sets}
POOLING: dict[str, str] = {"generation": GENERATION_POOLING}  # the others: "mean"
