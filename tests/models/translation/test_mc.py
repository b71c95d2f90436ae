"""The MC teacher-forced scoring pass for Marian: mirrors the library (eval forward and train-mode dropout),
batches exactly, seeds reproduce."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

from models.core.dropout import mix_seed
from models.translation.mc import decoder_logits, encode, stochastic_greedy_decode
from models.translation.model import build_marian_preset
from tests.models.distribution import assert_same_distribution

HIDDEN = frozenset({"hidden"})
ALL = frozenset({"hidden", "attention"})
V = 120


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_marian_preset("tiny", vocab_size=V, decoder_layers=3, encoder_layers=2, dropout=0.2,
                               attention_dropout=0.2, activation_dropout=0.2, seed=1).eval()


def _batch(lengths_src: list[int], lengths_dec: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = torch.zeros(len(lengths_src), max(lengths_src), dtype=torch.long)
    dec = torch.zeros(len(lengths_dec), max(lengths_dec), dtype=torch.long)
    for i, (ls, ld) in enumerate(zip(lengths_src, lengths_dec, strict=True)):
        src[i, :ls] = torch.randint(4, V, (ls,), generator=g)
        src[i, ls - 1] = 2
        dec[i, :ld] = torch.randint(4, V, (ld,), generator=g)
        dec[i, 0] = 1
    return src, (src != 0).long(), dec


def _rows(samples: list[int], seeds: list[int], deterministic_row: bool = True):
    row_seeds, counts = [], []
    for t, s in zip(samples, seeds, strict=True):
        row_seeds += ([None] if deterministic_row else []) + [mix_seed(s, j) for j in range(t)]
        counts.append(t + int(deterministic_row))
    return row_seeds, counts


def test_deterministic_rows_equal_the_library_eval_forward(model) -> None:
    src, mask, dec = _batch([7, 4, 9], [6, 3, 5])
    with torch.inference_mode():
        ref = model(input_ids=src, attention_mask=mask, decoder_input_ids=dec).logits
        states = encode(model, src, mask)
        for k in (1, 3):
            mine = decoder_logits(model, states, mask, dec, [None] * 3, [1] * 3, k, ALL)
            for i, length in enumerate([6, 3, 5]):  # real positions only (the library saw no decoder mask)
                torch.testing.assert_close(mine[i, :length], ref[i, :length], rtol=1e-4, atol=1e-4)
        # A deterministic row inside a stochastic batch is still the eval forward.
        mixed = decoder_logits(model, states, mask, dec, [None, 11, None, 12, None], [2, 1, 2], 2, ALL)
        torch.testing.assert_close(mixed[0, :6], ref[0, :6], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(mixed[4, :5], ref[2, :5], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("last_k", [1, 2, 3])
def test_batched_scoring_equals_one_sample_at_a_time(model, last_k: int) -> None:
    # Mixed lengths with the hidden sites (position-leading masks: padding-independent).
    src, mask, dec = _batch([7, 4, 9], [6, 3, 5], seed=2)
    samples, seeds = [3, 0, 2], [5, 6, 7]
    row_seeds, counts = _rows(samples, seeds)
    with torch.inference_mode():
        states = encode(model, src, mask)
        batched = decoder_logits(model, states, mask, dec, row_seeds, counts, last_k, HIDDEN)
        row = 0
        for i, (ls, ld) in enumerate(zip([7, 4, 9], [6, 3, 5], strict=True)):
            alone_states = encode(model, src[i: i + 1, :ls], mask[i: i + 1, :ls])
            for _ in range(counts[i]):
                alone = decoder_logits(model, alone_states, mask[i: i + 1, :ls], dec[i: i + 1, :ld],
                                       [row_seeds[row]], [1], last_k, HIDDEN)
                torch.testing.assert_close(batched[row, :ld], alone[0], rtol=1e-4, atol=1e-4)
                row += 1


def test_batched_scoring_with_attention_dropout_equals_rows_alone_at_equal_lengths(model) -> None:
    src, mask, dec = _batch([6, 6], [5, 5], seed=3)
    row_seeds, counts = _rows([2, 3], [8, 9])
    with torch.inference_mode():
        states = encode(model, src, mask)
        batched = decoder_logits(model, states, mask, dec, row_seeds, counts, 3, ALL)
        row = 0
        for i in range(2):
            for _ in range(counts[i]):
                alone = decoder_logits(model, states[i: i + 1], mask[i: i + 1], dec[i: i + 1], [row_seeds[row]], [1],
                                       3, ALL)
                torch.testing.assert_close(batched[row], alone[0], rtol=1e-4, atol=1e-4)
                row += 1


def test_seeds_reproduce_and_differ(model) -> None:
    src, mask, dec = _batch([6], [5], seed=4)
    with torch.inference_mode():
        states = encode(model, src, mask)
        run = lambda seeds: decoder_logits(model, states, mask, dec, seeds, [len(seeds)], 2, ALL)  # noqa: E731
        a, b, c = run([1, 2, 3]), run([1, 2, 3]), run([4, 5, 6])
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # rows of one item draw different masks


def test_requires_eval_mode_and_consistent_rows(model) -> None:
    src, mask, dec = _batch([5], [4])
    states = encode(model, src, mask).detach()
    with pytest.raises(ValueError):
        decoder_logits(model, states, mask, dec, [None, 1], [1], 1, HIDDEN)
    model.train()
    try:
        with pytest.raises(RuntimeError):
            decoder_logits(model, states, mask, dec, [None], [1], 1, HIDDEN)
    finally:
        model.eval()


def test_stochastic_greedy_decode_without_masks_is_library_greedy(model) -> None:
    src, mask, _ = _batch([7, 5], [1, 1], seed=5)
    with torch.inference_mode():
        states = encode(model, src, mask)
        ours = stochastic_greedy_decode(model, states, mask, [None, None], [1, 1], 3, HIDDEN, max_new_tokens=6)
        ref = model.generate(input_ids=src, attention_mask=mask, max_new_tokens=6, num_beams=1, do_sample=False,
                             forced_eos_token_id=None)
    assert [len(tokens) for tokens in ours] == [6, 6], "both run to max_new_tokens (no </s> from this model)"
    assert ours == [_until_eos(row) for row in ref[:, 1:].tolist()]
    with torch.inference_mode():
        sampled = stochastic_greedy_decode(model, states, mask, [1, 2, 1], [2, 1], 3, HIDDEN, max_new_tokens=6)
        again = stochastic_greedy_decode(model, states, mask, [1, 2, 1], [2, 1], 3, HIDDEN, max_new_tokens=6)
    assert sampled == again and all(1 <= len(tokens) <= 6 for tokens in sampled)
    assert sampled[:2] != [ours[0], ours[0]], "the masks must reach the decode"


def _until_eos(row: list[int]) -> list[int]:
    """A library decode's generated tokens up to and including the first `</s>` (nothing of the padding)."""
    return row[: row.index(2) + 1] if 2 in row else row


