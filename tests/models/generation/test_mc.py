"""The Llama last-k MC pass against the library model with its own train-mode residual dropout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from models.core.dropout import mix_seed
from models.generation.mc import capture_layer_input, project, top_layers
from models.generation.model import build_tiny_llama, residual_branches
from tests.models.distribution import assert_same_distribution

LAYERS = 2


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """A tiny Llama whose residual branches visibly move the logits: at initialisation (weights std 0.02) the
    MLP branch is a few hundredths of the residual stream, so dropping its dropout would hide in sampling
    noise; ×8 on the layers' matrices makes both branches count."""
    llama = build_tiny_llama(100, layers=LAYERS, attention_dropout=0.0, hidden_dropout=0.3, seed=2).eval()
    with torch.no_grad():
        for name, weight in llama.model.layers.named_parameters():
            if name.endswith("weight") and weight.dim() == 2:
                weight.mul_(8.0)
    return llama


@contextmanager
def _library_dropout(model: torch.nn.Module, last_k: int) -> Iterator[None]:
    """The model's own "hidden" dropout (models/generation/model.py: hooks on `o_proj` and `down_proj`, gated
    by those modules' `training` flag) in the top `last_k` layers, everything else in eval mode."""
    branches = residual_branches(model)  # two per layer, in layer order
    try:
        for index, module in enumerate(branches):
            module.training = index // 2 >= LAYERS - last_k
        yield
    finally:
        model.eval()


@pytest.mark.parametrize("last_k", [1, LAYERS])
def test_last_k_mc_matches_the_library_train_mode_dropout_in_distribution(model, last_k: int) -> None:
    """k = L is full MC (both branches of every layer); k = 1 must leave the lower layer deterministic."""
    ids = torch.tensor([[5, 17, 33, 8, 61, 12]])
    mask = torch.ones_like(ids)
    samples = 3000
    with torch.inference_mode():
        with capture_layer_input(model, LAYERS - last_k) as chunks:
            model(input_ids=ids, attention_mask=mask)
        states = top_layers(model, chunks[0], mask, [mix_seed(3, t) for t in range(samples)], [samples], last_k)
        fast = project(model, states)
        torch.manual_seed(0)
        with _library_dropout(model, last_k):
            ref = model(input_ids=ids.expand(samples, -1), attention_mask=mask.expand(samples, -1)).logits
    assert not any(m.training for m in model.modules()), "flags restored"
    assert_same_distribution(fast, ref)
