"""The MC-lever comparison (training/generation/levers.py) on the tiny job's artifact, and its rate switch."""

import json
from pathlib import Path

import pytest

from models.core.artifacts import read_manifest
from models.generation.model import LlamaDropoutRates, build_tiny_llama
from training.generation.levers import MC_MEASURES, inference_rate, main


def test_the_inference_rate_changes_only_live_rates_and_is_restored_even_after_an_error() -> None:
    model = build_tiny_llama(vocab_size=32, attention_dropout=0.0, hidden_dropout=0.1)
    with pytest.raises(RuntimeError), inference_rate(model, 0.3):
        assert LlamaDropoutRates.of(model) == LlamaDropoutRates(attention=0.0, hidden=0.3)
        raise RuntimeError("scoring failed")
    assert LlamaDropoutRates.of(model) == LlamaDropoutRates(attention=0.0, hidden=0.1)
    with inference_rate(model, None):
        assert LlamaDropoutRates.of(model).hidden == 0.1


def test_levers_are_chosen_on_validation_and_only_the_choice_reads_test(artifact: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "levers.json"
    assert main(["--artifact", str(artifact), "--cache-dir", str(artifact.parents[2] / "cache"), "--blocks", "2",
                 "--dtype", "float32", "--lever", "served=", "--lever", "hot=rate=0.5,T=3",
                 "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    table = result["validation"]
    assert set(table) == {"served", "hot"} and result["levers"]["hot"]["rate"] == 0.5
    best = {name: row["auroc_error"][row["best_mc_measure"]] for name, row in table.items()}
    assert result["chosen"] == max(best, key=best.get) and table["hot"]["best_mc_measure"] in MC_MEASURES
    # the deterministic baseline is the same whatever the masks; the MC measures are not
    assert table["served"]["auroc_error"]["one_minus_p"] == pytest.approx(table["hot"]["auroc_error"]["one_minus_p"])
    assert table["served"]["auroc_error"]["mi"] != table["hot"]["auroc_error"]["mi"]
    assert table["hot"]["mc_samples"] == 3 and result["n"] == {"validation_blocks": 2, "test_blocks": 2}
    assert result["test"]["tokens"] == table["served"]["tokens"]  # blocks of one length
    manifest = read_manifest(artifact)
    assert manifest.training_config["block_size"] - 1 == table["served"]["tokens"] // 2
    printed = capsys.readouterr().out
    assert "| hot |" in printed and f"validation chose {result['chosen']!r}" in printed


@pytest.mark.parametrize("args", [["--lever", "odd=depth=2"], ["--lever", "whole"], ["--blocks", "0"]])
def test_bad_arguments_exit_with_usage(artifact: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--artifact", str(artifact), *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and ("lever" in err or "blocks" in err)