@contextmanager
def _library_dropout(model: torch.nn.Module, sites: frozenset[str], last_k: int) -> Iterator[None]:
    """The library's own dropout at `sites` in the top `last_k` decoder layers (and the decoder embeddings
    when that is every layer), everything else in eval mode: what `decoder_logits` claims to sample from.
    Marian gates residual and FFN-activation dropout by its layers' `training` flag and attention-probability
    dropout by its attention modules'; the encoder states are passed in, so the encoder never runs."""
    decoder = model.model.decoder
    first = len(decoder.layers) - last_k
    try:
        decoder.training = first <= 0 and "hidden" in sites
        for layer in decoder.layers[max(first, 0):]:
            layer.training = "hidden" in sites
            layer.self_attn.training = layer.encoder_attn.training = "attention" in sites
        yield
    finally:
        model.eval()


def _sensitive_marian(decoder_layers: int) -> torch.nn.Module:
    """A tiny Marian whose every dropout site visibly moves the logits: at initialisation (weights std 0.02)
    a sublayer's output is about a tenth of the residual stream it joins, so dropping one site would change
    the logits by less than sampling noise; ×10 on the decoder's matrices makes them comparable."""
    model = build_marian_preset("tiny", vocab_size=V, decoder_layers=decoder_layers, dropout=0.3,
                                attention_dropout=0.2, activation_dropout=0.4, seed=1).eval()
    with torch.no_grad():
        for name, weight in model.model.decoder.layers.named_parameters():
            if name.endswith("weight") and weight.dim() == 2:
                weight.mul_(10.0)
    return model


def _both_ways(model: torch.nn.Module, sites: frozenset[str], last_k: int, samples: int = 3000):
    src, mask, dec = _batch([7], [5], seed=0)
    with torch.inference_mode():
        states = encode(model, src, mask)
        fast = decoder_logits(model, states, mask, dec, [mix_seed(3, t) for t in range(samples)], [samples],
                              last_k, sites)
        torch.manual_seed(0)
        with _library_dropout(model, sites, last_k):
            ref = model(encoder_outputs=BaseModelOutput(last_hidden_state=states.expand(samples, -1, -1)),
                        attention_mask=mask.expand(samples, -1), decoder_input_ids=dec.expand(samples, -1)).logits
    assert not any(m.training for m in model.modules()), "flags restored"
    return fast, ref


@pytest.mark.parametrize("sites", [HIDDEN, frozenset({"attention"})], ids=["hidden", "attention"])
def test_full_mc_matches_the_library_train_mode_dropout_in_distribution(sites: frozenset[str]) -> None:
    """One decoder layer, k = 1 = full MC: every site of the layer plus the embeddings. "hidden" is the
    embedding, residual and FFN-activation dropout; "attention" the self- and cross-attention probabilities."""
    assert_same_distribution(*_both_ways(_sensitive_marian(1), sites, last_k=1))


def test_last_k_samples_only_the_top_layers_in_distribution() -> None:
    # Two layers, k = 1: the library with only its top layer in train mode. Dropout in the lower layer or the
    # embeddings would add spread that the reference does not have.
    assert_same_distribution(*_both_ways(_sensitive_marian(2), ALL, last_k=1))
