"""Out-of-domain probe sentences for the generation model's sequence-level uncertainty (offline, deterministic).

The model is fine-tuned on Jane Austen. A probe set mixes in-domain inputs (label 0: held-out Austen
sentences) with inputs that are not Austen (label 1), of three kinds:
- "bible": World English Bible verses (archaic English, another register);
- "news": short modern news-style sentences written for this project (`NEWS_SENTENCES`: markets,
  software, sport, weather) — right language, wrong century;
- "shuffled": other held-out Austen sentences with their words permuted (same vocabulary, no syntax).
`build_prose_probe_set(austen_sentences, bible_verses, per_kind, seed)` returns a `ProseProbeSet` whose
texts, labels and kinds are aligned; the same arguments give the same set in any process.

OOD detector sets (training/core/ood_fit.py): `ood_sets(split, data, cache_dir, seed)` (what the job fits at its
end) and `artifact_ood_sets(predictor, cache_dir)` (the same for `python -m training.ood`, re-cutting the held-out
spans from the manifest's training config). In domain: sentences (8-40 words) of the corpus, every second one cut
to its first 4-10 words (`as_prompts`: clients send unfinished sentences too; the probes are cut alike, so length
tells nothing): bank from the training segments, choice and threshold from disjoint halves of the validation sentences,
test from the test segments. Probes: every kind of training/core/ood_probes.py except the corpus' own (Austen,
and the synthetic Austen-like corpus: Bible, Shakespeare, news); choice and test probes are disjoint. Features are
pooled with `OOD_POOLING` (a causal LM's first position is an attention sink with outsized activations).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.core.config import recorded_config
from training.core.ood_probes import POOLS, draw_probes
from training.core.ood_sets import OODSets, OODSizes, Probes
from training.core.ood_teacher import Teacher, minilm_teacher
from training.core.probes import sentences, shuffle_words
from training.generation.config import GenerationConfig
from training.generation.split import SPLITS, ProseSplit, split_documents

PROBE_KINDS = ("bible", "news", "shuffled")

NEWS_SENTENCES: tuple[str, ...] = (
    "Shares in the chipmaker rose eight percent after it raised its full-year revenue forecast.",
    "The central bank left interest rates unchanged but signalled two cuts before the end of the year.",
    "Oil prices fell sharply on Monday as traders worried about weak demand from factories in Asia.",
    "The index closed at a record high, led by gains in technology and healthcare stocks.",
    "Bitcoin dropped below sixty thousand dollars for the first time in three months.",
    "Analysts expect the retailer to report lower profits because of rising shipping costs.",
    "The startup raised forty million dollars in a funding round led by a venture capital firm.",
    "Mortgage rates climbed again this week, cooling demand from first-time home buyers.",
    "The airline cut its profit outlook, blaming higher fuel prices and a shortage of pilots.",
    "Inflation slowed to 2.4 percent in March, according to figures released this morning.",
    "The company released a security patch after researchers found a flaw in its login service.",
    "Version 3.2 of the app adds dark mode, offline maps and faster photo uploads.",
    "Developers complained that the new update broke several popular browser extensions.",
    "The cloud provider restored service after a four-hour outage that took down thousands of websites.",
    "The operating system will stop receiving security updates for older laptops next October.",
    "Engineers migrated the database to a new cluster without any downtime for users.",
    "The open-source project merged more than two hundred pull requests in its latest release.",
    "Hackers used a phishing email to steal passwords from employees at the logistics firm.",
    "The chatbot can now summarise long documents and answer questions about spreadsheets.",
    "A bug in the payment system charged some customers twice for the same order.",
    "The striker scored twice in the second half to give the visitors a 3-1 win.",
    "The tennis champion withdrew from the tournament with a wrist injury on Thursday.",
    "The home team clinched the title with two games left after a dramatic overtime victory.",
    "The marathon was won in two hours and four minutes, a new course record.",
    "The coach was sacked after the club lost seven of its last nine league matches.",
    "The quarterback threw for 320 yards and three touchdowns in the playoff game.",
    "Tickets for the World Cup final sold out within an hour of going on sale online.",
    "The cyclist took the yellow jersey after a long breakaway on the mountain stage.",
    "The cricket match was abandoned without a ball bowled because of a waterlogged pitch.",
    "The swimmer broke her own world record in the 200 metres freestyle final.",
    "Forecasters expect heavy rain and strong winds across the north of the country tonight.",
    "A heatwave pushed temperatures above 40 degrees Celsius in several southern cities.",
    "Flights were cancelled at the airport as snow and ice closed both runways.",
    "The storm is expected to make landfall on Friday as a category three hurricane.",
    "Drivers were warned about thick fog on the motorway during the morning commute.",
    "Residents were told to stay indoors as wildfire smoke drove air quality to hazardous levels.",
    "The weekend will start sunny, with showers moving in from the west by Sunday afternoon.",
    "Flood warnings remain in place along the river after the wettest February on record.",
    "A tornado damaged dozens of homes and knocked out power to thousands of customers.",
    "The drought has forced farmers to cut water use by a third this summer.",
)



@dataclass(frozen=True)
class ProseProbeSet:
    """Aligned lists: `texts[i]` is an input, `labels[i]` 1 when out of domain, `kinds[i]` "in_domain" or a kind."""

    texts: list[str]
    labels: list[int]
    kinds: list[str]

    def counts(self) -> dict[str, int]:
        return {kind: self.kinds.count(kind) for kind in ("in_domain", *PROBE_KINDS)}


def build_prose_probe_set(
    austen_sentences: Sequence[str], bible_verses: Sequence[str], per_kind: int, seed: int,
    news: Sequence[str] = NEWS_SENTENCES,
) -> ProseProbeSet:
    """`per_kind` in-domain Austen sentences (label 0), then `per_kind` probes of each kind (label 1).

    In-domain and shuffled sentences are drawn without overlap from `austen_sentences` (pass held-out ones);
    counts are capped by the pools. Verses with fewer than five words are skipped (too short to judge)."""
    rng = random.Random(seed)
    pool = list(dict.fromkeys(s for s in austen_sentences if len(s.split()) >= 3))  # dedupe, keep order
    drawn = rng.sample(pool, min(2 * per_kind, len(pool)))
    in_domain, to_shuffle = drawn[: len(drawn) // 2], drawn[len(drawn) // 2:]
    verses = [v for v in bible_verses if len(v.split()) >= 5]
    probes = {
        "bible": rng.sample(verses, min(per_kind, len(verses))),
        "news": rng.sample(list(news), min(per_kind, len(news))),
        "shuffled": [shuffle_words(s, rng) for s in to_shuffle],
    }
    texts, kinds = list(in_domain), ["in_domain"] * len(in_domain)
    for kind in PROBE_KINDS:
        texts.extend(probes[kind])
        kinds.extend([kind] * len(probes[kind]))
    return ProseProbeSet(texts=texts, labels=[int(k != "in_domain") for k in kinds], kinds=kinds)


# --- OOD detector sets (training/core/ood_fit.py) ------------------------------------------------------------

OOD_POOLING = "mean_skip_first"
CORPUS_KIND = {"austen": "austen", "synthetic": "austen", "shakespeare": "shakespeare", "bible": "bible"}
# Austen's 5 % validation spans hold about 860 sentences and its test spans about 1,000: take nearly all of them, since
# half the inputs are 4-10-word fragments whose scores spread wide, and a 5 % line drawn on 300 texts rests on 15.
PROSE_SIZES = OODSizes(choice=350, threshold=650, test=1000)


def ood_sets(split: ProseSplit, data: str, cache_dir: Path, seed: int, sizes: OODSizes | None = None,
             teacher: Teacher | None = None) -> OODSets:
    """The sets of the module docstring from the job's held-out split of corpus `data` (a CORPUS_KIND key);
    `teacher`: a sentence embedder whose space the prompt features are also mapped onto (fitted on the bank)."""
    n = sizes or PROSE_SIZES
    rng = random.Random(seed)
    held = {name: list(dict.fromkeys(x for segment in split.segments[name] for x in sentences(segment)))
            for name in SPLITS}
    bank = rng.sample(held["train"], min(n.bank, len(held["train"])))
    validation = rng.sample(held["validation"], min(n.choice + n.threshold, len(held["validation"])))
    half = min(n.choice, len(validation) // 2)
    test = rng.sample(held["test"], min(n.test, len(held["test"])))
    kinds = tuple(kind for kind in POOLS if kind != CORPUS_KIND.get(data))  # a user's file: every kind
    choice_probes, test_probes = draw_probes(cache_dir, kinds, n.choice_probes, n.test_probes, seed)
    cut = random.Random(seed + 1)  # a stream of its own: the sentences drawn above stay the same
    whole_test = test
    bank, validation, test = (as_prompts(texts, cut) for texts in (bank, validation, test))
    choice_probes = Probes(as_prompts(choice_probes.texts, cut), choice_probes.kinds)
    test_probes = Probes(as_prompts(test_probes.texts, cut), test_probes.kinds)
    record = {"bank": {"split": "train", "sentences": len(bank)},
              "choice": {"split": "validation", "sentences": half},
              "threshold": {"split": "validation", "sentences": len(validation) - half},
              "test": {"split": "test", "sentences": len(test)},
              "probes": {"kinds": list(kinds), "choice_per_kind": n.choice_probes, "test_per_kind": n.test_probes,
                         "seed": seed},
              "sentence": "8-40 words, from the corpus' own held-out spans; every second one (in domain and probes "
                          f"alike) cut to its first {PROMPT_WORDS[0]}-{PROMPT_WORDS[1]} words", "pooling": OOD_POOLING}
    record["corpus"] = {"split": "train", "sentences": len(held["train"]), "for": "token densities"}
    return OODSets(bank=bank, choice=validation[:half], threshold=validation[half:], choice_probes=choice_probes,
                   test=test, test_probes=test_probes, record=record, corpus=held["train"], teacher=teacher,
                   test_groups=["sentence" if a == b else "prompt" for a, b in zip(test, whole_test, strict=True)])


PROMPT_WORDS = (4, 10)  # the words a cut prompt keeps: "It is a truth universally acknowledged that" is 7


def as_prompts(texts: Sequence[str], rng: random.Random) -> list[str]:
    """`texts` with every second one (0, 2, ...) cut to its first k words, k drawn in PROMPT_WORDS: what a client
    sends to a generator is as often an unfinished sentence as a whole one, and a detector chosen on whole
    sentences alone flags the fragments of its own corpus."""
    out = []
    for i, text in enumerate(texts):
        words = text.split()
        k = rng.randint(*PROMPT_WORDS)
        out.append(" ".join(words[:k]) if i % 2 == 0 and len(words) > k else text)
    return out


def artifact_ood_sets(predictor: Any, cache_dir: Path, sizes: OODSizes | None = None) -> OODSets:
    """`ood_sets` of a trained artifact's own data: its manifest's training config re-loads the corpus and re-cuts
    the same held-out spans (training.generation.split.split_documents). Raises ValueError for `--data file`."""
    from training.generation.job import DATASETS  # the job's corpus map (the job imports this module)

    config = recorded_config(GenerationConfig, predictor.manifest.training_config)
    if config.data not in CORPUS_KIND:
        raise ValueError(f"OOD sets need a built-in corpus, the artifact was trained on {config.data!r}")
    corpus = DATASETS[config.data](config, Path(cache_dir))
    split = split_documents(corpus.documents, config.validation_fraction, config.test_fraction, config.split_seed)
    return ood_sets(split, config.data, Path(cache_dir), config.seed, sizes, prompt_teacher(config, Path(cache_dir)))


def prompt_teacher(config: GenerationConfig, cache_dir: Path) -> Teacher | None:
    """The MiniLM sentence embedder for SmolLM2's prompts (training/core/ood_teacher.py); none for the tiny model
    (its synthetic prose has no genre to learn)."""
    return minilm_teacher(cache_dir) if config.model == "smollm2" else None
