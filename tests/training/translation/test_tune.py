"""The settings comparison (`python -m training.translation.tune`): one training per setting, the learning curve of
each written as it finishes, a rerun skips what is there, bad settings are refused."""

import json
from pathlib import Path

import pytest

from training.translation.tune import main, parse_setting


def test_each_setting_trains_and_is_compared_on_its_learning_curve(tmp_path: Path) -> None:
    out, cache = tmp_path / "tuning", tmp_path / "cache"
    args = ["--preset", "tiny", "--cache-dir", str(cache), "--output", str(out), "--common", "--max-steps 30 "
            "--eval-every 10 --curve-pairs 20", "--setting", "base=", "--setting", "small-vocab=--vocab-size 300"]
    assert main(args) == 0
    runs = {name: json.loads((out / f"{name}.json").read_text()) for name in ("base", "small-vocab")}
    assert runs["base"]["vocab"] > runs["small-vocab"]["vocab"] and runs["small-vocab"]["config"]["vocab_size"] == 300
    for run in runs.values():
        curve = [e["chrf"] for e in run["history"]["evals"]]
        assert run["steps"] == 30 and len(curve) == 3 and run["best_chrf"] == max(curve)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"base", "small-vocab"} and (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    before = (out / "base.json").stat().st_mtime_ns
    assert main(args) == 0 and (out / "base.json").stat().st_mtime_ns == before  # finished runs are not redone


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NAME="):
        parse_setting("=--vocab-size 300")
    with pytest.raises(ValueError, match="NAME="):
        parse_setting("../x=--vocab-size 300")
    assert parse_setting("a.b-c=--dropout 0.3 --token-dropout 0.1") == ("a.b-c", ["--dropout", "0.3",
                                                                                 "--token-dropout", "0.1"])
    with pytest.raises(SystemExit) as exited:
        main(["--output", str(tmp_path), "--setting", "x=--no-such-field 1"])
    assert exited.value.code == 2
