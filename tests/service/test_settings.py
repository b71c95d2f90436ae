"""Settings from the environment, per-model limits, device/dtype resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service import devices
from service.settings import Settings


def test_environment_variables_with_the_nlp_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "NLP_PORT": "9001",
        "NLP_ARTIFACTS_DIR": "/srv/artifacts",
        "NLP_TASKS": "sentiment, translation",
        "NLP_VERSIONS": '{"sentiment": "20250101T000000Z-abc123"}',
        "NLP_MAX_BATCH_SIZE": "16",
        "NLP_BATCHING__SENTIMENT__MAX_BATCH_SIZE": "1",
        "NLP_MC_LAST_K__SENTIMENT": "2",
        "NLP_MC_DROPOUT_SITES__SENTIMENT": "hidden,head",
        "NLP_API_KEY": "k",
        "NLP_LOG_LEVEL": "DEBUG",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.port == 9001 and settings.artifacts_dir == Path("/srv/artifacts")
    assert settings.tasks == ["sentiment", "translation"]
    assert settings.versions == {"sentiment": "20250101T000000Z-abc123"}
    assert settings.batch_limits("sentiment").max_batch_size == 1
    assert settings.batch_limits("translation").max_batch_size == 16
    assert settings.mc_last_k == {"sentiment": 2}
    assert settings.dropout_sites("sentiment") == frozenset({"hidden", "head"})
    assert settings.dropout_sites("generation") is None
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "k"
    assert "k" not in repr(settings.api_key)
    assert settings.log_level == "debug"


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("NLP_")]:
        monkeypatch.delenv(key)
    settings = Settings()
    assert settings.artifacts_dir == Path("artifacts") and settings.tasks is None and settings.api_key is None
    assert settings.device == "auto" and settings.dtype == "auto"


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(mc_dropout_sites={"sentiment": ["hidden", "everywhere"]})
    with pytest.raises(ValidationError):
        Settings(max_batch_size=0)
    with pytest.raises(ValidationError):
        Settings(device="tpu")


def test_explicit_dtypes_pass_through_and_auto_follows_the_cpu() -> None:
    from models.core.device import cpu_has_fast_bf16

    assert devices.resolve_dtype("float16", "cpu") == "float16"
    assert devices.resolve_dtype("float32", "cuda") == "float32"
    assert devices.resolve_dtype("auto", "cpu") == ("bfloat16" if cpu_has_fast_bf16() else "float32")


def test_device_auto_and_an_impossible_cuda_request() -> None:
    import torch

    assert devices.resolve_device("cpu") == "cpu"
    assert devices.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            devices.resolve_device("cuda")


def test_models_and_per_model_maps_fall_back_to_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLP_MODELS", "sentiment,support-tickets")
    monkeypatch.setenv("NLP_POLL_INTERVAL_S", "0")
    monkeypatch.setenv("NLP_MC_LAST_K", '{"sentiment": 1, "support-tickets": 2}')
    monkeypatch.setenv("NLP_BATCHING__SENTIMENT__MAX_BATCH_SIZE", "4")
    settings = Settings()
    assert settings.models == ["sentiment", "support-tickets"] and settings.poll_interval_s == 0
    assert settings.last_k("support-tickets", "sentiment") == 2 and settings.last_k("reviews", "sentiment") == 1
    assert settings.batch_limits("support-tickets", "sentiment").max_batch_size == 4  # the task's entry
    assert settings.batch_limits("translation").max_batch_size == 32
