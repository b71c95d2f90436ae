"""The recurrent translation model: its maths mirrors torch's cells, variational masks are per row and time-constant,
MC rows are exact and batch-independent, decoders agree, and an artifact round-trips through the serving loader."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.core.artifacts import Manifest, library_versions, new_version_id, write_artifact
from models.core.base import save_model
from models.core.dropout import MaskSource, mix_seed
from models.core.predictor import MCRequest, PredictorOptions
from models.core.tokenizers import train_joint_tokenizer
from models.registry import load_predictor
from models.translation import rnn_decode, rnn_mc
from models.translation.model import build_rnn_preset
from models.translation.predictor import TranslationPredictor
from models.translation.rnn import ENC_EMB, RnnMTModel, make_memory, project, run_cell
from training.translation.data import make_parallel_corpus

HIDDEN = frozenset({"hidden"})
V = 90


def _model(cell: str = "gru", layers: int = 2, seed: int = 1) -> RnnMTModel:
    return build_rnn_preset("tiny", vocab_size=V, cell=cell, hidden_size=24, layers=layers, embed_dim=16,
                            dropout=0.3, recurrent_dropout=0.3, seed=seed).eval()


@pytest.fixture(scope="module", params=["gru", "lstm"])
def model(request: pytest.FixtureRequest) -> RnnMTModel:
    return _model(request.param)


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


def _rows(samples: list[int], seeds: list[int]):
    row_seeds, counts = [], []
    for t, s in zip(samples, seeds, strict=True):
        row_seeds += [None] + [mix_seed(s, j) for j in range(t)]
        counts.append(t + 1)
    return row_seeds, counts


@pytest.mark.parametrize("cell_class", [nn.GRUCell, nn.LSTMCell])
def test_cell_maths_mirrors_torch_cells(cell_class: type[nn.Module]) -> None:
    torch.manual_seed(0)
    cell = cell_class(5, 7)
    x, h = torch.randn(3, 4, 5), torch.zeros(3, 7)
    state = (h, h.clone()) if cell_class is nn.LSTMCell else h
    expected = []
    for t in range(4):
        state = cell(x[:, t], state)
        expected.append(state[0] if isinstance(state, tuple) else state)
    width = 14 if cell_class is nn.LSTMCell else 7
    mine = run_cell(cell, x, torch.zeros(3, width), None)
    torch.testing.assert_close(mine, torch.stack(expected, 1), rtol=1e-5, atol=1e-6)


def test_recurrent_mask_is_the_same_at_every_step() -> None:
    # run_cell with one [rows, H] recurrent mask equals applying that very mask by hand at every step.
    torch.manual_seed(0)
    cell, x = nn.GRUCell(4, 6), torch.randn(2, 5, 4)
    gi = nn.functional.linear(x, cell.weight_ih, cell.bias_ih)
    half = torch.tensor([[0.0, 2.0] * 3] * 2)
    out = run_cell(cell, x, torch.zeros(2, 6), half)
    state = torch.zeros(2, 6)
    for t in range(5):  # the reference applies the very same mask by hand at each step
        state = _gru_masked(cell, gi[:, t], state, half)
        torch.testing.assert_close(out[:, t], state)


def _gru_masked(cell: nn.GRUCell, gi: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    gh = nn.functional.linear(h * mask, cell.weight_hh, cell.bias_hh)
    (i_r, i_z, i_n), (h_r, h_z, h_n) = gi.chunk(3, -1), gh.chunk(3, -1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    return (1 - z) * torch.tanh(i_n + r * h_n) + z * h


def test_row_masks_are_per_row_time_constant_and_batch_independent(model) -> None:
    ref = torch.zeros(1)
    live = rnn_mc.live_from(model, rnn_mc.num_layers(model))
    masks = rnn_mc.row_masks(model, MaskSource([None, 5, 6], "cpu"), live, HIDDEN, ref)
    alone = rnn_mc.row_masks(model, MaskSource([6], "cpu"), live, HIDDEN, ref)
    assert masks and set(masks) == set(alone)
    for site, mask in masks.items():
        assert mask.dim() == 2  # [rows, dim]: no time axis, so every step reuses it
        assert torch.equal(mask[0], torch.ones_like(mask[0]))  # a deterministic row is not dropped
        assert torch.equal(mask[2], alone[site][0])  # a row's mask does not depend on the other rows
    assert not torch.equal(masks[ENC_EMB][1], masks[ENC_EMB][2])


def test_training_draws_a_mask_per_sequence(model) -> None:
    src, mask, dec = _batch([6, 6], [5, 5])
    src[1], dec[1] = src[0], dec[0]  # the same pair twice: only per-sequence masks make the two rows differ
    model.train()
    try:
        torch.manual_seed(0)
        logits = model(input_ids=src, attention_mask=mask, decoder_input_ids=dec).logits
    finally:
        model.eval()
    assert not torch.allclose(logits[0], logits[1])


def test_deterministic_rows_equal_the_eval_forward(model) -> None:
    src, mask, dec = _batch([7, 4, 9], [6, 3, 5])
    with torch.inference_mode():
        ref = model(input_ids=src, attention_mask=mask, decoder_input_ids=dec).logits
        states = rnn_mc.encode(model, src, mask)
        for k in (1, 2, 4):  # top decoder layer, decoder-full, whole model
            hidden = rnn_mc.decoder_hidden(model, states, mask, dec, [None, 11, None, 12, None], [2, 1, 2], k, HIDDEN,
                                           src)
            mine = project(model, hidden)
            for row, item, length in [(0, 0, 6), (2, 1, 3), (4, 2, 5)]:
                torch.testing.assert_close(mine[row, :length], ref[item, :length], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("last_k", [1, 2, 3, 4])
def test_a_rows_scores_do_not_depend_on_batch_or_padding(model, last_k: int) -> None:
    src, mask, dec = _batch([7, 4, 9], [6, 3, 5], seed=2)
    row_seeds, counts = _rows([3, 0, 2], [5, 6, 7])
    with torch.inference_mode():
        states = rnn_mc.encode(model, src, mask)
        batched = rnn_mc.decoder_hidden(model, states, mask, dec, row_seeds, counts, last_k, HIDDEN, src)
        row = 0
        for i, (ls, ld) in enumerate(zip([7, 4, 9], [6, 3, 5], strict=True)):
            alone_states = rnn_mc.encode(model, src[i: i + 1, :ls], mask[i: i + 1, :ls])
            for _ in range(counts[i]):
                alone = rnn_mc.decoder_hidden(model, alone_states, mask[i: i + 1, :ls], dec[i: i + 1, :ld],
                                              [row_seeds[row]], [1], last_k, HIDDEN, src[i: i + 1, :ls])
                torch.testing.assert_close(batched[row, :ld], alone[0], rtol=1e-4, atol=1e-4)
                row += 1


def test_seeds_reproduce_differ_and_the_encoder_is_live_only_past_the_decoder(model) -> None:
    src, mask, dec = _batch([6], [5], seed=4)
    with torch.inference_mode():
        states = rnn_mc.encode(model, src, mask)
        run = lambda seeds, k: rnn_mc.decoder_hidden(model, states, mask, dec, seeds, [len(seeds)], k,  # noqa: E731
                                                     HIDDEN, src)
        a, b, c = run([1, 2, 3], 2), run([1, 2, 3], 2), run([4, 5, 6], 2)
        whole = run([1, 2, 3], 4)
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a[0], a[1])
    assert not torch.allclose(a, whole)  # k = 4 drops out in the encoder too
    with pytest.raises(ValueError, match="input_ids"):
        rnn_mc.decoder_hidden(model, states, mask, dec, [1], [1], 3, HIDDEN)
    assert rnn_mc.mode(model, 1) == "last-1-decoder-layers" and rnn_mc.mode(model, 2) == "decoder-full"
    assert rnn_mc.mode(model, 3) == "decoder-full+last-1-encoder-layers" and rnn_mc.mode(model, 4) == "whole-model"


def test_stochastic_decode_follows_its_own_teacher_forced_argmax(model) -> None:
    # A step-by-step decode under a row's masks is the model its teacher-forced score sees: re-scoring the decode
    # gives the decoded tokens as the argmax at every position.
    src, mask, _ = _batch([6, 8], [2, 2], seed=5)
    seeds, counts = [mix_seed(3, 0), mix_seed(3, 1), mix_seed(4, 0)], [2, 1]
    with torch.inference_mode():
        states = rnn_mc.encode(model, src, mask)
        for k in (1, 4):
            decoded = rnn_decode.stochastic_greedy_decode(model, states, mask, seeds, counts, k, HIDDEN, 6, src)
            for row, (item, tokens) in enumerate(zip([0, 0, 1], decoded, strict=True)):
                dec = torch.tensor([[1, *tokens[:-1]]])
                hidden = rnn_mc.decoder_hidden(model, states[item: item + 1], mask[item: item + 1], dec, [seeds[row]],
                                               [1], k, HIDDEN, src[item: item + 1])
                assert project(model, hidden)[0].argmax(-1).tolist() == tokens


def test_greedy_equals_one_beam_and_beams_do_not_score_worse(model) -> None:
    src, mask, _ = _batch([6, 9, 4], [2, 2, 2], seed=6)
    with torch.inference_mode():
        states = rnn_mc.encode(model, src, mask)
        memory = make_memory(model, states, mask.bool())
        greedy = rnn_decode.greedy_decode(model, memory, 7)
        assert rnn_decode.beam_search(model, memory, 7, 1) == greedy
        assert model.greedy_decode(src, mask, 7) == greedy
        beams = rnn_decode.decode(model, states, mask, 7, 4)
        assert len(beams) == 3 and all(1 <= len(b) <= 7 for b in beams)


def _artifact(root, model: RnnMTModel, tokenizer) -> object:
    manifest = Manifest(task="translation", version=new_version_id(), model_class=type(model).__name__,
                        libraries=library_versions(),
                        dropout={"architecture": "rnn", "mc_sites": ["hidden"], "mc_last_k": 1, "num_layers": 2},
                        default_mc_samples=3, preprocessing={"max_input_tokens": 48, "max_new_tokens": 8},
                        calibration={"temperature": 1.0, "mc_samples": 3})
    return write_artifact(root, manifest, lambda staging: save_model(model, tokenizer, staging))


def test_save_load_round_trip_through_the_artifact_loader(tmp_path) -> None:
    pairs = make_parallel_corpus(40, seed=0)
    tokenizer = train_joint_tokenizer([t for p in pairs for t in (p.source, p.target)], vocab_size=200)
    model = build_rnn_preset("tiny", len(tokenizer), cell="lstm", layers=1, dropout=0.2, seed=3).eval()
    path = _artifact(tmp_path, model, tokenizer)
    predictor = load_predictor(path, PredictorOptions())
    assert isinstance(predictor, TranslationPredictor) and isinstance(predictor.model, RnnMTModel)
    for name, tensor in model.state_dict().items():
        assert torch.equal(predictor.model.state_dict()[name], tensor), name
    facts = predictor.describe()
    assert facts["model_class"] == "RnnMTModel" and facts["num_layers"] == {"encoder": 1, "decoder": 1}
    assert facts["mc"]["mode"] == "decoder-full" and facts["mc"]["scope"].startswith("decoder")
    items = [predictor.prepare(text, {"return_tokens": True}) for text in [pairs[0].source, pairs[1].source]]
    out = predictor.predict(items, [MCRequest(3, 1), MCRequest(3, 2)])
    alone = predictor.predict(items[1:], [MCRequest(3, 2)])[0]
    assert out[1].translation == alone.translation
    assert out[1].uncertainty.mc_log_prob_var == pytest.approx(alone.uncertainty.mc_log_prob_var, rel=1e-4, abs=1e-6)
    assert out[0].uncertainty.mc_log_prob_var > 0  # the dropout is live at MC time
    whole = TranslationPredictor(predictor.model, tokenizer, predictor.manifest,
                                 PredictorOptions(mc_last_k=2)).describe()["mc"]
    assert whole["mode"] == "whole-model" and whole["scope"].startswith("encoder and decoder")
