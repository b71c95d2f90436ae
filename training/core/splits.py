"""Labelled text splits and the seeded stratified splitter every classification dataset uses.

Contract of `stratified_split(labels, sizes, seed)`: `sizes` maps split name → number of examples, in
allocation order; at most one size may be None ("the rest"). Each class's indices are shuffled once with
`seed` and dealt out in that order, every split getting its class share by largest remainder, so the
splits are disjoint, stratified, and a split allocated first (put "test" first) does not change when a
later size changes. Raises ValueError when the sizes exceed the data.

Subsets for choices and reports (docs/architecture.md §4): every choice a job makes (early stopping, last-k,
calibration, abstain rule) is made on validation, on parts of it that no other choice used, and the test split
is scored once, for the report. `partition(labels, sizes, seed)` cuts one split into such named parts: disjoint
by construction (one stratified deal), the same indices for the same sizes and seed. `nested(indices, labels,
n, seed)` picks a fixed stratified subset of a part (e.g. the reviews where an expensive mode also runs), so a
nested subset is a subset by construction. `Parts.record()` says what each part holds, for manifests. Labels
may be all 0 for unlabelled items (sentences, text blocks).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TextSplit:
    """Parallel lists of texts and integer labels."""

    texts: list[str]
    labels: list[int]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, n: int | None, seed: int) -> TextSplit:
        """A fixed, stratified subset of `n` examples (all when n is None or ≥ len)."""
        if n is None or n >= len(self):
            return self
        (index,) = stratified_split(self.labels, {"subset": n}, seed).values()
        return TextSplit([self.texts[i] for i in index], [self.labels[i] for i in index])


@dataclass(frozen=True)
class ClassificationData:
    """Named splits (train/validation/test), the label names, and the data-source record for manifests."""

    splits: dict[str, TextSplit]
    label_names: tuple[str, ...]
    source: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}


def _shares(class_sizes: Sequence[int], n: int) -> list[int]:
    """Split n across classes proportionally to their sizes (largest remainder, capped by availability)."""
    total = sum(class_sizes)
    exact = [n * size / total for size in class_sizes]
    shares = [min(int(x), size) for x, size in zip(exact, class_sizes, strict=True)]
    order = sorted(range(len(class_sizes)), key=lambda c: exact[c] - int(exact[c]), reverse=True)
    for c in order * 2:
        if sum(shares) == n:
            break
        if shares[c] < class_sizes[c]:
            shares[c] += 1
    return shares


def stratified_split(labels: Sequence[int], sizes: Mapping[str, int | None], seed: int) -> dict[str, list[int]]:
    """Indices per split (see module docstring); each split's indices come shuffled."""
    rest = [name for name, size in sizes.items() if size is None]
    if len(rest) > 1:
        raise ValueError(f"at most one split may take the rest, got {rest}")
    fixed = sum(size for size in sizes.values() if size is not None)
    if fixed > len(labels):
        raise ValueError(f"split sizes {dict(sizes)} need {fixed} examples, only {len(labels)} available")
    rng = random.Random(seed)
    classes = sorted(set(labels))
    pools = {c: [i for i, label in enumerate(labels) if label == c] for c in classes}
    for c in classes:
        rng.shuffle(pools[c])
    remaining = {c: len(pools[c]) for c in classes}
    taken = dict.fromkeys(classes, 0)
    out: dict[str, list[int]] = {}
    for name, size in sizes.items():
        if size is None:  # the rest, less what the sized splits after this one still need
            later = sum(s for k, s in sizes.items() if s is not None and k not in out and k != name)
            n = sum(remaining.values()) - later
        else:
            n = size
        shares = _shares([remaining[c] for c in classes], n)
        picked: list[int] = []
        for c, share in zip(classes, shares, strict=True):
            picked.extend(pools[c][taken[c]: taken[c] + share])
            taken[c] += share
            remaining[c] -= share
        rng.shuffle(picked)
        out[name] = picked
    return out


@dataclass(frozen=True)
class Parts:
    """Disjoint named parts of one split: name → indices into it (see module docstring)."""

    split: str
    indices: dict[str, list[int]]

    def __post_init__(self) -> None:
        seen: dict[int, str] = {}
        for name, index in self.indices.items():
            for i in index:
                if i in seen:
                    raise ValueError(f"{self.split}: item {i} is in both {seen[i]!r} and {name!r}")
                seen[i] = name

    def of(self, name: str, items: Sequence[Any]) -> list[Any]:
        """The items of part `name`, in the part's order."""
        return [items[i] for i in self.indices[name]]

    def record(self) -> dict[str, Any]:
        """{"split", "parts": {name: size}, "disjoint": true} for a manifest."""
        return {"split": self.split, "parts": {name: len(index) for name, index in self.indices.items()},
                "disjoint": True}


def partition(split: str, labels: Sequence[int], sizes: Mapping[str, int | None], seed: int) -> Parts:
    """Disjoint, stratified named parts of `split` (module docstring); sizes as `stratified_split` takes them.
    Raises ValueError when the sizes exceed the split."""
    return Parts(split, stratified_split(labels, sizes, seed))


def nested(indices: Sequence[int], labels: Sequence[int], n: int | None, seed: int) -> list[int]:
    """A fixed stratified subset of `indices` (n items; all when n is None or ≥ len), `labels` indexed like
    the split `indices` point into."""
    if n is None or n >= len(indices):
        return list(indices)
    (picked,) = stratified_split([labels[i] for i in indices], {"subset": n}, seed).values()
    return [indices[i] for i in picked]
