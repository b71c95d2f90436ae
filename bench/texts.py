"""Review-like texts of a chosen word range (default 20–60 words: the size of a typical API call).

Sentences are assembled from small phrase lists with a seeded RNG, so a run is reproducible and the
texts vary in length, vocabulary and sentiment (positive, negative and mixed).
"""

from __future__ import annotations

import random

_SUBJECTS = ["The film", "This movie", "The story", "The lead actor", "The soundtrack", "The director",
             "The second half", "The script", "The cast", "The ending", "The cinematography", "The pacing"]
_POSITIVE = ["is a quiet, moving triumph", "kept me gripped from the first scene", "was funnier than I expected",
             "feels honest and beautifully made", "deserves every award it gets", "left the whole room in tears",
             "is the best thing I have seen this year", "carries real warmth and wit"]
_NEGATIVE = ["drags on far too long", "never finds its footing", "is dull, predictable and loud",
             "wastes a talented cast", "felt like two hours I will not get back", "falls apart in the last act",
             "is a tired copy of better films", "made me check my watch constantly"]
_LINKS = ["and", "but", "although", "while", "even though", "because"]
_EXTRAS = ["I watched it with friends on a rainy Sunday afternoon", "the trailer promised something different",
           "my expectations were quite low going in", "the theatre was almost empty",
           "several scenes could have been cut entirely", "the costumes and sets look wonderful",
           "the dialogue sometimes sounds forced", "I would happily watch it again next week",
           "critics seem divided on it", "the music does a lot of the heavy lifting"]


def _sentence(rng: random.Random) -> str:
    first = rng.choice(_POSITIVE if rng.random() < 0.5 else _NEGATIVE)
    second = rng.choice(_POSITIVE + _NEGATIVE)
    parts = [rng.choice(_SUBJECTS), first, rng.choice(_LINKS), rng.choice(_SUBJECTS).lower(), second]
    if rng.random() < 0.6:
        parts += [",", rng.choice(["and", "though", "since"]), rng.choice(_EXTRAS)]
    return " ".join(parts).replace(" ,", ",") + "."


def review(rng: random.Random, min_words: int = 20, max_words: int = 60) -> str:
    """One review of a uniformly drawn length in `min_words`..`max_words` words (whole sentences, then
    the start of one more to reach the length)."""
    target = rng.randint(min_words, max_words)
    words: list[str] = []
    for _ in range(100):
        sentence = _sentence(rng).split()
        if len(words) + len(sentence) <= target:
            words.extend(sentence)
        elif len(words) >= min_words:
            break
    if len(words) < target:  # top up with the start of one more sentence, so lengths spread evenly
        words.extend(_sentence(rng).split()[: target - len(words)])
    text = " ".join(words)
    return text if text.endswith(".") else text.rstrip(",") + "."


def reviews(count: int, seed: int = 0, min_words: int = 20, max_words: int = 60) -> list[str]:
    rng = random.Random(seed)
    return [review(rng, min_words, max_words) for _ in range(count)]


_PEOPLE = ["The Lord", "The king", "His servants", "The people of Israel", "The prophet", "My son", "The angel",
           "The elders of the city", "Her mother", "The disciples", "The priest", "Every man"]
_ACTS = ["spoke to them", "went up to the mountain", "gave thanks", "blessed the bread", "built an altar",
         "sent messengers", "heard the voice", "kept his commandments", "came into the house", "wept bitterly"]
_SETTINGS = ["in the morning", "in the wilderness", "by the river", "before all the people", "in those days",
             "on the third day", "at the gate of the city", "in the land of Egypt", "", ""]
_CLAUSES = ["and they were afraid", "for his mercy endures forever", "so that the word might be fulfilled",
            "and the people rejoiced", "because the hour had come", "and no one answered him", ""]


def verse(rng: random.Random) -> str:
    """One Bible-style English sentence (the translation model's domain)."""
    parts = [rng.choice(_PEOPLE), rng.choice(_ACTS), rng.choice(_SETTINGS)]
    clause = rng.choice(_CLAUSES)
    text = " ".join(p for p in parts if p)
    return f"{text}, {clause}." if clause else f"{text}."


def verses(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [verse(rng) for _ in range(count)]
