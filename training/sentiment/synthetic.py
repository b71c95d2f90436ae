"""A small synthetic sentiment dataset for the `tiny` preset and tests (offline, milliseconds).

Sentences are built from templates with positive/negative words, negations ("not good" is negative),
intensifiers and contrast clauses ("X but Y": the clause after "but" decides), and a fraction `noise` of
labels is flipped, so the task is learnable but not linearly separable in bag-of-words space (negation,
contrast) and has irreducible (aleatoric) error. Labels are balanced. Same (n, seed, noise) → same data.
"""

from __future__ import annotations

import hashlib
import random

from training.core.splits import ClassificationData, TextSplit, stratified_split

LABEL_NAMES = ("negative", "positive")
POSITIVE = ["good", "great", "wonderful", "brilliant", "moving", "delightful", "superb", "charming", "clever"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dull", "clumsy", "tedious", "weak", "predictable"]
NOUNS = ["film", "plot", "acting", "script", "ending", "cast", "soundtrack", "pacing", "story", "dialogue"]
INTENSIFIERS = ["", "", "very ", "really ", "quite ", "truly ", "rather "]
FILLER = ["", "", "honestly, ", "to be fair, ", "all in all, ", "in the end, "]


def _clause(rng: random.Random, positive: bool) -> str:
    negate = rng.random() < 0.2
    # A negated adjective flips polarity: "not good" is negative.
    words = NEGATIVE if positive == negate else POSITIVE
    return f"the {rng.choice(NOUNS)} was {'not ' if negate else ''}{rng.choice(INTENSIFIERS)}{rng.choice(words)}"


def make_examples(n: int, seed: int, noise: float = 0.1) -> TextSplit:
    """`n` balanced examples; a fraction `noise` of labels flipped.

    60 % one clause, 20 % two agreeing clauses ("… and …"), 20 % a contrast ("… but …") decided by the
    second clause; 20 % of clauses are negated.
    """
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        kind = rng.random()
        if kind < 0.2:
            text = f"{_clause(rng, not label)} but {_clause(rng, bool(label))}"
        elif kind < 0.4:
            text = f"{_clause(rng, bool(label))} and {_clause(rng, bool(label))}"
        else:
            text = _clause(rng, bool(label))
        texts.append((rng.choice(FILLER) + text).capitalize() + ".")
        labels.append(1 - label if rng.random() < noise else label)
    order = list(range(n))
    rng.shuffle(order)
    return TextSplit([texts[i] for i in order], [labels[i] for i in order])


def load_synthetic(
    seed: int, train_size: int = 400, validation_size: int = 150, test_size: int = 150, noise: float = 0.1
) -> ClassificationData:
    """Train/validation/test splits of `make_examples` with a data-source record like the real data's."""
    everything = make_examples(train_size + validation_size + test_size, seed, noise)
    sizes = {"test": test_size, "validation": validation_size, "train": train_size}
    index = stratified_split(everything.labels, sizes, seed)
    splits = {
        name: TextSplit([everything.texts[i] for i in index[name]], [everything.labels[i] for i in index[name]])
        for name in ("train", "validation", "test")
    }
    rows = (f"{y}\t{t}" for t, y in zip(everything.texts, everything.labels, strict=True))
    digest = hashlib.sha256("\n".join(rows).encode())
    source = {
        "name": "synthetic-sentiment",
        "version": "1",
        "member": None,
        "sha256": digest.hexdigest(),
        "noise": noise,
        "split_seed": seed,
        "splits": {name: len(split) for name, split in splits.items()},
    }
    return ClassificationData(splits=splits, label_names=LABEL_NAMES, source=source)
