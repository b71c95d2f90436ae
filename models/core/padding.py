"""The one padding helper: ragged token-id rows (or per-row tensors) → a padded batch and its mask.

Every task's predictor, the training batchers and the evaluation code pad through here, so padding side,
dtype and mask convention are the same everywhere: ids and mask are `long`, mask 1 = real token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_ids(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu", *, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest row: (ids [B, L], attention mask [B, L]), right-padded unless `left` (decoding
    prompts). The mask comes from the lengths, never from `pad_id`, which may be a real token. Raises
    ValueError on an empty batch."""
    if not rows:
        raise ValueError("empty batch")
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return ids.to(device), mask.to(device)


def pad_states(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-row states [L_i, H] with zeros: (states [B, L, H], mask [B, L]) on the rows' device."""
    if not rows:
        raise ValueError("empty batch")
    width = max(len(row) for row in rows)
    states = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=states.device)
    for i, row in enumerate(rows):
        states[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return states, mask
