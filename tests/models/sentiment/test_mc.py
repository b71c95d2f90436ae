"""MC-dropout behaviour of the BERT fast path against the transformers model it mirrors."""

import pytest
import torch

from models.core.dropout import MaskSource, classify_module, reference_mc_mode
from models.core.padding import pad_ids
from models.sentiment.mc import forward_logits, mc_logits
from models.sentiment.model import build_tiny_classifier

HIDDEN_HEAD = frozenset({"hidden", "head"})
ALL = frozenset({"hidden", "head", "attention"})


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_tiny_classifier(120, ["neg", "pos"], num_layers=3, dropout=0.1, seed=3).eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return pad_ids([[2, 15, 40, 7, 9, 3], [2, 77, 3], [2, 5, 6, 8, 10, 11, 12, 3]], pad_id=0)


def test_deterministic_path_equals_transformers_eval_forward(model, batch) -> None:
    ids, mask = batch
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask).logits
        got = mc_logits(model, ids, mask, 0, seed=0, last_k=1, sites=ALL)
    assert got.shape == (3, 1, 2)
    torch.testing.assert_close(got[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_mc_samples_zero_is_deterministic_across_seeds(model, batch) -> None:
    ids, mask = batch
    with torch.inference_mode():
        a = mc_logits(model, ids, mask, 0, seed=1, last_k=3, sites=ALL)
        b = mc_logits(model, ids, mask, 0, seed=2, last_k=3, sites=ALL)
    assert torch.equal(a, b)


@pytest.mark.parametrize("last_k", [1, 2, 3])
def test_mc_passes_differ_and_seeds_reproduce(model, batch, last_k: int) -> None:
    ids, mask = batch
    with torch.inference_mode():
        a = mc_logits(model, ids, mask, 6, seed=11, last_k=last_k, sites=HIDDEN_HEAD)
        b = mc_logits(model, ids, mask, 6, seed=11, last_k=last_k, sites=HIDDEN_HEAD)
        c = mc_logits(model, ids, mask, 6, seed=12, last_k=last_k, sites=HIDDEN_HEAD)
    assert a.shape == (3, 6, 2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a.std(dim=1) > 0).all(), "every item's samples must differ"


@pytest.mark.parametrize("last_k", [1, 2, 3])
def test_item_result_does_not_depend_on_batch_neighbours(model, last_k: int) -> None:
    """Holds for the packed lower layers (k < 3) and for full MC, where nothing is packed."""
    alone_ids, alone_mask = pad_ids([[2, 9, 14, 3]], 0)
    ids, mask = pad_ids([[2, 5, 6, 7, 8, 9, 10, 11, 3], [2, 9, 14, 3]], 0)
    with torch.inference_mode():
        alone = forward_logits(model, alone_ids, alone_mask, [5], [99], last_k, HIDDEN_HEAD)[0]
        shared = forward_logits(model, ids, mask, [0, 5], [1, 99], last_k, HIDDEN_HEAD)[1]
    torch.testing.assert_close(alone, shared, rtol=1e-4, atol=1e-5)


def test_mixed_sample_counts_in_one_forward(model, batch) -> None:
    ids, mask = batch
    with torch.inference_mode():
        out = forward_logits(model, ids, mask, [0, 4, 2], [1, 2, 3], 2, HIDDEN_HEAD)
        det = forward_logits(model, ids, mask, [0, 0, 0], [1, 2, 3], 2, HIDDEN_HEAD)
    assert [o.shape[0] for o in out] == [1, 4, 2]
    torch.testing.assert_close(out[0], det[0])


def _sample_stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    diff = logits[..., 1] - logits[..., 0]  # [B, T]
    return diff.mean(dim=1), diff.std(dim=1)


def test_full_mc_matches_transformers_train_mode_in_distribution() -> None:
    """last-k with k = all layers is full MC: same distribution as the library's own dropout."""
    model = build_tiny_classifier(120, ["neg", "pos"], num_layers=2, dropout=0.3, seed=5).eval()
    ids, mask = pad_ids([[2, 15, 40, 7, 9, 3]], 0)
    samples = 3000
    with torch.inference_mode():
        fast = mc_logits(model, ids, mask, samples, seed=4, last_k=2, sites=ALL)
        torch.manual_seed(0)
        with reference_mc_mode(model, ALL):
            ref = model(input_ids=ids.repeat(samples, 1), attention_mask=mask.repeat(samples, 1)).logits[None]
    assert not model.training and not any(m.training for m in model.modules()), "flags restored"
    fast_mean, fast_std = _sample_stats(fast)
    ref_mean, ref_std = _sample_stats(ref)
    # Standard error of each mean is std/sqrt(3000) ≈ 2 % of std; allow 5 standard errors.
    assert abs(fast_mean - ref_mean).item() < 5 * ref_std.item() / samples**0.5 * 2**0.5
    assert 0.9 < (fast_std / ref_std).item() < 1.1


def test_reference_mode_turns_on_attention_dropout_via_module_flag() -> None:
    model = build_tiny_classifier(50, ["a", "b"], num_layers=1, dropout=0.5).eval()
    sites = {classify_module(n, m) for n, m in model.named_modules()} - {None}
    assert sites == {"hidden", "attention", "head"}
    ids, mask = pad_ids([[2, 5, 6, 7, 3]], 0)
    with torch.inference_mode(), reference_mc_mode(model, frozenset({"attention"})):
        outs = {tuple(model(input_ids=ids, attention_mask=mask).logits.flatten().tolist()) for _ in range(5)}
    assert len(outs) > 1, "attention-probability dropout must be live when its site is on"


def test_mask_source_keeps_deterministic_rows_and_scales() -> None:
    source = MaskSource([None, 7], "cpu")
    x = torch.ones(2, 1000)
    out = source.dropout(x, 0.5, site=3)
    assert torch.equal(out[0], x[0])
    kept = out[1][out[1] > 0]
    assert torch.all(kept == 2.0)
    assert 400 < kept.numel() < 600


def test_eval_mode_is_required(model, batch) -> None:
    ids, mask = batch
    model.train()
    try:
        with pytest.raises(RuntimeError):
            mc_logits(model, ids, mask, 2, 0, 1, HIDDEN_HEAD)
    finally:
        model.eval()
