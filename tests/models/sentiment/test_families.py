"""The fast MC path for RoBERTa and DistilBERT (and BERT) against the library's own forward, and the generic path
for a classifier without one (ALBERT)."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from models.core.dropout import reference_mc_mode
from models.core.padding import pad_ids
from models.sentiment.encoders import DropoutRates, family_of
from models.sentiment.mc import forward_logits, mc_logits, num_layers
from tests.checkpoints import save_classifier

ALL = frozenset({"hidden", "head", "attention"})
HIDDEN_HEAD = frozenset({"hidden", "head"})
IDS = [[2, 15, 40, 7, 9, 3], [2, 77, 3], [2, 5, 6, 8, 10, 11, 12, 3]]


def _load(tmp_path: Path, family: str, dropout: float = 0.1) -> torch.nn.Module:
    path = save_classifier(tmp_path / family, family, labels=("a", "b", "c"), dropout=dropout, seed=3)
    return AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_deterministic_fast_path_equals_library_forward(tmp_path: Path, family: str) -> None:
    model = _load(tmp_path, family)
    assert family_of(model) is not None and num_layers(model) == 2
    ids, mask = pad_ids(IDS, model.config.pad_token_id)
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask).logits
        for last_k in (1, 2):
            got = mc_logits(model, ids, mask, 0, seed=0, last_k=last_k, sites=ALL)
            torch.testing.assert_close(got[:, 0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["roberta", "distilbert"])
def test_full_mc_matches_library_train_mode_in_distribution(tmp_path: Path, family: str) -> None:
    model = _load(tmp_path, family, dropout=0.3)
    ids, mask = pad_ids([IDS[0]], model.config.pad_token_id)
    samples = 2000
    with torch.inference_mode():
        fast = mc_logits(model, ids, mask, samples, seed=4, last_k=2, sites=HIDDEN_HEAD)[0]
        torch.manual_seed(0)
        with reference_mc_mode(model, HIDDEN_HEAD):
            ref = model(input_ids=ids.repeat(samples, 1), attention_mask=mask.repeat(samples, 1)).logits
    for column in range(3):
        f, r = fast[:, column], ref[:, column]
        assert abs(f.mean() - r.mean()) < 6 * r.std() / samples**0.5
        assert 0.88 < float(f.std() / r.std()) < 1.12


@pytest.mark.parametrize("family", ["roberta", "distilbert"])
def test_last_k_reproduces_and_ignores_neighbours(tmp_path: Path, family: str) -> None:
    model = _load(tmp_path, family)
    pad = model.config.pad_token_id
    alone = pad_ids([IDS[1]], pad)
    shared = pad_ids(IDS, pad)
    with torch.inference_mode():
        a = forward_logits(model, *alone, [5], [9], 1, HIDDEN_HEAD)[0]
        b = forward_logits(model, *shared, [0, 5, 3], [1, 9, 2], 1, HIDDEN_HEAD)[1]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert (a.std(dim=0) > 0).all()


def test_rates_per_family(tmp_path: Path) -> None:
    assert DropoutRates.of(_load(tmp_path, "distilbert", 0.2)) == DropoutRates(0.2, 0.2, 0.2)
    assert DropoutRates.of(_load(tmp_path, "roberta", 0.2)) == DropoutRates(0.2, 0.2, 0.2)


def test_generic_path_serves_a_classifier_without_fast_path(tmp_path: Path) -> None:
    model = _load(tmp_path, "albert")
    assert family_of(model) is None and DropoutRates.of(model).any
    ids, mask = pad_ids(IDS, model.config.pad_token_id)
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask).logits
        det = forward_logits(model, ids, mask, [0, 0, 0], [0, 0, 0], 1, HIDDEN_HEAD)
        a = forward_logits(model, ids, mask, [0, 4, 3], [1, 2, 3], 1, HIDDEN_HEAD)
        b = forward_logits(model, ids[1:2], mask[1:2], [4], [2], 1, HIDDEN_HEAD)
        c = forward_logits(model, ids[1:2], mask[1:2], [4], [5], 1, HIDDEN_HEAD)
    torch.testing.assert_close(torch.cat(det), expected)
    assert [x.shape[0] for x in a] == [1, 4, 3]
    torch.testing.assert_close(a[1], b[0])  # the item's seed fixes its masks, whatever shares the batch
    assert not torch.equal(b[0], c[0]) and (b[0].std(dim=0) > 0).all()
    assert not model.training
