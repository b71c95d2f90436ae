"""Helpers shared by the jobs' out-of-domain probe sets (each task builds its own set from its own data):
`shuffle_words`, `sentences` (a rough sentence splitter for prose) and `modern_sentences` (template sentences in
modern news/technology English, a domain none of the training corpora has)."""

from __future__ import annotations

import random
import re

_CUT = re.compile(r"[.!?][\"']?(?=\s+[\"'A-Z])")  # end of a candidate sentence
_ABBREVIATION = re.compile(r"(?:\b(?:Mr|Mrs|Dr|St|Col|Capt|Messrs|Esq)|\b[A-Z])\.$")  # not a sentence end


def shuffle_words(text: str, rng: random.Random) -> str:
    """`text` with its whitespace-separated words permuted (a different order whenever two words differ)."""
    words = text.split()
    if len(set(words)) < 2:
        return text
    shuffled = words[:]
    while shuffled == words:
        rng.shuffle(shuffled)
    return " ".join(shuffled)


def sentences(text: str, min_words: int = 8, max_words: int = 40) -> list[str]:
    """Sentences of `text` with `min_words`..`max_words` words, paragraph by paragraph, in order.

    A rough splitter: it cuts after . ! ? (optionally followed by a quote) before a capital or a quote, but
    not after a capitalised abbreviation like "Mr." or "Mrs." (the commonest false cut in the novels)."""
    out = []
    for paragraph in text.split("\n\n"):
        paragraph, start = " ".join(paragraph.split()), 0
        ends = [m.end() for m in _CUT.finditer(paragraph) if not _ABBREVIATION.search(paragraph, 0, m.end())]
        for end in [*ends, len(paragraph)]:
            sentence, start = paragraph[start:end].strip(), end
            if sentence and min_words <= len(sentence.split()) <= max_words and sentence[-1] in ".!?\"'":
                out.append(sentence)
    return out


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
