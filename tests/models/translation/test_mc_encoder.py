"""Marian MC beyond the decoder (models/translation/mc_encoder.py): last-k over decoder then encoder layers. Encoder
rows mirror the library, k ≤ decoder layers is unchanged, rows are batch-independent, seeds reproduce."""

from __future__ import annotations

import pytest
import torch

from models.core.dropout import mix_seed
from models.translation import mc, mc_encoder
from models.translation.mc import encode, project
from models.translation.model import build_marian_preset
from models.translation.ops import MarianOps
from tests.models.distribution import assert_same_distribution
from tests.models.translation.test_mc import _batch, _rows

HIDDEN = frozenset({"hidden"})
ALL = frozenset({"hidden", "attention"})
V = 120
DEC, ENC = 3, 2  # k: 1..3 decoder side, 4 = decoder-full + top encoder layer, 5 = whole-model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_marian_preset("tiny", vocab_size=V, decoder_layers=DEC, encoder_layers=ENC, dropout=0.2,
                               attention_dropout=0.2, activation_dropout=0.2, seed=1).eval()


def _hidden(model, src, mask, dec, seeds, counts, k, sites=HIDDEN) -> torch.Tensor:
    return mc_encoder.model_hidden(model, encode(model, src, mask), mask, src, dec, seeds, counts, k, sites)


