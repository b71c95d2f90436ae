"""Projected OOD candidates (models/core/ood_projection.py): the served model's pooled features mapped onto the
embedding space of the base model it was fine-tuned from (the teacher), fitted on the training bank only.

- `sentence_embedder(path)` → a teacher: token ids → [N, d] mean-pooled, L2-normalised last hidden states
  of the encoder saved at `path` (how a sentence-embedding model such as all-MiniLM-L6-v2 embeds), in batches of
  similar length, with progress lines. The served ids are the teacher's ids: sentiment fine-tunes the base
  encoder with its own tokenizer.
- `Teacher(embed, texts)`: the embedder and more training texts to fit the map on; `regression_rows` pairs their
  served features with the teacher's embeddings.
- `projected_sources(feats, rows, names, layers, k, rank)` → for every layer × ridge: the candidate's
  statistics (the kNN bank in the teacher's space plus the projection) and its raw kNN-cosine distance of every
  other set, in the form training/core/ood_fit.py adds to its hidden-state candidates.

Measured on the sentiment quick artifact's saved features (its 1,600-text bank, validation choice sets): the
original MiniLM's own sentence embeddings give kNN AUROC 0.983 against 0.962 for the fine-tuned model's best layer,
and a ridge map of the fine-tuned layer 3 onto them 0.974 with no second encoder pass at serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.core.ood_methods import distances, fit_statistics, pool
from models.core.ood_projection import fit_projection, project
from training.core.progress import ProgressLog

log = logging.getLogger(__name__)
Embed = Callable[[Sequence[Sequence[int]]], torch.Tensor]
Rows = tuple[dict[int, torch.Tensor], torch.Tensor]  # the map's regression rows: served features per layer, teacher's
Extracted = tuple[dict[int, torch.Tensor], torch.Tensor, list[int], list[tuple[int, ...]]]  # ood_fit.features_of's
RIDGES = (0.1, 1.0, 10.0)  # relative penalties tried (models/core/ood_projection.fit_projection); chosen on validation


@dataclass(frozen=True)
class Teacher:
    """The base model's embedder (`sentence_embedder`) and more training inputs the map is fitted on, beside the
    bank (a map of d × d' weights wants more rows than a kNN bank needs)."""

    embed: Embed
    texts: list[str] = field(default_factory=list)


def regression_rows(teacher: Teacher, bank: Extracted, extract: Callable[[list[str]], Extracted],
                    layers: Sequence[int]) -> Rows:
    """The served features (per layer) and the teacher's embeddings of the bank's texts and of `teacher.texts`
    (their `features_of` output by `extract`), the teacher run once over all their served ids."""
    parts = [bank, extract(teacher.texts)] if teacher.texts else [bank]
    ids = [i for part in parts for i in part[3]]
    return {layer: torch.cat([part[0][layer] for part in parts]) for layer in layers}, teacher.embed(ids)


def sentence_embedder(path: Path | str, batch_size: int = 32) -> Embed:
    """See module docstring. The model loads on first use, on the CPU, in float32."""
    from transformers import AutoModel  # the fit's dependency only; serving never loads a teacher

    def embed(ids: Sequence[Sequence[int]]) -> torch.Tensor:
        # Our own cached archive or the user's --base-model directory, never a Hub id (bandit B615).
        model = AutoModel.from_pretrained(path, local_files_only=True).eval()  # nosec B615
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = torch.zeros(len(ids), model.config.hidden_size)
        with ProgressLog("ood/teacher", len(ids)) as progress, torch.no_grad():
            for start in range(0, len(order), batch_size):
                index = order[start: start + batch_size]
                width = max(len(ids[i]) for i in index)
                batch = torch.full((len(index), width), model.config.pad_token_id or 0, dtype=torch.long)
                mask = torch.zeros(len(index), width, dtype=torch.long)
                for row, i in enumerate(index):
                    batch[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                out[index] = pool(model(input_ids=batch, attention_mask=mask).last_hidden_state, mask)
                progress.update(len(index))
        return out
    return embed


def projected_sources(feats: Mapping[str, Mapping[int, torch.Tensor]], rows: Rows, names: Sequence[str],
                      layers: Sequence[int], k: int, rank: int, ridges: Sequence[float] = RIDGES
                      ) -> list[tuple[str, str, int, int, dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """(name, "knn_cosine", layer, `rank`, statistics, raw distance of each set in `names`) of every layer × ridge:
    the map fitted on `rows`, the kNN bank `feats["bank"]` mapped (module docstring)."""
    out = []
    for layer in layers:
        for ridge in ridges:
            projection = fit_projection(rows[0][layer], rows[1], ridge)
            stats = {**fit_statistics("knn_cosine", project(projection, feats["bank"][layer])), **projection}
            raw = {name: distances("knn_cosine", stats, project(projection, feats[name][layer]), k) for name in names}
            out.append((f"knn_cosine_projected_{ridge:g}/layer_{layer}", "knn_cosine", layer, rank, stats, raw))
    log.info("OOD: %d projected candidates (layers %s × ridge %s)", len(out), list(layers), list(ridges))
    return out
