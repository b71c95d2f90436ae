"""Helpers shared by the jobs' out-of-domain probe sets (each task builds its own set from its own data)."""

from __future__ import annotations

import random


def shuffle_words(text: str, rng: random.Random) -> str:
    """`text` with its whitespace-separated words permuted (a different order whenever two words differ)."""
    words = text.split()
    if len(set(words)) < 2:
        return text
    shuffled = words[:]
    while shuffled == words:
        rng.shuffle(shuffled)
    return " ".join(shuffled)