@pytest.mark.parametrize(("live", "embeddings"), [(1, False), (2, False), (2, True)])
def test_deterministic_encoder_rows_equal_the_library_eval_encoder(model, live: int, embeddings: bool) -> None:
    src, mask, _ = _batch([7, 4, 9], [1, 1, 1])
    with torch.inference_mode():
        ref = model.model.encoder(input_ids=src, attention_mask=mask).last_hidden_state
        rows = mc_encoder.encoder_rows(model, src, mask, [None, 11, None, 12, None], [2, 1, 2], live, ALL, embeddings)
    assert rows.shape[0] == 5
    for row, item, length in [(0, 0, 7), (2, 1, 4), (4, 2, 9)]:
        torch.testing.assert_close(rows[row, :length], ref[item, :length], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(rows[1, :7], ref[0, :7]), "a seeded row drops out in the encoder"


def test_deterministic_rows_equal_the_library_eval_forward(model) -> None:
    src, mask, dec = _batch([7, 4, 9], [6, 3, 5])
    with torch.inference_mode():
        ref = model(input_ids=src, attention_mask=mask, decoder_input_ids=dec).logits
        for k in (1, DEC, DEC + 1, DEC + ENC):
            for sites in (HIDDEN, ALL):
                mine = project(model, _hidden(model, src, mask, dec, [None, 11, None, 12, None], [2, 1, 2], k, sites))
                for row, item, length in [(0, 0, 6), (2, 1, 3), (4, 2, 5)]:
                    torch.testing.assert_close(mine[row, :length], ref[item, :length], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("last_k", [1, 2, DEC])
def test_k_within_the_decoder_is_the_decoder_pass_bit_for_bit(model, last_k: int) -> None:
    src, mask, dec = _batch([7, 4, 9], [6, 3, 5], seed=2)
    row_seeds, counts = _rows([3, 0, 2], [5, 6, 7])
    with torch.inference_mode():
        states = encode(model, src, mask)
        before = mc.decoder_hidden(model, states, mask, dec, row_seeds, counts, last_k, HIDDEN)
        enc = MarianOps().encode(model, src, mask)[0]
        now = MarianOps().hidden(model, enc, dec, row_seeds, counts, last_k, HIDDEN)
        before_samples = mc.stochastic_greedy_decode(model, states, mask, row_seeds[1:4], [3], last_k, HIDDEN, 5)
        now_samples = MarianOps().sample(model, enc.select(torch.tensor([0])), row_seeds[1:4], [3], last_k, HIDDEN, 5)
    assert torch.equal(before, now)
    assert before_samples == now_samples


@pytest.mark.parametrize("last_k", [DEC + 1, DEC + ENC])
def test_a_rows_scores_do_not_depend_on_batch_or_padding(model, last_k: int) -> None:
    src, mask, dec = _batch([7, 4, 9], [6, 3, 5], seed=2)
    row_seeds, counts = _rows([3, 0, 2], [5, 6, 7])
    with torch.inference_mode():
        batched = _hidden(model, src, mask, dec, row_seeds, counts, last_k)
        row = 0
        for i, (ls, ld) in enumerate(zip([7, 4, 9], [6, 3, 5], strict=True)):
            for _ in range(counts[i]):
                alone = _hidden(model, src[i: i + 1, :ls], mask[i: i + 1, :ls], dec[i: i + 1, :ld],
                                [row_seeds[row]], [1], last_k)
                torch.testing.assert_close(batched[row, :ld], alone[0], rtol=1e-4, atol=1e-4)
                row += 1


def test_seeds_reproduce_differ_and_the_encoder_is_live_only_past_the_decoder(model) -> None:
    src, mask, dec = _batch([6], [5], seed=4)
    with torch.inference_mode():
        run = lambda seeds, k: _hidden(model, src, mask, dec, seeds, [len(seeds)], k)  # noqa: E731
        full = run([1, 2, 3], DEC)
        a, b, c = run([1, 2, 3], DEC + 1), run([1, 2, 3], DEC + 1), run([4, 5, 6], DEC + 1)
        whole, whole_again = run([1, 2, 3], DEC + ENC), run([1, 2, 3], DEC + ENC)
        beyond = run([1, 2, 3], DEC + ENC + 4)  # clamped: still the whole model
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a[0], a[1])
    assert torch.equal(whole, whole_again) and torch.equal(whole, beyond)
    assert not torch.allclose(full, a) and not torch.allclose(a, whole) and not torch.allclose(full, whole)
    with pytest.raises(ValueError, match="input_ids"):
        mc_encoder.model_hidden(model, encode(model, src, mask), mask, None, dec, [1], [1], DEC + 1, HIDDEN)


def test_encoder_sites_are_not_decoder_sites(model) -> None:
    decoder_sites = {mc.EMBEDDINGS_SITE} | {mc._site(i, s) for i in range(DEC) for s in range(6)}
    encoder_sites = {mc_encoder.ENCODER_EMBEDDINGS_SITE} | {mc_encoder.encoder_site(i, s)
                                                           for i in range(ENC) for s in range(4)}
    assert len(encoder_sites) == 1 + 4 * ENC and not decoder_sites & encoder_sites


def test_modes_and_layer_counts(model) -> None:
    assert mc_encoder.num_layers(model) == MarianOps().num_layers(model) == DEC + ENC
    names = [mc_encoder.mode(model, k) for k in range(1, DEC + ENC + 2)]
    assert names == ["last-1-decoder-layers", "last-2-decoder-layers", "decoder-full",
                     "decoder-full+last-1-encoder-layers", "whole-model", "whole-model"]
    facts = MarianOps().facts(model, DEC)["mc"]
    assert facts["mode"] == "decoder-full" and facts["scope"].startswith("decoder")
    facts = MarianOps().facts(model, DEC + ENC)["mc"]
    assert facts["mode"] == "whole-model" and facts["scope"].startswith("encoder and decoder")
    assert "encoder per row" in facts["sampling"]


def test_stochastic_greedy_decode_reaches_the_encoder(model) -> None:
    src, mask, _ = _batch([7, 5], [1, 1], seed=5)
    with torch.inference_mode():
        states = encode(model, src, mask)
        plain = mc.stochastic_greedy_decode(model, states, mask, [None, None], [1, 1], DEC, HIDDEN, 6)
        det = mc_encoder.stochastic_greedy_decode(model, states, mask, src, [None, None], [1, 1], DEC + ENC, HIDDEN, 6)
        seeds = [1, 2, 1]
        whole = mc_encoder.stochastic_greedy_decode(model, states, mask, src, seeds, [2, 1], DEC + ENC, HIDDEN, 6)
        again = mc_encoder.stochastic_greedy_decode(model, states, mask, src, seeds, [2, 1], DEC + ENC, HIDDEN, 6)
        # what the decode does at each step: the teacher-forced whole-model pass of its own prefix
        prefix = torch.tensor([[1, *whole[0][:-1]]])
        scored = project(model, _hidden(model, src[:1], mask[:1], prefix, [1], [1], DEC + ENC))
    assert det == plain and whole == again
    assert scored[0].argmax(-1).tolist() == whole[0]


def _sensitive_marian() -> torch.nn.Module:
    """Like test_mc's: ×10 on every layer matrix, so each dropout site visibly moves the logits."""
    model = build_marian_preset("tiny", vocab_size=V, decoder_layers=1, encoder_layers=1, dropout=0.3,
                                attention_dropout=0.2, activation_dropout=0.4, seed=1).eval()
    with torch.no_grad():
        for part in (model.model.encoder.layers, model.model.decoder.layers):
            for name, weight in part.named_parameters():
                if name.endswith("weight") and weight.dim() == 2:
                    weight.mul_(10.0)
    return model


@pytest.mark.parametrize("sites", [HIDDEN, frozenset({"attention"})], ids=["hidden", "attention"])
def test_whole_model_matches_the_library_train_mode_dropout_in_distribution(sites: frozenset[str]) -> None:
    """k = all layers: the library's train-mode dropout everywhere (residual, activation and embedding dropouts are
    gated by the layers' and stacks' `training` flags, attention probabilities by the attention modules')."""
    model, samples = _sensitive_marian(), 3000
    src, mask, dec = _batch([7], [5], seed=0)
    with torch.inference_mode():
        fast = project(model, _hidden(model, src, mask, dec, [mix_seed(3, t) for t in range(samples)], [samples],
                                      2, sites))
        torch.manual_seed(0)
        try:
            for module in model.modules():
                attention = type(module).__name__.endswith("Attention")
                module.training = ("attention" in sites) if attention else ("hidden" in sites)
            ref = model(input_ids=src.expand(samples, -1), attention_mask=mask.expand(samples, -1),
                        decoder_input_ids=dec.expand(samples, -1)).logits
        finally:
            model.eval()
    assert_same_distribution(fast, ref)
