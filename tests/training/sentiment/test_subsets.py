"""The sentiment job's subsets: validation parts disjoint by construction (each choice sees its own part), the
test split read as one headline set with the expensive modes on a nested subset."""

from __future__ import annotations

import itertools

import pytest

from training.core.config import make_config
from training.core.splits import Parts, nested, partition
from training.sentiment.config import PRESETS, SentimentConfig
from training.sentiment.data import SubsetSizes, plan_subsets
from training.sentiment.synthetic import load_synthetic


@pytest.fixture(scope="module")
def quick_sized_data():
    # synthetic data with the quick preset's split sizes (5,000 validation, 5,000 test): offline, fast
    return load_synthetic(seed=7, train_size=400, validation_size=5000, test_size=5000)


def test_quick_subsets_are_disjoint_and_nested_by_construction(quick_sized_data) -> None:
    config = make_config(SentimentConfig, PRESETS["quick"], {})
    subsets = plan_subsets(quick_sized_data, config.subset_sizes(), config.split_seed + 1)
    parts = subsets.validation.indices
    assert {name: len(index) for name, index in parts.items()} == {"periodic": 400, "selection": 1600,
                                                                   "calibration": 3000}
    for a, b in itertools.combinations(parts.values(), 2):
        assert not set(a) & set(b)
    assert set().union(*map(set, parts.values())) == set(range(5000))  # the calibration part is the rest
    assert len(subsets.selection_modes) == len(set(subsets.selection_modes)) == 600
    assert set(subsets.selection_modes) <= set(range(1600)), "positions within the selection part"
    assert sorted(subsets.test.indices["headline"]) == list(range(5000)), "the whole test split"
    assert len(set(subsets.test_modes)) == 600 and set(subsets.test_modes) <= set(range(5000))
    # stratified: each part keeps the split's balance
    labels = quick_sized_data.splits["validation"].labels
    for index in parts.values():
        assert abs(sum(labels[i] for i in index) / len(index) - sum(labels) / len(labels)) < 0.01
    record = subsets.record()
    assert record["validation"]["disjoint"] and record["validation"]["parts"]["calibration"] == 3000
    assert record["test"]["test_modes"] == 600 and record["test"]["nested"] == {"test_modes": "headline"}
    # TextSplits of the parts carry the split's texts and labels at those indices
    periodic = subsets.part(quick_sized_data, "periodic")
    validation = quick_sized_data.splits["validation"]
    assert periodic.texts == [validation.texts[i] for i in parts["periodic"]]
    assert periodic.labels == [validation.labels[i] for i in parts["periodic"]]


def test_the_early_stopping_part_stays_put_when_later_sizes_change(quick_sized_data) -> None:
    sizes = SubsetSizes(400, 1600, None, 600, None, 600)
    first = plan_subsets(quick_sized_data, sizes, 1)
    other = plan_subsets(quick_sized_data, SubsetSizes(400, 1000, 2000, None, 3000, 100), 1)
    assert first.validation.indices["periodic"] == other.validation.indices["periodic"]
    assert first == plan_subsets(quick_sized_data, sizes, 1), "same sizes and seed, same subsets"
    with pytest.raises(ValueError, match="need"):
        plan_subsets(quick_sized_data, SubsetSizes(4000, 1600, None, None, None, None), 1)


def test_the_config_refuses_two_parts_that_both_take_the_rest() -> None:
    with pytest.raises(ValueError, match="at most one"):
        make_config(SentimentConfig, PRESETS["quick"], {"selection_size": None})
    with pytest.raises(ValueError, match="calibration_maps"):
        make_config(SentimentConfig, PRESETS["quick"], {"calibration_maps": ("beta",)})


def test_generic_partition_and_nested_helpers() -> None:
    labels = [0] * 30 + [1] * 70
    parts = partition("validation", labels, {"a": 20, "b": None, "c": 30}, seed=3)
    assert [len(parts.indices[k]) for k in "abc"] == [20, 50, 30]
    assert parts.of("a", list(range(100))) == parts.indices["a"]
    inner = nested(parts.indices["b"], labels, 10, seed=1)
    assert len(inner) == 10 and set(inner) <= set(parts.indices["b"]) and sum(labels[i] for i in inner) == 7
    assert nested(parts.indices["b"], labels, None, seed=1) == parts.indices["b"]
    with pytest.raises(ValueError, match="both 'a' and 'b'"):
        Parts("validation", {"a": [1, 2], "b": [2, 3]})
