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

from training.core.probes import shuffle_words

KINDS = ("shuffled", "german", "modern")

_SUBJECTS = ("The company", "Our team", "The new smartphone", "The central bank", "A software update", "The airline",
             "Researchers at the university", "The city council", "The streaming service", "Investors",
             "The football club", "The startup", "The government", "Scientists", "The online retailer")
_VERBS = ("announced", "reported", "launched", "delayed", "cancelled", "reviewed", "upgraded", "downloaded",
          "streamed", "tested", "released", "posted")
_OBJECTS = ("quarterly earnings of 3.2 billion dollars", "a new battery with faster charging",
            "the interest rate decision", "an app for booking electric scooters", "the data privacy policy",
            "a vaccine trial with 4,000 volunteers",
            "the latest quarterly forecast", "a cloud storage subscription", "the World Cup qualifier",
            "an update for the laptop firmware", "the carbon emissions report", "a podcast about cryptocurrency")
_TAILS = ("on Tuesday", "after the press conference", "last week", "despite the traffic jam", "via social media",
          "at the tech summit in Berlin", "during the live stream", "before the stock market opened", "",
          "this morning")


def modern_sentences(n: int, seed: int) -> list[str]:
    """`n` distinct template sentences in modern news/technology English ("The airline launched an app
    for booking electric scooters via social media."). ValueError if more are asked than templates allow."""
    combos = len(_SUBJECTS) * len(_VERBS) * len(_OBJECTS) * len(_TAILS)
    if n > combos:
        raise ValueError(f"at most {combos} modern sentences, asked for {n}")
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        parts = (rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_TAILS))
        sentence = " ".join(p for p in parts if p) + "."
        if sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out


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
