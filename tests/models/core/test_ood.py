"""models/core/ood.py: pooling, the two distances, the 5 % threshold, the abstain rule, save/load and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.core.artifacts import ArtifactError, Manifest, sha256_file
from models.core.ood import (
    CONFIG_FILE,
    STATS_FILE,
    OODDetector,
    abstain_decision,
    distances,
    fit_statistics,
    flag_threshold,
    length_adjusted,
    pool,
)
from models.core.ood_files import load_detector
from models.core.ood_methods import group_threshold, length_slope, transfer_rate
from models.core.token_density import TokenBigram
from models.core.token_trigram import TokenTrigram


def _cluster(n: int, seed: int, centre: torch.Tensor, spread: float = 0.05) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(centre + spread * torch.randn(n, centre.numel(), generator=g), dim=-1)


CENTRE = torch.nn.functional.normalize(torch.arange(1.0, 17.0), dim=0)
FAR = torch.nn.functional.normalize(torch.arange(16.0, 0.0, -1.0) * torch.tensor([1.0, -1.0] * 8), dim=0)


def test_pool_averages_real_tokens_only_and_normalises() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(pool(hidden, mask), torch.tensor([[1.0, 0.0]]))
    # the first position (an attention sink in a causal LM) left out, unless it is the only one
    sink = torch.tensor([[[0.0, 50.0], [1.0, 0.0]], [[0.0, 50.0], [9.0, 9.0]]])
    assert torch.allclose(pool(sink, torch.tensor([[1, 1], [1, 0]]), "mean_skip_first"),
                          torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError):
        pool(hidden, mask, "max")


@pytest.mark.parametrize("method", ["knn_cosine", "mahalanobis"])
def test_training_like_inputs_score_below_unlike_ones(method: str) -> None:
    bank = _cluster(200, 0, CENTRE)
    stats = fit_statistics(method, bank)
    near = distances(method, stats, _cluster(50, 1, CENTRE), k=5)
    far = distances(method, stats, _cluster(50, 2, FAR), k=5)
    assert float(near.max()) < float(far.min())


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.1, 0.5])
def test_threshold_flags_at_most_the_rate_by_construction(rate: float) -> None:
    values = torch.cat([torch.rand(997, generator=torch.Generator().manual_seed(3)), torch.full((40,), 0.5)])  # ties
    threshold = flag_threshold(values, rate)
    flagged = int((values > threshold).sum())
    assert flagged <= int(rate * len(values))
    assert flagged >= int(rate * len(values)) - 40  # ties may only keep it lower, never past the rate


def test_a_group_threshold_bounds_every_large_group_and_the_whole() -> None:
    gen = torch.Generator().manual_seed(5)
    easy, hard, tiny = torch.rand(300, generator=gen), 0.3 + torch.rand(60, generator=gen), torch.full((5,), 9.0)
    values = torch.cat([easy, hard, tiny])
    groups = ["easy"] * 300 + ["hard"] * 60 + ["tiny"] * 5
    threshold, own = group_threshold(values, groups, 0.05, min_group=40)
    assert set(own) == {"easy", "hard"}  # "tiny" is under min_group: it only counts in the pooled quantile
    assert threshold == max(own["hard"], flag_threshold(values, 0.05)) > flag_threshold(values, 0.05)
    for part in (easy, hard, values):
        assert int((part > threshold).sum()) <= int(0.05 * len(part))
    assert group_threshold(values, ["all"] * len(values), 0.05, 40)[0] == flag_threshold(values, 0.05)
    with pytest.raises(ValueError, match="groups"):
        group_threshold(values, groups[:-1], 0.05, 40)


def test_the_transfer_rate_is_the_largest_whose_threshold_holds_for_a_group_left_out() -> None:
    gen = torch.Generator().manual_seed(7)
    rates = [0.05, 0.04, 0.03, 0.02, 0.01]
    like = [torch.rand(2000, generator=gen) for _ in range(3)]  # three large sources of the same distribution
    rate, left_out = transfer_rate(torch.cat(like), ["a"] * 2000 + ["b"] * 2000 + ["c"] * 2000, 0.05, 40, rates)
    assert rate >= 0.04 and set(left_out) == {"a", "b", "c"} and max(left_out.values()) <= 0.05  # sampling margin
    # a source with a tail the others lack (4 % far out): only a threshold at 1 % of them holds for it
    heavy = torch.cat([torch.rand(192, generator=gen), 2.0 + torch.rand(8, generator=gen)])
    values, groups = torch.cat([like[0][:200], like[1][:200], heavy]), ["a"] * 200 + ["b"] * 200 + ["heavy"] * 200
    rate, left_out = transfer_rate(values, groups, 0.05, 40, rates)
    assert rate == 0.01 and max(left_out.values()) <= 0.05
    inside = torch.tensor([g == "heavy" for g in groups])
    for larger in (0.05, 0.04, 0.03, 0.02):  # every larger rate flags more than 5 % of the heavy source left out
        threshold, _ = group_threshold(values[~inside], [g for g in groups if g != "heavy"], larger, 40)
        assert float((values[inside] > threshold).double().mean()) > 0.05
    # one counted group: nothing to leave out
    assert transfer_rate(like[0], ["a"] * 2000, 0.05, 40, rates) == (0.05, {})
    with pytest.raises(ValueError, match="rates"):
        transfer_rate(values, groups, 0.05, 40, [0.1])
    with pytest.raises(ValueError, match="groups"):
        transfer_rate(values, groups[:-1], 0.05, 40, rates)


def test_abstain_reason_puts_out_of_distribution_first() -> None:
    assert abstain_decision(True, True) == (True, "out_of_distribution")
    assert abstain_decision(True, False) == (True, "out_of_distribution")
    assert abstain_decision(False, True) == (True, "uncertain")
    assert abstain_decision(False, False) == (False, None)


def _detector(method: str = "knn_cosine") -> OODDetector:
    bank = _cluster(64, 4, CENTRE)
    stats = fit_statistics(method, bank)
    threshold = flag_threshold(distances(method, stats, _cluster(40, 5, CENTRE), 3), 0.05)
    return OODDetector(method=method, layer=1, threshold=threshold, tensors=stats, k=3, info={"fitted_on": "toy"})


def _manifest_for(directory: Path) -> Manifest:
    files = {name: sha256_file(directory / name) for name in (CONFIG_FILE, STATS_FILE) if (directory / name).exists()}
    return Manifest(task="sentiment", version="v", model_class="X", files=files)


@pytest.mark.parametrize("method", ["knn_cosine", "mahalanobis"])
def test_save_load_round_trip_scores_the_same(tmp_path: Path, method: str) -> None:
    detector = _detector(method)
    detector.save(tmp_path)
    loaded = load_detector(tmp_path, _manifest_for(tmp_path))
    assert loaded is not None and loaded.config() == detector.config()
    probe = torch.cat([_cluster(5, 6, CENTRE), _cluster(5, 7, FAR)])
    assert loaded.scores(probe) == pytest.approx(detector.scores(probe))
    assert max(loaded.scores(probe)[:5]) < 1.0 < min(loaded.scores(probe)[5:])
    assert not any(p.suffix in {".pt", ".pkl", ".bin"} for p in tmp_path.rglob("*"))


def test_an_artifact_without_statistics_has_no_detector(tmp_path: Path) -> None:
    assert load_detector(tmp_path, _manifest_for(tmp_path)) is None


def _rewrite_config(directory: Path, **changes: object) -> None:
    path = directory / CONFIG_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("corrupt", [
    lambda d: _rewrite_config(d, threshold=-1.0),
    lambda d: _rewrite_config(d, threshold=None),
    lambda d: _rewrite_config(d, method="isolation_forest"),
    lambda d: _rewrite_config(d, layer="two"),
    lambda d: _rewrite_config(d, k=0),
    lambda d: _rewrite_config(d, feature_dim=3),
    lambda d: (d / CONFIG_FILE).write_text("{not json"),
    lambda d: (d / STATS_FILE).write_bytes(b"\x00garbage"),
    lambda d: (d / STATS_FILE).unlink(),
], ids=["negative-threshold", "no-threshold", "unknown-method", "bad-layer", "bad-k", "wrong-dim", "bad-json",
        "garbled-stats", "half-present"])
def test_malformed_statistics_are_refused(tmp_path: Path, corrupt) -> None:
    _detector().save(tmp_path)
    corrupt(tmp_path)
    with pytest.raises(ArtifactError, match="OOD statistics"):
        load_detector(tmp_path, _manifest_for(tmp_path))


def test_wrong_tensors_and_unlisted_files_are_refused(tmp_path: Path) -> None:
    detector = _detector("mahalanobis")
    detector.save(tmp_path)
    with pytest.raises(ArtifactError, match="not in the manifest"):
        load_detector(tmp_path, Manifest(task="sentiment", version="v", model_class="X", files={}))
    from safetensors.torch import save_file
    save_file({"mean": torch.zeros(16), "precision": torch.full((16, 16), float("nan"))}, str(tmp_path / STATS_FILE))
    with pytest.raises(ArtifactError, match="finite"):
        load_detector(tmp_path, _manifest_for(tmp_path))
    save_file({"bank": torch.zeros(4, 16)}, str(tmp_path / STATS_FILE))
    with pytest.raises(ArtifactError, match="expected"):
        load_detector(tmp_path, _manifest_for(tmp_path))


def test_the_length_term_is_saved_and_needs_lengths(tmp_path: Path) -> None:
    plain = _detector()
    detector = OODDetector(plain.method, plain.layer, plain.threshold, plain.tensors, k=plain.k, length_coef=-0.02)
    detector.save(tmp_path)
    loaded = load_detector(tmp_path, _manifest_for(tmp_path))
    assert loaded is not None and loaded.length_coef == -0.02 and loaded.config()["length_coef"] == -0.02
    probe = _cluster(3, 6, CENTRE)
    raw = distances("knn_cosine", plain.tensors, probe, plain.k)
    expected = (raw + 0.02 * torch.tensor([4.0, 20.0, 200.0]).log()) / plain.threshold
    assert loaded.scores(probe, [4, 20, 200]) == pytest.approx(expected.tolist(), rel=1e-5)
    assert plain.scores(probe) == plain.scores(probe, [4, 20, 200])  # no term: lengths do not matter
    with pytest.raises(ValueError, match="lengths"):
        loaded.scores(probe)
    with pytest.raises(ValueError, match="length_coef"):
        OODDetector(plain.method, plain.layer, plain.threshold, plain.tensors, length_coef=float("nan"))


def test_length_slope_and_adjustment() -> None:
    lengths = torch.tensor([5, 10, 50, 200])
    distance = 0.5 - 0.1 * lengths.double().log()
    assert length_slope(distance, lengths) == pytest.approx(-0.1)
    assert length_slope(distance, torch.tensor([7, 7, 7, 7])) == 0.0
    flat = length_adjusted(distance.float(), lengths.tolist(), -0.1)
    assert torch.allclose(flat, torch.full((4,), 0.5), atol=1e-6)


def _hybrid(weight: float = 0.5, scales: object = (0.02, 0.5)) -> OODDetector:
    density = TokenBigram.fit([[1, 2, 3, 4], [1, 2, 3, 5], [2, 3, 4, 5]], vocab_size=8)
    return OODDetector("hybrid", 0, 2.0, {**fit_statistics("knn_cosine", _cluster(50, 0, CENTRE)), **density.tensors},
                       k=3, length_coef=-0.01, bigram={"lam": density.lam, "alpha": density.alpha},
                       hybrid={"feature_method": "knn_cosine", "weight": weight, "scales": list(scales)})


def test_a_hybrid_mixes_the_scaled_distance_and_bigram_nll_and_round_trips(tmp_path: Path) -> None:
    detector = _hybrid()
    features = torch.cat([_cluster(2, 6, CENTRE), _cluster(2, 7, FAR)])
    ids = [[1, 2, 3, 4], [1, 2, 3, 4, 5], [7, 6, 7, 6], [6, 0, 7]]  # familiar pairs, then never-seen ones
    lengths = [len(x) for x in ids]
    feature = length_adjusted(distances("knn_cosine", detector.tensors, features, 3), lengths, -0.01)
    nll = TokenBigram({n: detector.tensors[n] for n in ("keys", "counts", "unigram", "context")}).nll(ids)
    expected = (0.5 * feature / 0.02 + 0.5 * nll / 0.5) / 2.0
    assert detector.score_items(features, ids) == pytest.approx(expected.tolist(), rel=1e-5)
    assert max(detector.score_items(features, ids)[:2]) < min(detector.score_items(features, ids)[2:])
    with pytest.raises(ValueError, match="features"):
        detector.score_items(None, ids)
    with pytest.raises(ValueError, match="score_items"):  # the feature part alone is not its score
        detector.scores(features, lengths)
    detector.save(tmp_path)
    loaded = load_detector(tmp_path, _manifest_for(tmp_path))
    assert loaded is not None and loaded.config() == detector.config() and loaded.feature_dim == CENTRE.numel()
    assert loaded.score_items(features, ids) == pytest.approx(detector.score_items(features, ids))


@pytest.mark.parametrize("change", [{"weight": 1.0}, {"scales": [0.1]}, {"scales": [0.1, -1.0]},
                                    {"feature_method": "token_bigram"}], ids=str)
def test_a_malformed_hybrid_is_refused(tmp_path: Path, change: dict[str, object]) -> None:
    _hybrid().save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    _rewrite_config(tmp_path, hybrid={**config["hybrid"], **change})
    with pytest.raises(ArtifactError, match="hybrid"):
        load_detector(tmp_path, _manifest_for(tmp_path))
    with pytest.raises(ValueError, match="tensors"):  # the bigram half missing
        OODDetector("hybrid", 0, 1.0, fit_statistics("knn_cosine", _cluster(5, 0, CENTRE)),
                    hybrid={"feature_method": "knn_cosine", "weight": 0.5, "scales": [1.0, 1.0]})


TRIGRAM_CORPUS = [[1, 5, 6, 7, 2], [1, 5, 6, 8, 2], [1, 9, 6, 7, 2], [1, 5, 6, 7, 2]]


def test_a_detector_serves_the_trigram_alone_and_in_a_hybrid_after_a_round_trip(tmp_path: Path) -> None:
    density = TokenTrigram.fit(TRIGRAM_CORPUS, 12)
    smoothing = {"discount": density.discount, "alpha": density.alpha}
    ids = [[1, 5, 6, 7, 2], [1, 11, 10, 3, 2]]
    alone = OODDetector("token_trigram", 0, 2.0, dict(density.tensors), trigram=smoothing)
    assert alone.uses_tokens and alone.feature_dim == 12
    assert alone.scores_of_ids(ids) == pytest.approx((density.nll(ids) / 2.0).tolist())
    features = _cluster(2, 1, CENTRE)
    hybrid = OODDetector("hybrid", 0, 2.0, {**fit_statistics("knn_cosine", _cluster(50, 0, CENTRE)),
                                            **density.tensors}, k=3, trigram=smoothing,
                         hybrid={"feature_method": "knn_cosine", "weight": 0.5, "scales": [0.02, 0.5],
                                 "density": "token_trigram"})
    for detector, directory in ((alone, tmp_path / "alone"), (hybrid, tmp_path / "hybrid")):
        detector.save(directory)
        loaded = load_detector(directory, _manifest_for(directory))
        assert loaded is not None and loaded.density_method == "token_trigram"
        assert loaded.score_items(features, ids) == pytest.approx(detector.score_items(features, ids))
    feature = hybrid._feature_distance(features, [5, 5])
    want = (0.5 * feature / 0.02 + 0.5 * density.nll(ids) / 0.5) / 2.0
    assert hybrid.score_items(features, ids) == pytest.approx(want.tolist(), rel=1e-5)
    _rewrite_config(tmp_path / "hybrid", hybrid={**hybrid.hybrid, "density": "token_4gram"})
    with pytest.raises(ArtifactError, match="hybrid density"):
        load_detector(tmp_path / "hybrid", _manifest_for(tmp_path / "hybrid"))
    with pytest.raises(ValueError, match="expected"):  # a trigram hybrid holding bigram counts
        OODDetector("hybrid", 0, 1.0, {**fit_statistics("knn_cosine", _cluster(5, 0, CENTRE))},
                    hybrid={"feature_method": "knn_cosine", "weight": 0.5, "scales": [1.0, 1.0],
                            "density": "token_trigram"})
