"""The sentiment model's OOD sets (training/core/ood_fit.py): movie reviews in domain, other English out of it.

In domain come in two forms, because clients send both: whole reviews and "snippets", the first sentence
(6-40 words) of a review, the short inputs a distance to whole reviews would otherwise call foreign.
- bank (the statistics): `bank_reviews` training reviews the model was fine-tuned on, plus snippets of the next
  `bank_snippets` of them (training data only);
- choice and threshold: texts of the validation `calibration` part (their texts only: no label is read; τ and the
  confidence map, which that part also fits, do not depend on which inputs are flagged), disjoint halves;
- test: the test `headline` set, reviews and snippets (reported apart as in-domain groups).
Probes: Bible verses, Shakespeare lines, Austen sentences and modern news templates (training/core/ood_probes.py),
none of them movie reviews; choice and test probes are disjoint.
Teacher (training/core/ood_teacher.py): the encoder the model was fine-tuned from (`--base-model`, else the pinned
all-MiniLM-L6-v2), whose sentence embeddings still place texts by genre; the random `tiny` encoder has none. Its
map is fitted on the bank and the first two sentences of the training reviews after the whole ones (refitting the
quick artifact with 1,600 → 11,600 rows lifted the chosen hybrid's validation AUROC from 0.986 to 0.990).
The token densities count every review of the training split, not only those the model was fine-tuned on: they are
training data all the same, and a trigram needs the text (on validation, 6,000 → 39,578 reviews lifted the
trigram's AUROC from 0.91 to 0.94).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.core.config import recorded_config
from training.core.fetch import IMDB, ensure_archive
from training.core.ood_probes import draw_probes
from training.core.ood_sets import OODSets
from training.core.ood_teacher import Teacher, minilm_teacher, sentence_embedder
from training.core.probes import sentences
from training.core.splits import ClassificationData
from training.sentiment.config import SentimentConfig
from training.sentiment.data import Subsets, load_imdb, plan_subsets

PROBE_KINDS = ("bible", "shakespeare", "austen", "news")


@dataclass(frozen=True)
class OODSizes:
    """How many texts each set takes (module docstring); probes are per kind."""

    bank_reviews: int = 600
    bank_snippets: int = 1000
    choice: int = 200  # reviews, and as many snippets
    threshold: int = 400  # reviews, and as many snippets
    test_reviews: int = 600
    test_snippets: int = 400
    choice_probes: int = 150
    test_probes: int = 300
    teacher_texts: int = 10000  # sentences of the training reviews after the bank's, for the teacher map


def snippet(review: str) -> str | None:
    """The first sentence of 6-40 words of `review`, or None."""
    found = sentences(review, min_words=6, max_words=40)
    return found[0] if found else None


def _sentences(texts: list[str], n: int) -> list[str]:
    """The first two sentences of 6-40 words of each of `texts`, in order, up to `n`."""
    return [s for text in texts for s in sentences(text, min_words=6, max_words=40)[:2]][:n]


def _reviews_and_snippets(texts: list[str], n_reviews: int, n_snippets: int) -> tuple[list[str], list[str]]:
    """The first `n_reviews` texts whole, then snippets of the texts after them (up to `n_snippets`)."""
    snippets = [s for s in map(snippet, texts[n_reviews:]) if s is not None][:n_snippets]
    return texts[:n_reviews], snippets


def ood_sets(train_texts: list[str], calibration_texts: list[str], test_texts: list[str], cache_dir: Path,
             sizes: OODSizes, seed: int, corpus: list[str] | None = None, teacher: Teacher | None = None) -> OODSets:
    """The sets of module docstring; `train_texts` are the reviews the model was trained on, in training order;
    `corpus` the training split's reviews the token densities count (None: `train_texts`); `teacher`: the base
    model's embedder (its texts are set here)."""
    corpus = list(train_texts) if corpus is None else corpus
    if teacher is not None:  # its map is fitted on the bank and these training sentences
        teacher = Teacher(teacher.embed, _sentences(train_texts[sizes.bank_reviews:], sizes.teacher_texts))
    bank_reviews, bank_snippets = _reviews_and_snippets(train_texts, sizes.bank_reviews, sizes.bank_snippets)
    half = len(calibration_texts) // 2
    choice_reviews, choice_snippets = _reviews_and_snippets(calibration_texts[:half], sizes.choice, sizes.choice)
    threshold_reviews, threshold_snippets = _reviews_and_snippets(calibration_texts[half:], sizes.threshold,
                                                                  sizes.threshold)
    test_reviews, test_snippets = _reviews_and_snippets(test_texts, sizes.test_reviews, sizes.test_snippets)
    choice_probes, test_probes = draw_probes(cache_dir, PROBE_KINDS, sizes.choice_probes, sizes.test_probes, seed)
    record = {
        "bank": {"split": "train", "reviews": len(bank_reviews), "snippets": len(bank_snippets),
                 "of": "the reviews the model was fine-tuned on"},
        "choice": {"split": "validation", "part": "calibration", "half": 1, "reviews": len(choice_reviews),
                   "snippets": len(choice_snippets), "labels_read": False},
        "threshold": {"split": "validation", "part": "calibration", "half": 2, "reviews": len(threshold_reviews),
                      "snippets": len(threshold_snippets), "labels_read": False},
        "test": {"split": "test", "part": "headline", "reviews": len(test_reviews), "snippets": len(test_snippets)},
        "probes": {"kinds": list(PROBE_KINDS), "choice_per_kind": sizes.choice_probes,
                   "test_per_kind": sizes.test_probes, "seed": seed},
        "snippet": "first sentence of 6-40 words of a review",
        "corpus": {"split": "train", "reviews": len(corpus), "for": "token densities"},
        **({"teacher": {"split": "train", "sentences": len(teacher.texts), "of": "the first two of each review "
                        "after the bank's whole ones", "for": "the teacher map, with the bank"}} if teacher else {}),
    }
    return OODSets(bank=bank_reviews + bank_snippets, choice=choice_reviews + choice_snippets,
                   threshold=threshold_reviews + threshold_snippets, choice_probes=choice_probes,
                   test=test_reviews + test_snippets, test_probes=test_probes, record=record,
                   test_groups=["review"] * len(test_reviews) + ["snippet"] * len(test_snippets),
                   corpus=corpus, teacher=teacher)


