"""docker-compose.yml, its GPU override, .env.example and the Dockerfiles, checked without a container
engine: they parse, reference files that exist, and agree with the service's settings and routes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from service.__main__ import _CLOSE_GRACE_S
from service.settings import Settings
from tests.deploy.conftest import DEPLOY, ROOT, TASKS
from training.ensure import JOBS


def compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


def default(value: str) -> str:
    """The value of `${VAR:-default}` (or the literal)."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    return match[1] if match else value


def train_services() -> dict[str, dict]:
    return {name: svc for name, svc in compose()["services"].items() if "train" in svc.get("profiles", [])}


def test_referenced_files_exist() -> None:
    for name in ("docker-compose.yml", "docker-compose.gpu.yml"):
        for svc_name, svc in compose(name)["services"].items():
            build = svc.get("build", {})
            if "dockerfile" in build:
                assert (ROOT / build["context"] / build["dockerfile"]).is_file(), svc_name
            for volume in svc.get("volumes", []):
                if volume.startswith("./"):
                    assert (ROOT / volume.split(":")[0]).exists(), volume
            for env_file in svc.get("env_file", []):
                assert env_file["path"] == ".env" and env_file["required"] is False  # .env.example documents it
    assert (ROOT / ".env.example").is_file() and ".env" in (ROOT / ".gitignore").read_text().split()


def test_service_ports_volumes_and_env_agree_with_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = compose()["services"]["service"]
    env = {**env_example(), **svc["environment"]}  # compose's `environment` wins over env_file
    for key in [k for k in env if k.startswith("NLP_")]:
        field = key.removeprefix("NLP_").split("__")[0].lower()
        assert field in Settings.model_fields, f"{key} is not a service setting"
        monkeypatch.setenv(key, str(env[key]))
    settings = Settings()  # every NLP_* value in .env.example and compose parses
    (published,) = svc["ports"]
    host, container = published.rsplit(":", 1)
    assert container == str(settings.port) == "8000" and default(host) == env["SERVICE_PORT"]
    assert settings.host == "0.0.0.0"
    assert f"artifacts:{settings.artifacts_dir}:ro" in svc["volumes"]  # read-only for the service
    assert "artifacts" in compose()["volumes"]
    assert svc["restart"] in {"always", "unless-stopped"}
    assert seconds(svc["stop_grace_period"]) > settings.drain_timeout_s + _CLOSE_GRACE_S


def test_training_jobs_are_one_shot_services_of_the_train_profile() -> None:
    services = train_services()
    tasks = {}
    for name, svc in services.items():
        command = svc["command"]
        module = command[command.index("-m") + 1]
        assert command[0] == "torchrun" and module.startswith("training.")
        tasks[module.removeprefix("training.")] = name
        assert svc["restart"] == "no" and "artifacts:/app/artifacts" in svc["volumes"]  # writable
        assert command[command.index("--output-dir") + 1] == "/app/artifacts"
    assert set(JOBS) <= set(tasks) and set(tasks) <= TASKS
    assert "train" not in compose()["services"]["service"].get("profiles", [])


def test_gpu_override_reserves_gpus_for_existing_services() -> None:
    base, gpu = compose()["services"], compose("docker-compose.gpu.yml")["services"]
    assert set(gpu) <= set(base) and {"service", *train_services()} == set(gpu)
    for name, svc in gpu.items():
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        assert "cu" in default(svc["build"]["args"]["TORCH_INDEX_URL"]).rsplit("/", 1)[1], name
    assert gpu["service"]["environment"]["NLP_DEVICE"] == "cuda"


def stages(dockerfile: Path) -> list[list[str]]:
    """Instructions per build stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


@pytest.mark.parametrize("name", ["service.Dockerfile", "train.Dockerfile"])
def test_dockerfiles_are_multi_stage_non_root_and_copy_real_paths(name: str) -> None:
    build, final = stages(DEPLOY / name)  # exactly two stages
    assert "AS build" in build[0] and "AS runtime" in final[0]
    for line in build:
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert not any(re.search(r"\b(apt-get|gcc|build-essential)\b", line) for line in final)  # no build tools
    assert any(line.startswith("COPY --from=build /opt/venv") for line in final)
    user = [line.split()[1] for line in final if line.startswith("USER ")]
    assert user == ["app"] and any("useradd" in line for line in final)
    assert "PIP_NO_CACHE_DIR=1" in " ".join(build)  # no pip cache in the layers that are copied
    assert any("ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" == line for line in build)  # CPU default


def test_service_image_matches_the_settings_and_checks_readiness(routes: set[str]) -> None:
    _, final = stages(DEPLOY / "service.Dockerfile")
    text = " ".join(final)
    (healthcheck,) = [line for line in final if line.startswith("HEALTHCHECK")]
    path = re.search(r"/health/\w+", healthcheck)[0]
    assert path == "/health/ready" and path in routes
    assert "EXPOSE 8000" in final and "NLP_PORT=8000" in text and "NLP_HOST=0.0.0.0" in text
    assert "NLP_ARTIFACTS_DIR=/app/artifacts" in text
    assert final[-1] == 'CMD ["python", "-m", "service"]'
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".cache", "artifacts", ".git"} <= set(ignored)
