"""Which dropouts exist, which are live at MC time, and seeded per-row dropout masks.

Sites (names used in settings and manifests):
- "hidden":    residual-stream dropouts (embeddings, attention output, feed-forward output)
- "attention": dropout on attention probabilities. In transformers 5 this is not an nn.Dropout call but
               `dropout_p` handed to the attention kernel, gated by the *attention module's* `training`
               flag, so `model.eval()` + re-enabling nn.Dropout modules would silently leave it off.
- "head":      dropout before the task head (classifier dropout)

`MaskSource` draws masks for a batch of R rows where row r is one MC sample of one input: the mask of
row r at site s comes from a generator seeded by (row seed, s) and fills the row's own slice in
row-major order. A row's masks therefore do not depend on the other rows in the batch, and the mask of
position j does not depend on how far the batch was padded (positions are the leading axis of a row).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

SITES = frozenset({"hidden", "attention", "head"})
# Uncertainty Baselines kept attention-probability dropout off at MC time; it also keeps attention on
# the fused kernel. Training still uses it.
DEFAULT_MC_SITES = frozenset({"hidden", "head"})

_MASK64 = (1 << 63) - 1


def row_index(counts: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """The item of each of R = Σ counts rows [R] (item i owns `counts[i]` consecutive rows): the index that expands
    per-item tensors to per-row ones."""
    return torch.repeat_interleave(torch.arange(len(counts), device=device), torch.tensor(list(counts), device=device))


def check_rows(items: int, counts: Sequence[int], row_seeds: Sequence[int | None]) -> None:
    """ValueError unless `counts` has one entry per input item and sums to the number of row seeds."""
    if len(counts) != items or sum(counts) != len(row_seeds):
        raise ValueError(f"{len(counts)} items / {sum(counts)} rows do not match {items} inputs and "
                         f"{len(row_seeds)} row seeds")


def mix_seed(seed: int, salt: int) -> int:
    """A well-spread 63-bit seed from (seed, salt) (splitmix64 finaliser), stable across processes."""
    z = (seed * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & _MASK64


def validate_sites(sites: Sequence[str] | frozenset[str]) -> frozenset[str]:
    """Return `sites` as a frozenset; raises ValueError naming any unknown site."""
    chosen = frozenset(sites)
    unknown = chosen - SITES
    if unknown:
        raise ValueError(f"unknown dropout sites {sorted(unknown)}; known: {sorted(SITES)}")
    return chosen


class MaskSource:
    """Seeded dropout for a batch of R rows; `row_seeds[r] is None` marks a deterministic row.

    `dropout(x, p, site)` applies inverted dropout (keep with prob 1−p, scale by 1/(1−p)) to x[R, ...].
    """

    def __init__(self, row_seeds: Sequence[int | None], device: torch.device | str) -> None:
        self.row_seeds = list(row_seeds)
        self.device = torch.device(device)
        self._generator = torch.Generator(device=self.device)

    @property
    def any_stochastic(self) -> bool:
        return any(seed is not None for seed in self.row_seeds)

    def dropout(self, x: torch.Tensor, p: float, site: int) -> torch.Tensor:
        if p <= 0.0 or not self.any_stochastic:
            return x
        if x.shape[0] != len(self.row_seeds):
            raise ValueError(f"dropout input has {x.shape[0]} rows, mask source has {len(self.row_seeds)}")
        noise = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        row_scale = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        for row, seed in enumerate(self.row_seeds):
            if seed is None:
                # Deterministic rows are neither dropped nor rescaled: they are what eval mode computes.
                noise[row].fill_(1.0)
                row_scale[row] = 1.0
            else:
                self._generator.manual_seed(mix_seed(seed, site))
                noise[row].uniform_(generator=self._generator)
                row_scale[row] = 1.0 / (1.0 - p)
        keep = noise >= p
        return x * keep * row_scale.view(-1, *([1] * (x.dim() - 1)))


@contextmanager
def reference_mc_mode(model: nn.Module, sites: frozenset[str]) -> Iterator[nn.Module]:
    """Put an HF model into MC mode the slow, generic way: eval everywhere, then `training=True` on exactly
    the modules whose dropout belongs to a live site. Used as the reference the fast paths are tested
    against, and for architectures without a fast path. Restores the previous flags on exit."""
    sites = validate_sites(sites)
    previous = {name: module.training for name, module in model.named_modules()}
    model.eval()
    try:
        for name, module in model.named_modules():
            site = classify_module(name, module)
            if site in sites:
                module.training = True
                for child in module.children():
                    if isinstance(child, nn.Dropout):
                        child.training = True
        yield model
    finally:
        for name, module in model.named_modules():
            module.training = previous.get(name, module.training)


def classify_module(name: str, module: nn.Module) -> str | None:
    """Site of a module whose `training` flag gates a dropout, or None.

    Attention modules (class name ends in "Attention" and own a `dropout`) gate probability dropout;
    nn.Dropout modules are "head" when they sit directly on the task model (no dot in the name) and
    "hidden" otherwise (embeddings, attention output, feed-forward output).
    """
    if type(module).__name__.endswith("Attention") and isinstance(getattr(module, "dropout", None), nn.Dropout):
        return "attention"
    if isinstance(module, nn.Dropout):
        if name.endswith("attention.self.dropout"):
            return None  # its rate is read by the parent attention module; see "attention"
        return "head" if "." not in name else "hidden"
    return None
