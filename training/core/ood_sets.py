"""The sets and settings of an OOD fit (training/core/ood_fit.py): which texts each step reads (`OODSets`, built by
each task's probes.py, with `Probes` labelled by kind and `OODSizes`) and the candidates and limits (`OODSettings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from models.core.ood import METHODS
from training.core.ood_teacher import Teacher


@dataclass(frozen=True)
class Probes:
    """Out-of-domain texts and, aligned, their kinds ("bible", "news", ...)."""
    texts: list[str]
    kinds: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.kinds):
            raise ValueError(f"{len(self.texts)} probe texts but {len(self.kinds)} kinds")

    def counts(self) -> dict[str, int]:
        return {kind: self.kinds.count(kind) for kind in dict.fromkeys(self.kinds)}


@dataclass(frozen=True)
class OODSizes:
    """How many texts each set of a sequence task's fit takes (its `ood_sets`); probes are per kind."""

    bank: int = 2000
    choice: int = 200
    threshold: int = 300
    test: int = 400
    choice_probes: int = 150
    test_probes: int = 300


@dataclass(frozen=True)
class OODSets:
    """Texts of one fit (module docstring); `record` says where each set came from, for the manifest."""

    bank: list[str]
    choice: list[str]
    threshold: list[str]
    choice_probes: Probes
    test: list[str]
    test_probes: Probes
    parameters: dict[str, Any] = field(default_factory=dict)  # `prepare` parameters (sentiment: none)
    corpus: list[str] | None = None  # training inputs the token density counts (None: the bank)
    record: dict[str, Any] = field(default_factory=dict)
    test_groups: list[str] | None = None  # aligned with `test`: in-domain kinds reported apart ("review", "snippet")
    threshold_groups: list[str] | None = None  # aligned with `threshold`: each group's flag rate is bounded (step 4)
    teacher: Teacher | None = None  # a sentence embedder and texts: projected candidates (ood_teacher.py)


@dataclass(frozen=True)
class OODSettings:
    """Candidates and limits: hidden-state `layers`, `methods`, the kNN's `k`, the pooling, the flag rate (and the
    shares of it tried with a threshold group left out), the fractions of the in-domain length slope the length term
    may keep. Raises ValueError for a share outside (0, 1]."""

    layers: Sequence[int]
    methods: Sequence[str] = METHODS
    k: int = 10
    pooling: str = "mean"
    max_flag_rate: float = 0.05
    batch_size: int = 32
    min_group: int = 40  # smallest threshold group whose own quantile counts (step 4); smaller ones count pooled
    transfer_fractions: Sequence[float] = (1.0, 0.8, 0.6, 0.4, 0.2)  # of max_flag_rate, tried leaving a group out
    length_fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)  # of the length slope (models/core/ood.py)
    # token_bigram's interpolation weight λ and add-α unigram smoothing: on the translation quick artifact's
    # validation probes λ 0.5 / 0.7 / 0.9 gave AUROC 0.974 / 0.976 / 0.978 (flat), λ 0 (unigram alone) 0.923.
    bigram: tuple[float, float] = (0.7, 0.5)
    # token_trigram's Kneser-Ney discount and unigram α (the textbook D = 0.75), and its count cut-off (a trigram
    # seen once is dropped from the file: on sentiment's validation texts AUROC 0.938 either way, 111 → 43 MB).
    trigram: tuple[float, float] = (0.75, 0.5)
    trigram_min_count: int = 2

    def __post_init__(self) -> None:
        if not self.transfer_fractions or not all(0.0 < f <= 1.0 for f in self.transfer_fractions):
            raise ValueError(f"transfer_fractions {list(self.transfer_fractions)} must be in (0, 1]")
