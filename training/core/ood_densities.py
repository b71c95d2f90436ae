"""The token densities an OOD fit tries (training/core/ood_fit.py): "token_bigram" (models/core/token_density.py)
and "token_trigram" (models/core/token_trigram.py), fitted on the served token ids of the training inputs."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from models.core.token_density import TokenBigram
from models.core.token_trigram import TokenTrigram
from training.core.predicting import prepare_all
from training.core.progress import ProgressLog

if TYPE_CHECKING:
    from training.core.ood_sets import OODSets, OODSettings

log = logging.getLogger(__name__)

Density = TokenBigram | TokenTrigram


def fit_densities(predictor: Any, sets: OODSets, s: OODSettings) -> dict[str, Density]:
    """The token densities the settings ask for ("token_bigram", "token_trigram"; a hybrid alone asks for both), by
    method name, over the served ids of `sets.corpus` (else the bank)."""
    wanted = [m for m in ("token_bigram", "token_trigram") if m in s.methods or "hybrid" in s.methods]
    if not wanted:
        return {}
    started = time.perf_counter()
    texts = sets.corpus or sets.bank
    ids: list[tuple[int, ...]] = []
    with ProgressLog("ood/corpus", len(texts), unit="texts") as progress:  # 40k reviews take about a minute
        for start in range(0, len(texts), 2000):
            chunk = texts[start: start + 2000]
            ids.extend(item.input_ids for item in prepare_all(predictor, chunk, sets.parameters)[0])
            progress.update(len(chunk))
    vocab = len(predictor.tokenizer)
    fitted: dict[str, Density] = {}
    for method in wanted:
        fitted[method] = TokenBigram.fit(ids, vocab, *s.bigram) if method == "token_bigram" else \
            TokenTrigram.fit(ids, vocab, *s.trigram, min_count=s.trigram_min_count)
    log.info("ood/densities: %s over %d texts (%d tokens) in %.1f s", ", ".join(fitted), len(ids),
             sum(map(len, ids)), time.perf_counter() - started)
    return fitted
