"""The jobs' OOD step (training/core/ood_job.py) and the refit CLI run the same code on the same sets: the tiny
generation job with `--ood true` writes a served detector and the probe kind × measure table, `python -m
training.ood --task generation` on that artifact fits the same detector; the switch and its skips; translation's
sets. The probe archives are replaced by in-memory pools (tests stay offline)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from models.core.artifacts import verify_artifact
from models.core.predictor import MCRequest, PredictorOptions
from models.generation.predictor import GenerationPredictor
from models.sentiment.predictor import SentimentPredictor
from tests.factories import make_tiny_sentiment_artifact
from training.core import ood_probes
from training.core.fetch import FetchError
from training.core.ood_job import fit_for_job, with_ood
from training.core.ood_sets import OODSets, OODSizes, Probes
from training.generation.job import main as generation_main
from training.ood.__main__ import main as ood_main
from training.ood.ceiling import main as ceiling_main
from training.translation.data import load_synthetic_translation
from training.translation.probes import ood_sets

_WORDS = {"bible": "unto lord thee thou hath spake israel moses begat", "shakespeare": "thy doth prithee o hark anon",
          "austen": "sister estate fortune ball carriage regiment", "news": "shares index startup software cloud app"}


def _pool(kind: str) -> list[str]:
    rng = random.Random(kind)
    words = _WORDS[kind].split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(8, 14))).capitalize() + "." for _ in range(200)]


@pytest.fixture
def offline_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in ood_probes.POOLS:
        monkeypatch.setitem(ood_probes.POOLS, kind, lambda cache, kind=kind: _pool(kind))


def test_generation_job_fits_ood_and_the_cli_refits_the_same(tmp_path: Path, offline_probes: None) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert generation_main(["--preset", "tiny", "--ood", "true", "--output-dir", str(out),
                            "--cache-dir", str(cache)]) == 0
    (artifact,) = (out / "generation").iterdir()
    manifest = verify_artifact(artifact)
    report = manifest.metrics["ood"]
    assert {"ood/ood.json", "ood/stats.safetensors", "reports/ood.json"} <= set(manifest.files)
    assert set(report["table"]) == {"bible", "shakespeare", "news", "all"}  # not the corpus' own kind (austen)
    assert report["chosen"]["pooling"] == "mean_skip_first" and report["validation_flag_rate"] <= 0.05
    assert manifest.data["ood"]["probes"]["kinds"] == ["bible", "shakespeare", "news"]
    assert "ood" in json.loads((artifact / "reports" / "metrics.json").read_text())
    served = GenerationPredictor.load(artifact, PredictorOptions(device="cpu", dtype="float32"))
    assert served.ood is not None and served.ood.layer == report["chosen"]["layer"]
    (got,) = served.predict([served.prepare("Zebra quartz xylophone!", {"max_new_tokens": 2})], [MCRequest(0, 1)])
    assert got.ood_score is not None and got.out_of_distribution == (got.ood_score > 1.0)

    assert ood_main(["--task", "generation", "--artifact", str(artifact), "--output-dir", str(out),
                     "--cache-dir", str(cache)]) == 0
    refit = verify_artifact(next(p for p in (out / "generation").iterdir() if p != artifact))
    again = refit.metrics["ood"]
    assert again["fitted_on"] == report["fitted_on"] and again["n"] == report["n"]
    assert {k: again["chosen"][k] for k in ("method", "layer", "pooling")} == \
        {k: report["chosen"][k] for k in ("method", "layer", "pooling")}
    assert again["chosen"]["threshold"] == pytest.approx(report["chosen"]["threshold"], rel=1e-3)

    # the ceiling reads the same validation sets, scores the served detector as a request is, and never test
    for bad_args in (["--rate", "1.5"], ["--layers", "one"], ["--layers", "0,999"]):
        with pytest.raises(SystemExit) as bad:
            ceiling_main(["--task", "generation", "--artifact", str(artifact), "--cache-dir", str(cache), *bad_args])
        assert bad.value.code == 2
    json_out = tmp_path / "ceiling.json"
    assert ceiling_main(["--task", "generation", "--artifact", str(artifact), "--cache-dir", str(cache),
                         "--json-out", str(json_out), "--top", "3"]) == 0
    ceiling = json.loads(json_out.read_text())
    assert ceiling["n"] == {"in_domain": report["n"]["choice"] + report["n"]["threshold"],
                            "probes": report["n"]["choice_probes"], "candidates": len(ceiling["rows"])}
    assert {"token_bigram", "token_trigram", f"knn_cosine/layer_{report['chosen']['layer']}"} <= set(ceiling["rows"])
    served, oracle = ceiling["served"], ceiling["oracle"]
    assert set(oracle["unseen_kind_flag_rate"]) == {"bible", "shakespeare", "news"}
    assert [len(mix["picked"]) for mix in ceiling["mixes"]] == [1, 2, 3]
    assert set(ceiling["mixes"][-1]["picked"]) <= set(ceiling["rows"])
    assert max(served["flag_rate"]["in_domain"], oracle["flag_rate"]["in_domain"]) <= 0.05


class _Config:
    def __init__(self, ood: bool, data: str) -> None:
        self.ood, self.data = ood, data


def test_the_switch_and_its_skips() -> None:
    def never() -> None:
        raise AssertionError("sets built although the fit is off")

    assert fit_for_job(_Config(False, "imdb"), None, never) is None

    def unavailable() -> None:
        raise FetchError("no network")

    assert fit_for_job(_Config(True, "imdb"), None, unavailable) is None  # the trained model is still written
    manifest, save = object(), lambda staging: None
    assert with_ood(manifest, save, None) == (manifest, save)  # type: ignore[arg-type]


def test_translation_sets_are_disjoint_and_repeatable(tmp_path: Path, offline_probes: None) -> None:
    data = load_synthetic_translation(3, n=400, max_ratio=3.0)
    sizes = OODSizes(bank=100, choice=10, threshold=15, test=20, choice_probes=5, test_probes=8)
    sets = ood_sets(data, tmp_path, 0, sizes)
    assert sets == ood_sets(data, tmp_path, 0, sizes)
    assert (len(sets.bank), len(sets.choice), len(sets.threshold), len(sets.test)) == (100, 10, 15, 20)
    assert not set(sets.choice) & set(sets.threshold)
    assert sets.test_probes.counts() == {"shakespeare": 8, "austen": 8, "news": 8, "german": 8}
    assert not set(sets.choice_probes.texts) & set(sets.test_probes.texts)
    # each threshold and test verse carries its held-out book (the threshold bounds each book's flag rate)
    by_text = {source: book for split in ("validation", "test")
               for (source, _), (book, _, _) in zip(data.splits[split], data.references[split], strict=True)}
    assert sets.threshold_groups == [str(by_text[text]) for text in sets.threshold] == ["5"] * 15
    assert sets.test_groups == [str(by_text[text]) for text in sets.test] == ["6"] * 20


def test_a_users_files_are_fitted_and_a_probe_kind_like_them_is_named(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    films = [f"the film {w} was {a} and the acting {b}" for w in ("plot", "cast", "story", "score", "ending")
             for a in ("dull", "great", "fine", "awful") for b in ("moved me", "bored me", "worked")]
    other = [f"{x} {y} {z} qqq zzz" for x in ("zebra", "quartz", "xylophone") for y in ("jumps", "orbits", "melts")
             for z in ("tomorrow", "sideways", "loudly", "twice")]
    predictor = SentimentPredictor.load(make_tiny_sentiment_artifact(tmp_path, num_layers=2), PredictorOptions())
    # "reviews" probes are the user's own kind of text: no score can tell them apart
    probes = lambda a, b: Probes(other[a:b] + films[a:b], ["nonsense"] * (b - a) + ["reviews"] * (b - a))  # noqa: E731
    sets = OODSets(bank=films[:30], choice=films[30:40], threshold=films[40:50], choice_probes=probes(0, 10),
                   test=films[50:60], test_probes=probes(10, 30))
    with caplog.at_level("WARNING"):
        fitted = fit_for_job(_Config(True, "file"), predictor, lambda: sets)
    assert fitted is not None and fitted[1]["weak_probe_kinds"] == ["reviews"]
    assert "['reviews'] look like your validation inputs" in caplog.text
    no_training = OODSets(bank=[], choice=sets.choice, threshold=sets.threshold, choice_probes=sets.choice_probes,
                          test=sets.test, test_probes=sets.test_probes)
    assert fit_for_job(_Config(True, "file"), predictor, lambda: no_training) is None  # calibrate, no --train-file


def test_sentiment_sets_fit_the_teacher_map_on_training_sentences_only(tmp_path: Path, offline_probes: None) -> None:
    from training.core.ood_teacher import Teacher
    from training.sentiment.probes import OODSizes as SentimentSizes
    from training.sentiment.probes import ood_sets as sentiment_sets

    def review(i: int, split: str) -> str:
        return (f"The {split} film number {i} was a long and quiet story. The cast of film {i} played it very well "
                f"indeed tonight. A third sentence about film {i} is never used here.")

    train, val, test = ([review(i, split) for i in range(n)] for split, n in (("train", 40), ("val", 20), ("test", 10)))
    sizes = SentimentSizes(bank_reviews=5, bank_snippets=10, choice=5, threshold=5, test_reviews=5, test_snippets=5,
                           choice_probes=3, test_probes=4, teacher_texts=30)
    embed = lambda ids: None  # noqa: E731 - never called: the sets only carry it
    sets = sentiment_sets(train, val, test, tmp_path, sizes, 0, teacher=Teacher(embed, ["replaced"]))
    assert sets.teacher is not None and sets.teacher.embed is embed and len(sets.teacher.texts) == 30
    # the first two sentences of each training review after the bank's 5 whole ones, in order
    assert sets.teacher.texts[:2] == ["The train film number 5 was a long and quiet story.",
                                      "The cast of film 5 played it very well indeed tonight."]
    firsts = {sentence for text in train[5:] for sentence in text.split(". ")[:2]}
    assert all(text.rstrip(".") in firsts for text in sets.teacher.texts)  # training reviews only, two each
    assert sets.record["teacher"]["sentences"] == 30
    assert sentiment_sets(train, val, test, tmp_path, sizes, 0).teacher is None


def test_generation_gets_the_minilm_teacher_lazily_and_the_tiny_model_none(tmp_path: Path) -> None:
    from training.generation.config import GenerationConfig
    from training.generation.probes import prompt_teacher

    assert prompt_teacher(GenerationConfig(model="tiny"), tmp_path) is None
    teacher = prompt_teacher(GenerationConfig(model="smollm2"), tmp_path)
    assert teacher is not None and teacher.texts == []
    assert not any(tmp_path.iterdir())  # nothing fetched until the fit embeds its texts
