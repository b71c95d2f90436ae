"""A small seeded corpus of Austen-like prose for the `tiny` generation preset (seconds, offline, no data).

Sentences come from a fixed grammar (subject, verb phrase, place or time, optional clause), so a tiny
model learns something real in a few hundred steps and held-out text is predictable but not copied.
"""

from __future__ import annotations

import random

_SUBJECTS = ["Elizabeth", "Mr. Darcy", "Her mother", "The eldest sister", "Mr. Bennet", "Lady Catherine",
             "The young officer", "Jane", "Their aunt", "Mr. Bingley"]
_VERBS = ["walked slowly", "spoke warmly", "wrote a letter", "laughed at the idea", "said nothing",
          "read the note twice", "danced with him", "returned home", "waited in silence", "smiled"]
_PLACES = ["in the garden", "at the ball", "after dinner", "by the window", "in the drawing room",
           "before breakfast", "on the road to town", "at Netherfield"]
_CLAUSES = ["and the evening passed quietly", "though she could not say why", "for the weather was fine",
            "while the others talked of marriage", "as was her custom"]


def _sentence(rng: random.Random) -> str:
    parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_PLACES)]
    if rng.random() < 0.5:
        parts[-1] += ","
        parts.append(rng.choice(_CLAUSES))
    return " ".join(parts) + "."


def synthetic_documents(documents: int = 4, paragraphs: int = 40, seed: int = 0) -> dict[str, str]:
    """`documents` texts (title → text) of `paragraphs` paragraphs of 2–5 sentences, blank-line separated."""
    rng = random.Random(seed)
    return {f"Volume {d + 1}": "\n\n".join(" ".join(_sentence(rng) for _ in range(rng.randint(2, 5)))
                                          for _ in range(paragraphs))
            for d in range(documents)}
