"""Sentence extraction and the generation out-of-domain probe set (synthetic text, no archives)."""

import random

import pytest

from training.generation.probes import (
    NEWS_SENTENCES,
    PROBE_KINDS,
    PROMPT_WORDS,
    as_prompts,
    build_prose_probe_set,
    sentences,
)

AUSTEN_LIKE = [f"Miss Bates number {i} talked of the ball and the weather at great length." for i in range(60)]
VERSES = [f"And the Lord spoke to Moses on day {i}, saying, go." for i in range(30)] + ["Jesus wept."]


def test_sentences_cut_at_ends_but_not_after_titles_or_initials() -> None:
    text = ('Mr. Knightley came in at last. "Emma, my dear!" said Mrs. Weston kindly. It was J. Smith who '
            "saw the house. Too short.\n\nA new paragraph starts here with words, does it not? Yes, it does so.\n\n"
            "CHAPTER IV")
    assert sentences(text, min_words=4) == [
        "Mr. Knightley came in at last.", '"Emma, my dear!" said Mrs. Weston kindly.',
        "It was J. Smith who saw the house.", "A new paragraph starts here with words, does it not?",
        "Yes, it does so."]
    assert sentences(text, min_words=8) == ["It was J. Smith who saw the house.",
                                            "A new paragraph starts here with words, does it not?"]
    assert sentences("one two three four five six", min_words=2) == []  # no end punctuation: not a sentence


def test_news_sentences_are_distinct_modern_english() -> None:
    assert len(NEWS_SENTENCES) >= 40 and len(set(NEWS_SENTENCES)) == len(NEWS_SENTENCES)
    assert all(8 <= len(s.split()) <= 25 and s.endswith(".") for s in NEWS_SENTENCES)


def test_probe_set_is_aligned_labelled_and_disjoint() -> None:
    probes = build_prose_probe_set(AUSTEN_LIKE, VERSES, per_kind=20, seed=5)
    assert probes.counts() == {"in_domain": 20, "bible": 20, "news": 20, "shuffled": 20}
    assert len(probes.texts) == len(probes.labels) == len(probes.kinds) == 80
    assert all(label == int(kind != "in_domain") for label, kind in zip(probes.labels, probes.kinds, strict=True))
    by_kind = {k: [t for t, kk in zip(probes.texts, probes.kinds, strict=True) if kk == k]
               for k in ("in_domain", *PROBE_KINDS)}
    assert set(by_kind["in_domain"]) <= set(AUSTEN_LIKE) and set(by_kind["bible"]) <= set(VERSES)
    assert set(by_kind["news"]) <= set(NEWS_SENTENCES) and "Jesus wept." not in by_kind["bible"]
    originals = {tuple(sorted(s.split())): s for s in AUSTEN_LIKE}
    for shuffled in by_kind["shuffled"]:
        source = originals[tuple(sorted(shuffled.split()))]  # a permutation of a pool sentence…
        assert shuffled != source and source not in by_kind["in_domain"]  # …not left in order, not in-domain


def test_probe_set_is_deterministic_and_capped_by_pools() -> None:
    first = build_prose_probe_set(AUSTEN_LIKE, VERSES, 10, seed=1)
    assert first == build_prose_probe_set(AUSTEN_LIKE, VERSES, 10, seed=1)
    assert first != build_prose_probe_set(AUSTEN_LIKE, VERSES, 10, seed=2)
    small = build_prose_probe_set(AUSTEN_LIKE[:6], VERSES[:4], per_kind=50, seed=0)
    assert small.counts() == {"in_domain": 3, "bible": 4, "news": len(NEWS_SENTENCES), "shuffled": 3}


@pytest.mark.parametrize("per_kind", [0, 1])
def test_tiny_probe_sets(per_kind: int) -> None:
    probes = build_prose_probe_set(AUSTEN_LIKE, VERSES, per_kind, seed=0)
    assert set(probes.counts().values()) == {per_kind}


def test_every_second_text_becomes_an_unfinished_prompt_and_the_rest_stay_whole() -> None:
    texts = [f"word{i} " * 20 for i in range(40)] + ["too short to cut"]
    cut = as_prompts(texts, random.Random(0))
    assert cut == as_prompts(texts, random.Random(0))  # seeded
    for i, (before, after) in enumerate(zip(texts, cut, strict=True)):
        if i % 2 or len(before.split()) <= PROMPT_WORDS[0]:
            assert after == before
        else:
            assert PROMPT_WORDS[0] <= len(after.split()) <= PROMPT_WORDS[1] and before.startswith(after)
    assert len({len(after.split()) for after in cut[:40:2]}) > 1  # the prompt lengths vary
