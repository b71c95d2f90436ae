"""A hybrid detector's third part (models/core/ood_extra.py): the kNN distance of a second layer's features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.core import ood_extra
from models.core.artifacts import ArtifactError
from models.core.ood import CONFIG_FILE, OODDetector, distances
from models.core.ood_files import load_detector
from tests.models.core.test_ood import CENTRE, FAR, _cluster, _hybrid, _manifest_for, _rewrite_config


def _three_part(weight: float = 0.4, scale: float = 0.05) -> OODDetector:
    two = _hybrid()
    return OODDetector("hybrid", 0, 2.0, {**two.tensors, **ood_extra.tensors_of(_cluster(40, 3, FAR))}, k=3,
                       length_coef=two.length_coef, bigram=two.bigram,
                       hybrid={**two.hybrid, "extra": {"layer": 2, "weight": weight, "scale": scale}})


def test_the_third_part_adds_its_scaled_distance_and_needs_its_layer(tmp_path: Path) -> None:
    detector, two = _three_part(), _hybrid()
    assert detector.layers == (0, 2) and two.layers == (0,)
    first = torch.cat([_cluster(2, 6, CENTRE), _cluster(2, 7, CENTRE)])
    second = torch.cat([_cluster(2, 8, FAR), _cluster(2, 9, CENTRE)])  # like the extra bank, then unlike it
    ids = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4], [1, 2, 3, 5]]
    extra = distances("knn_cosine", {"bank": detector.tensors[ood_extra.BANK]}, second, 3)
    expected = torch.tensor(two.score_items(first, ids)) + 0.4 * extra / 0.05 / 2.0
    got = detector.score_items({0: first, 2: second}, ids)
    assert got == pytest.approx(expected.tolist(), rel=1e-5)
    assert max(got[:2]) < min(got[2:])  # only the second layer tells these apart
    with pytest.raises(ValueError, match=r"layers \[0, 2\]"):
        detector.score_items(first, ids)
    detector.save(tmp_path)
    loaded = load_detector(tmp_path, _manifest_for(tmp_path))
    assert loaded is not None and loaded.config() == detector.config()
    assert loaded.score_items({0: first, 2: second}, ids) == pytest.approx(got)


@pytest.mark.parametrize("change", [{"layer": 0}, {"layer": -1}, {"weight": 0.0}, {"scale": float("nan")},
                                    {"scale": -0.1}], ids=str)
def test_a_malformed_third_part_is_refused(tmp_path: Path, change: dict[str, object]) -> None:
    _three_part().save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    _rewrite_config(tmp_path, hybrid={**config["hybrid"], "extra": {**config["hybrid"]["extra"], **change}})
    with pytest.raises(ArtifactError, match="hybrid extra"):
        load_detector(tmp_path, _manifest_for(tmp_path))


def test_a_bank_without_its_config_a_config_without_its_bank_or_a_bank_of_another_width_is_refused() -> None:
    two, bank = _hybrid(), ood_extra.tensors_of(_cluster(5, 3, FAR))
    with pytest.raises(ValueError, match="without a hybrid extra part"):
        OODDetector("hybrid", 0, 2.0, {**two.tensors, **bank}, k=3, bigram=two.bigram, hybrid=two.hybrid)
    with pytest.raises(ValueError, match="dimension 3, the features 16"):
        OODDetector("hybrid", 0, 2.0, {**two.tensors, **ood_extra.tensors_of(torch.ones(4, 3))}, k=3,
                    bigram=two.bigram, hybrid={**two.hybrid, "extra": {"layer": 2, "weight": 0.3, "scale": 0.1}})
    with pytest.raises(ValueError, match="extra_bank"):
        OODDetector("hybrid", 0, 2.0, dict(two.tensors), k=3, bigram=two.bigram,
                    hybrid={**two.hybrid, "extra": {"layer": 2, "weight": 0.3, "scale": 0.1}})
