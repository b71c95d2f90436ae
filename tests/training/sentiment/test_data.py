"""Cleaning, de-duplication, stratified splits, the synthetic set and the batchers."""

import collections

import pytest

from training.core.batching import LengthGroupedBatches, eval_batches
from training.core.splits import TextSplit, stratified_split
from training.sentiment.data import clean_review, deduplicate
from training.sentiment.synthetic import load_synthetic, make_examples


def test_clean_review() -> None:
    raw = "Great film.<br /><br />Really <i>great</i>&#8230;  <BR>Loved it <3 < Cough >\n"
    assert clean_review(raw) == "Great film. Really great… Loved it <3 < Cough >"


def test_deduplicate_keeps_first_and_drops_conflicts() -> None:
    texts, labels, stats = deduplicate(["a", "b", "a", "c", "c"], [1, 0, 1, 0, 1])
    assert texts == ["a", "b"] and labels == [1, 0]
    assert stats == {"duplicates_removed": 2, "conflicting_dropped": 1}


def test_stratified_split_is_disjoint_stratified_and_stable() -> None:
    labels = [0] * 300 + [1] * 700
    split = stratified_split(labels, {"test": 100, "validation": 200, "train": None}, seed=3)
    assert [len(split[k]) for k in ("test", "validation", "train")] == [100, 200, 700]
    assert len(set().union(*map(set, split.values()))) == 1000
    for name, n in (("test", 100), ("validation", 200)):
        assert collections.Counter(labels[i] for i in split[name]) == {0: 0.3 * n, 1: 0.7 * n}
    other = stratified_split(labels, {"test": 100, "validation": 50, "train": None}, seed=3)
    assert other["test"] == split["test"], "test must not move when a later split changes"
    assert stratified_split(labels, {"test": 100, "validation": 200, "train": None}, seed=4)["test"] != split["test"]
    with pytest.raises(ValueError):
        stratified_split(labels, {"test": 600, "validation": 600}, seed=0)
    with pytest.raises(ValueError):
        stratified_split(labels, {"a": None, "b": None}, seed=0)


def test_take_is_a_fixed_stratified_subset() -> None:
    split = TextSplit([str(i) for i in range(100)], [i % 2 for i in range(100)])
    sub = split.take(10, seed=1)
    assert len(sub) == 10 and sum(sub.labels) == 5
    assert sub == split.take(10, seed=1)
    assert split.take(None, seed=1) is split and split.take(1000, seed=1) is split


def test_synthetic_is_deterministic_balanced_and_noisy() -> None:
    a, b = load_synthetic(seed=1), load_synthetic(seed=1)
    assert a.splits == b.splits and a.source["sha256"] == b.source["sha256"]
    assert a.sizes() == {"train": 400, "validation": 150, "test": 150}
    assert a.source["splits"] == a.sizes()
    clean, noisy = make_examples(400, seed=2, noise=0.0), make_examples(400, seed=2, noise=0.2)
    assert clean.texts == noisy.texts
    flipped = sum(x != y for x, y in zip(clean.labels, noisy.labels, strict=True))
    assert 40 < flipped < 120
    assert sum(clean.labels) == 200
    assert any(" but " in t for t in clean.texts) and any(" not " in t for t in clean.texts)


def test_length_grouped_batches_cover_each_example_once_per_epoch() -> None:
    ids = [[1] * n for n in range(1, 101)]
    labels = [n % 2 for n in range(100)]
    batches = LengthGroupedBatches(ids, labels, batch_size=8, pad_id=0, seed=0, pool_batches=4)
    assert len(batches) == 13
    first = batches.batch_indices()
    assert sorted(i for b in first for i in b) == list(range(100))
    # grouping by length cuts padding well below that of plain shuffled batches
    def padded(batch_lists: list[list[int]]) -> int:
        return sum(len(b) * max(len(ids[i]) for i in b) for b in batch_lists)

    plain = LengthGroupedBatches(ids, labels, batch_size=8, pad_id=0, seed=0, pool_batches=1).batch_indices()
    assert padded(first) - 5050 < 0.5 * (padded(plain) - 5050)
    batches.set_epoch(1)
    assert batches.batch_indices() != first
    batches.set_epoch(0)
    assert batches.batch_indices() == first
    out = list(batches)
    assert len(out) == 13
    for b in out:
        assert b["input_ids"].shape == b["attention_mask"].shape
        assert b["labels"].shape[0] == b["input_ids"].shape[0]
        assert (b["attention_mask"].sum(dim=1) == (b["input_ids"] != 0).sum(dim=1)).all()


def test_eval_batches_longest_first_and_complete() -> None:
    ids = [[1] * n for n in (3, 9, 1, 5, 7)]
    seen = []
    for index, input_ids, mask in eval_batches(ids, 2, pad_id=0):
        seen.extend(index)
        assert input_ids.shape[1] == max(len(ids[i]) for i in index)
        assert mask.sum().item() == sum(len(ids[i]) for i in index)
    assert seen == [1, 4, 3, 0, 2]


@pytest.mark.data
def test_real_imdb_is_cleaned_deduplicated_and_split() -> None:
    from pathlib import Path

    from training.core.fetch import IMDB, ensure_archive
    from training.sentiment.data import load_imdb

    data = load_imdb(ensure_archive(IMDB, Path(".cache")), seed=1234)
    assert data.sizes() == {"train": 39578, "validation": 5000, "test": 5000}
    assert data.source["duplicates_removed"] == 422 and data.source["rows"] == 50000
    assert data.source["sha256"] == IMDB.sha256
    test = set(data.splits["test"].texts)
    assert not test & set(data.splits["train"].texts) and not test & set(data.splits["validation"].texts)
    assert not any("<br" in t.lower() for t in data.splits["train"].texts[:5000])
    assert abs(sum(data.splits["test"].labels) - 2500) < 30
