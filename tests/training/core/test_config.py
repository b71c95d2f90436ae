"""The generated command line: presets, typed overrides of every field, and refusals."""

import dataclasses
import json

import pytest

from training.core.config import TrainConfig, build_parser, make_config, parse_args, recorded_config
from training.sentiment.job import PRESETS, SentimentConfig

PROG = "test"


def test_defaults_then_preset_then_command_line() -> None:
    config, paths = parse_args(SentimentConfig, PRESETS, ["--preset", "tiny", "--lr", "0.01"], PROG)
    assert paths.preset == "tiny"
    assert config.lr == 0.01  # command line beats preset
    assert config.model == "tiny" and config.data == "synthetic"  # preset beats defaults
    assert config.label_smoothing == SentimentConfig.label_smoothing  # untouched default
    assert str(paths.output_dir) == "artifacts" and str(paths.cache_dir) == ".cache"


def test_typed_values() -> None:
    argv = ["--preset", "quick", "--bf16", "false", "--max-steps", "7", "--grad-clip", "none",
            "--mc-last-k-candidates", "1,3", "--progress", "--max-train-seconds", "12.5", "--output-dir", "out"]
    config, paths = parse_args(SentimentConfig, PRESETS, argv, PROG)
    assert config.bf16 is False
    assert config.max_steps == 7
    assert config.grad_clip is None
    assert config.mc_last_k_candidates == (1, 3)
    assert config.progress is True  # a bare boolean flag means true
    assert config.max_train_seconds == 12.5
    assert str(paths.output_dir) == "out"


def test_every_field_has_an_option_that_round_trips_its_default() -> None:
    parser = build_parser(SentimentConfig, PRESETS, PROG)
    for f in dataclasses.fields(SentimentConfig):
        value = getattr(SentimentConfig(), f.name)
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        parsed = vars(parser.parse_args([f"--{f.name.replace('_', '-')}", text]))
        assert parsed[f.name] == value, f.name


@pytest.mark.parametrize(
    "argv",
    [["--no-such-field", "1"], ["--preset", "huge"], ["--lr", "fast"], ["--bf16", "maybe"],
     ["--schedule", "linear"], ["--model", "gpt"], ["--dropout", "1.5"]],
)
def test_bad_command_lines_exit_with_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(SentimentConfig, PRESETS, argv, PROG)
    assert info.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_make_config_raises_on_unknown_or_invalid_fields() -> None:
    with pytest.raises(ValueError, match="unknown"):
        make_config(TrainConfig, {}, {"nope": 1})
    with pytest.raises(ValueError, match="batch_size"):
        make_config(TrainConfig, {"batch_size": 0}, {})
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="decay_fraction"):
            make_config(TrainConfig, {"schedule": "wsd", "decay_fraction": fraction}, {})
    with pytest.raises(ValueError, match="head_tokens"):
        make_config(SentimentConfig, {"max_length": 16, "head_tokens": 20}, {})
    # a field's `choices` hold outside the command line too (argparse checks them only there)
    with pytest.raises(ValueError, match="model must be one of"):
        make_config(SentimentConfig, {}, {"model": "gpt"})


def test_a_recorded_config_drops_unknown_keys_and_restores_tuples() -> None:
    """What a manifest's JSON record of the job config gives back (training.*.levers, the OOD refits read it)."""
    record = {**make_config(SentimentConfig, PRESETS["tiny"], {}).to_dict(), "a_field_of_other_code": 1}
    config = recorded_config(SentimentConfig, json.loads(json.dumps(record)))
    assert config == make_config(SentimentConfig, PRESETS["tiny"], {})
    assert recorded_config(TrainConfig, None) == TrainConfig()


def test_presets_are_valid_configs() -> None:
    for name, preset in PRESETS.items():
        make_config(SentimentConfig, preset, {})  # raises if a preset names a missing field
        assert name in {"tiny", "quick", "full"}


def test_every_job_prints_its_help() -> None:
    """`--help` lists every field; a help text with a literal % must not break argparse's formatting."""
    import contextlib
    import io

    from training import ensure

    for module in ensure.JOBS.values():
        job = __import__(module, fromlist=["main"])
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
            job.main(["--help"])
        assert stop.value.code == 0
        assert "--preset" in out.getvalue() and "--lr" in out.getvalue()