def job_ood_sets(config: SentimentConfig, data: ClassificationData, subsets: Subsets, cache_dir: Path,
                 sizes: OODSizes | None = None) -> OODSets:
    """`ood_sets` of a job's data and validation parts: the reviews it fine-tunes on, the `calibration` part, the
    test `headline` set (what the job fits at its end, and `artifact_ood_sets` re-cuts)."""
    train = data.splits["train"].take(config.train_limit, config.split_seed)
    return ood_sets(train.texts, subsets.part(data, "calibration").texts, subsets.part(data, "headline").texts,
                    Path(cache_dir), sizes or OODSizes(), config.seed, corpus=list(data.splits["train"].texts),
                    teacher=base_teacher(config, Path(cache_dir)))


def base_teacher(config: SentimentConfig, cache_dir: Path) -> Teacher | None:
    """The sentence embedder of the encoder the model was fine-tuned from (module docstring), None for `tiny`."""
    if config.base_model:
        return Teacher(sentence_embedder(config.base_model))
    return minilm_teacher(cache_dir) if config.model == "minilm" else None


def artifact_ood_sets(predictor: Any, cache_dir: Path, sizes: OODSizes | None = None) -> OODSets:
    """The OOD sets of a trained artifact's own data: its manifest's training config re-cuts the same IMDB splits
    and validation parts (training.sentiment.data) and names the reviews it was fine-tuned on."""
    config = recorded_config(SentimentConfig, predictor.manifest.training_config)
    if config.data != "imdb":
        raise ValueError(f"OOD sets need IMDB data, the artifact was trained on {config.data!r}")
    data = load_imdb(ensure_archive(IMDB, cache_dir), config.split_seed, config.validation_size, config.test_size)
    subsets = plan_subsets(data, config.subset_sizes(), config.split_seed + 1)
    return job_ood_sets(config, data, subsets, cache_dir, sizes)
