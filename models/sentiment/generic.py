"""The generic MC path for sequence classifiers without a fast path (models/sentiment/encoders.py lists those
with one): the library's own forward with the dropout modules of the live sites in training mode
(models.core.dropout.reference_mc_mode), i.e. full MC over the whole model.

Correct but slower than the fast path: every sample runs every layer (no last-k, no [CLS]-only top layer), and
each item runs as its own forward of T rows under a torch generator seeded from the item's seed, so a seeded
request gets the same answer whatever shares its batch (at the price of one forward per MC item; the T = 0 items
share one deterministic forward). Which modules count as which site is `classify_module`'s guess by name, so the
predictor says "generic" in `describe()` and the loader logs a warning.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import nn

from models.core.dropout import mix_seed, reference_mc_mode, validate_sites
from models.core.ood import pool


def num_layers(model: nn.Module) -> int:
    """The encoder's layer count as its config states it (1 when it states none)."""
    return int(getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layers", None) or 1)


def forward_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mc_samples: Sequence[int],
    seeds: Sequence[int],
    sites: frozenset[str],
    feature_layers: Collection[int] = (),
    features_out: dict[int, torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Logits per item: [max(T_i, 1), C] (the fast path's contract, models/sentiment/mc.forward_logits, without
    last-k). `features_out` receives the pooled hidden states of `feature_layers` (0 = embeddings) from the
    deterministic pass (run for every item when features are asked for). The model must be in eval mode."""
    if model.training:
        raise RuntimeError("forward_logits expects model.eval(); MC dropout is switched on here")
    sites = validate_sites(sites)
    out: list[torch.Tensor | None] = [None] * len(mc_samples)
    wanted = sorted(set(feature_layers)) if features_out is not None else []
    deterministic = [i for i, t in enumerate(mc_samples) if t == 0]
    rows = list(range(len(mc_samples))) if wanted else deterministic
    if rows:
        index = torch.tensor(rows, device=input_ids.device)
        result = model(input_ids=input_ids[index], attention_mask=attention_mask[index],
                       output_hidden_states=bool(wanted))
        for row, i in enumerate(rows):
            if mc_samples[i] == 0:
                out[i] = result.logits[row: row + 1].float()
        if wanted and features_out is not None:
            for layer in wanted:
                features_out[layer] = pool(result.hidden_states[layer], attention_mask.bool())
    for i, samples in enumerate(mc_samples):
        if samples == 0:
            continue
        ids = input_ids[i: i + 1].expand(samples, -1)
        mask = attention_mask[i: i + 1].expand(samples, -1)
        # The library draws its masks from the global generator: fork it so the item's seed fixes them and the
        # caller's random state is left as it was.
        devices = [input_ids.device] if input_ids.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), reference_mc_mode(model, sites):
            torch.manual_seed(mix_seed(seeds[i], 0) % (1 << 63))
            out[i] = model(input_ids=ids, attention_mask=mask).logits.float()
    return [logits for logits in out if logits is not None]
