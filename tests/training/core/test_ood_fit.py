"""fit_from_features on synthetic features: the flag threshold's share is lowered until a threshold fitted without
each validation group holds for it (leave one group out); each candidate reports what its line flags of each kind."""

from __future__ import annotations

import pytest
import torch

from models.core.token_density import TokenBigram
from training.core.ood_fit import fit_from_features
from training.core.ood_sets import OODSets, OODSettings, Probes


def _near(n: int, gen: torch.Generator, far: int = 0) -> torch.Tensor:
    """n unit vectors around e0, the last `far` of them around e1 (out of the bank's region)."""
    x = torch.zeros(n, 8)
    x[:, 0] = 1.0
    x[n - far:, 0], x[n - far:, 1] = 0.0, 1.0
    return torch.nn.functional.normalize(x + 0.3 * torch.randn(n, 8, generator=gen), dim=1)


def _extracted(parts: dict[str, torch.Tensor]) -> dict:
    return {name: ({0: x}, torch.full((len(x),), 10), list(range(len(x))), [(1,)] * len(x))
            for name, x in parts.items()}


def _sets(sizes: dict[str, int], threshold_groups: list[str] | None, probe_kinds: list[str]) -> OODSets:
    def texts(name: str) -> list[str]:
        return [f"{name} {i}" for i in range(sizes[name])]
    return OODSets(bank=texts("bank"), choice=texts("choice"), threshold=texts("threshold"),
                   choice_probes=Probes(texts("choice_probes"), probe_kinds), test=texts("test"),
                   test_probes=Probes(texts("test_probes"), probe_kinds), threshold_groups=threshold_groups)


def test_a_group_whose_tail_the_others_lack_lowers_the_flag_share_until_it_holds() -> None:
    gen = torch.Generator().manual_seed(11)
    parts = {"bank": _near(300, gen), "choice": _near(100, gen), "choice_probes": _near(40, gen, far=40),
             "test": _near(100, gen), "test_probes": _near(40, gen, far=40),
             "threshold": torch.cat([_near(100, gen), _near(100, gen), _near(100, gen, far=3)])}
    groups = ["a"] * 100 + ["b"] * 100 + ["tail"] * 100
    settings = OODSettings(layers=[0], methods=("knn_cosine",), k=5)
    sizes = {name: len(x) for name, x in parts.items()}
    _, report = fit_from_features(_extracted(parts), _sets(sizes, groups, ["far"] * 40), settings)
    chosen = report["chosen"]
    assert chosen["flag_rate_target"] < 0.05  # at 5 %, a threshold of "a" and "b" flags > 5 % of "tail"
    assert set(chosen["left_out_flag_rate_by_group"]) == {"a", "b", "tail"}
    assert max(chosen["left_out_flag_rate_by_group"].values()) <= 0.05
    assert all(rate <= chosen["flag_rate_target"] for rate in report["validation_flag_rate_by_group"].values())
    # without groups there is nothing to leave out: the share is the bound itself
    _, pooled = fit_from_features(_extracted(parts), _sets(sizes, None, ["far"] * 40), settings)
    assert pooled["chosen"]["flag_rate_target"] == 0.05 and pooled["chosen"]["left_out_flag_rate_by_group"] == {}
    assert pooled["chosen"]["threshold"] <= chosen["threshold"]


def _at(s: torch.Tensor) -> torch.Tensor:
    """Unit vectors at angle atan(s) from e0: against a bank of e0 alone, the kNN distance grows with s."""
    x = torch.zeros(len(s), 8)
    x[:, 0], x[:, 1] = 1.0, s
    return torch.nn.functional.normalize(x, dim=1)


def test_each_candidate_reports_what_a_line_at_the_choice_texts_quantile_flags_of_each_kind() -> None:
    inside = _at(torch.linspace(0.0, 1.0, 100))
    # kind "x" far out; kind "y" overlapping the in-domain tail: a line at 5 % of the choice texts (s = 94/99)
    # flags every "x" and the three "y" beyond it (s = 0.6 + 0.4 i/19, i = 17, 18, 19)
    probes = torch.cat([_at(torch.full((20,), 5.0)), _at(torch.linspace(0.6, 1.0, 20))])
    parts = {"bank": _at(torch.zeros(50)), "choice": inside, "threshold": inside, "test": inside,
             "choice_probes": probes, "test_probes": probes}
    sets = _sets({name: len(x) for name, x in parts.items()}, None, ["x"] * 20 + ["y"] * 20)
    _, report = fit_from_features(_extracted(parts), sets, OODSettings(layers=[0], methods=("knn_cosine",), k=5))
    caught = report["candidates"]["knn_cosine/layer_0"]["validation_flag_rate_by_kind"]
    assert caught["x"] == 1.0 and caught["y"] == pytest.approx(3 / 20)


def test_settings_refuse_a_share_outside_0_1() -> None:
    with pytest.raises(ValueError, match="transfer_fractions"):
        OODSettings(layers=[0], transfer_fractions=(1.0, 1.5))


def test_a_third_part_is_chosen_when_a_second_layer_sees_what_the_first_does_not() -> None:
    gen = torch.Generator().manual_seed(5)
    n = {"bank": 200, "choice": 80, "threshold": 100, "test": 80, "choice_probes": 60, "test_probes": 60}

    def layers(name: str) -> dict[int, torch.Tensor]:
        if "probes" not in name:
            return {0: _near(n[name], gen), 1: _near(n[name], gen)}
        half = n[name] // 2  # kind "a" is unlike the bank at layer 0 only, kind "b" at layer 1 only
        return {0: torch.cat([_near(half, gen, far=half), _near(half, gen)]),
                1: torch.cat([_near(half, gen), _near(half, gen, far=half)])}

    ids = [(1, 2, 3)]  # one token pattern everywhere: the density cannot tell the kinds apart
    extracted = {name: (layers(name), torch.full((count,), 10), list(range(count)), ids * count)
                 for name, count in n.items()}
    density = TokenBigram.fit([list(ids[0])] * 10, vocab_size=5)
    kinds = ["a"] * 30 + ["b"] * 30
    settings = OODSettings(layers=[0, 1], methods=("knn_cosine", "token_bigram", "hybrid"), k=5)
    detector, report = fit_from_features(extracted, _sets(n, None, kinds), settings, {"token_bigram": density})
    assert "*knn_cosine/layer_" in report["chosen"]["candidate"] and sorted(detector.layers) == [0, 1]
    assert report["test"]["flag_rate"]["a"] > 0.8 and report["test"]["flag_rate"]["b"] > 0.8
    assert report["test"]["flag_rate"]["in_domain"] <= 0.1
    # served as a request is: both layers' features and the ids give the scores the fit drew its line on
    scores = torch.tensor(detector.score_items(extracted["threshold"][0], extracted["threshold"][3]))
    assert float((scores > 1.0).double().mean()) <= 0.05
