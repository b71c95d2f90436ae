"""models/core/ood_projection.py: the ridge map onto a teacher's space, and a detector that carries it (scores,
round trip, refusals)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from models.core.artifacts import ArtifactError, Manifest, sha256_file
from models.core.ood import CONFIG_FILE, STATS_FILE, OODDetector, distances, fit_statistics
from models.core.ood_files import load_detector
from models.core.ood_projection import fit_projection, project


def _rows(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


MAP = torch.randn(8, 5, generator=torch.Generator().manual_seed(9))
SHIFT = torch.randn(5, generator=torch.Generator().manual_seed(10))


def _teacher(x: torch.Tensor) -> torch.Tensor:  # a linear teacher: what the ridge map should recover
    return torch.nn.functional.normalize(x @ MAP + SHIFT, dim=-1)


def test_a_small_ridge_recovers_a_linear_teacher_and_a_large_one_shrinks_to_its_mean() -> None:
    train, held_out = _rows(300, 8, 0), _rows(50, 8, 1)
    recovered = project(fit_projection(train, train @ MAP + SHIFT, 1e-6), held_out)
    assert float(torch.nn.functional.cosine_similarity(recovered, _teacher(held_out)).min()) > 0.999
    assert recovered.shape == (50, 5) and torch.allclose(recovered.norm(dim=-1), torch.ones(50))
    flat = fit_projection(train, _teacher(train), 1e6)
    mean_direction = torch.nn.functional.normalize(_teacher(train).mean(dim=0), dim=0)
    assert float((project(flat, held_out) @ mean_direction).min()) > 0.99
    assert project({}, held_out) is held_out  # no projection: the features as they are


@pytest.mark.parametrize("features, teacher, ridge", [
    (torch.zeros(10, 4), torch.zeros(9, 3), 1.0), (torch.zeros(1, 4), torch.zeros(1, 3), 1.0),
    (torch.zeros(10, 4), torch.zeros(10, 3), 0.0)], ids=["rows-differ", "one-row", "no-ridge"])
def test_bad_fits_are_refused(features: torch.Tensor, teacher: torch.Tensor, ridge: float) -> None:
    with pytest.raises(ValueError):
        fit_projection(features, teacher, ridge)


def _detector() -> tuple[OODDetector, torch.Tensor]:
    train = _rows(120, 8, 2)
    projection = fit_projection(train, _teacher(train), 0.01)
    stats = {**fit_statistics("knn_cosine", project(projection, train)), **projection}
    return OODDetector(method="knn_cosine", layer=3, threshold=0.05, tensors=stats, k=3), train


def _manifest(directory: Path) -> Manifest:
    return Manifest(task="sentiment", version="v", model_class="X",
                    files={name: sha256_file(directory / name) for name in (CONFIG_FILE, STATS_FILE)})


def test_a_projected_detector_scores_in_the_teacher_space_and_round_trips(tmp_path: Path) -> None:
    detector, train = _detector()
    assert detector.feature_dim == 8 and detector.config()["feature_dim"] == 8
    probe = _rows(20, 8, 3)
    expected = distances("knn_cosine", detector.tensors, project(detector.tensors, probe), 3) / 0.05
    assert detector.scores(probe) == pytest.approx(expected.tolist(), abs=1e-6)
    detector.save(tmp_path)
    loaded = load_detector(tmp_path, _manifest(tmp_path))
    assert loaded is not None and loaded.scores(probe) == pytest.approx(detector.scores(probe), abs=1e-6)
    with pytest.raises(ValueError, match="dimension 5, the detector 8"):
        detector.scores(_rows(2, 5, 4))


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("proj_out_mean"), "without the rest"),
    (lambda t: t.update(proj_weight=torch.zeros(8, 4)), "do not match"),
    (lambda t: t.update(proj_weight=torch.zeros(8, 4), proj_out_mean=torch.zeros(4)), "maps to 4 dimensions"),
    (lambda t: t.update(proj_in_mean=torch.full((8,), float("nan"))), "finite"),
], ids=["half-present", "shapes", "output-dim", "nan"])
def test_a_malformed_projection_is_refused(tmp_path: Path, change, message: str) -> None:
    detector, _ = _detector()
    detector.save(tmp_path)
    tensors = load_file(str(tmp_path / STATS_FILE))
    change(tensors)
    save_file(tensors, str(tmp_path / STATS_FILE))
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config.pop("feature_dim")
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=message):
        load_detector(tmp_path, _manifest(tmp_path))
