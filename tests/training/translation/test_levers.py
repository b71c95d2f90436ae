"""The MC-lever comparison (training/translation/levers.py) on the tiny job's artifact, and its parts."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from models.core.artifacts import read_manifest
from training.translation.levers import CHOSEN_BY, inference_rate, main


def test_the_inference_rate_changes_only_live_rates_and_is_restored_even_after_an_error() -> None:
    model = SimpleNamespace(config=SimpleNamespace(dropout=0.1, attention_dropout=0.0, activation_dropout=0.2))
    with pytest.raises(RuntimeError), inference_rate(model, 0.05):
        assert (model.config.dropout, model.config.attention_dropout, model.config.activation_dropout) == (
            0.05, 0.0, 0.05)
        raise RuntimeError("scoring failed")
    assert (model.config.dropout, model.config.attention_dropout, model.config.activation_dropout) == (0.1, 0.0, 0.2)
    with inference_rate(model, None):
        assert model.config.dropout == 0.1


def test_levers_are_compared_on_validation_and_only_the_chosen_one_reads_test(
        artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "levers.json"
    status = main(["--artifact", str(artifact), "--cache-dir", str(artifact.parents[2] / "cache"), "--dtype", "float32",
                   "--lever", "served=", "--lever", "whole-gentle=k=all,rate=0.02,T=3", "--json-out", str(out)])
    assert status == 0
    result = json.loads(out.read_text())
    manifest = read_manifest(artifact)
    used = manifest.data["used"]
    assert result["n"] == {"validation": used["validation_calibration"], "test": used["test"]}
    table = result["validation"]
    assert set(table) == {"served", "whole-gentle"}
    assert result["levers"]["whole-gentle"] == {"samples": 3, "last_k": None, "rate": 0.02, "sites": ["hidden"]}
    assert result["levers"]["served"]["last_k"] == manifest.dropout["mc_last_k"]
    pearson = {name: row["correlation_with_sentence_chrf"][CHOSEN_BY]["pearson"] for name, row in table.items()}
    assert result["chosen"] == max(pearson, key=pearson.get)
    # the deterministic TP is the same whatever the masks; the MC measures are not
    tp = {name: row["correlation_with_sentence_chrf"]["sequence_log_prob_per_token"]["pearson"]
          for name, row in table.items()}
    assert tp["served"] == pytest.approx(tp["whole-gentle"])
    assert pearson["served"] != pearson["whole-gentle"]
    assert set(result["test"]["correlation_with_sentence_chrf"]) >= {CHOSEN_BY, "sequence_log_prob_per_token"}
    printed = capsys.readouterr().out
    assert "| whole-gentle |" in printed and f"validation chose {result['chosen']!r}" in printed


@pytest.mark.parametrize("lever", ["odd=depth=2", "whole", "=k=all"])
def test_a_bad_lever_exits_with_usage(artifact: Path, tmp_path: Path, lever: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--artifact", str(artifact), "--cache-dir", str(tmp_path / "cache"), "--lever", lever])
    assert exc.value.code == 2 and "lever" in capsys.readouterr().err
