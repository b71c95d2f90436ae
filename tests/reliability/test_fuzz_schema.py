"""Schema-based fuzzing: schemathesis generates requests for every operation the OpenAPI schema declares
(valid and invalid ones) and sends them to the app in-process, serving the real tiny models. No answer may
be a 5xx, every 4xx must carry the error body, and documented answers must match their schema.

Bounded for CI by `max_examples` per operation and generation mode. New endpoints are covered as soon as
the schema declares them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.reliability.apps import assert_answer_contract, assert_openai_error_contract

FUZZ_LIMITS = {"max_items_per_request": 8, "max_chars_per_text": 500, "max_payload_bytes": 32_768, "mc_samples_cap": 4}
MAX_EXAMPLES = 30  # per operation and mode (CI bound: the whole default suite, install included, in < 10 min)
SERVED_TASKS = ["sentiment", "translation", "generation"]
PREDICT_FIELDS = {"task", "text", "mc_samples", "seed", "parameters"}
FUZZ_COUNTS: dict[str, int] = {}  # "<METHOD> <path> <status>" -> answers seen, for the report


@pytest.fixture(scope="module")
def api_schema(all_task_artifacts: Path) -> Iterator[Any]:
    settings_ = Settings(artifacts_dir=all_task_artifacts, device="cpu", dtype="float32", max_wait_ms=0.0,
                         **FUZZ_LIMITS)
    app = create_app(settings_, Runtime(settings_))
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)  # starts the app's lifespan
    client = asgi.get_client(app)
    for _ in range(2400):  # wait for both models (state polling; a load failure stops at once)
        ready = client.get("/health/ready")
        if ready.status_code == 200:
            break
        assert ready.json()["status"] == "loading", ready.json()
        __import__("time").sleep(0.05)
    else:
        raise AssertionError("models did not load")
    yield schema
    asgi.shutdown_lifespans()
    print("schemathesis answers by operation and status:", dict(sorted(FUZZ_COUNTS.items())))


def error_body_on_errors(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx/5xx carries `{"error": str, "error_type": str}` and nothing else (OpenAI's shape on /v1/*)."""
    body = response.json() if response.status_code >= 400 else None
    if case.path.startswith("/v1/"):
        assert_openai_error_contract(response.status_code, body)
    else:
        assert_answer_contract(response.status_code, body)


def modes(operation: Any) -> list[tuple[str, GenerationMode, bool]]:
    """(label, generation mode, replace the task with a served one) runs for `operation`."""
    runs = [("positive", GenerationMode.POSITIVE, False)]
    if len(operation.body) or len(operation.query) or len(operation.headers):
        # (a free string path parameter, like a bare GET, has no invalid form to generate)
        runs.append(("negative", GenerationMode.NEGATIVE, False))
    if len(operation.body) and operation.method.lower() == "post":
        # A free-form `task` is almost never a served one: also fuzz the rest of the body with real tasks.
        runs.append(("positive+served-task", GenerationMode.POSITIVE, True))
    return runs


def fuzz_check(operation: Any, label: str, mode: GenerationMode, served_task: bool) -> Callable[[], None]:
    """The hypothesis test of one operation in one generation mode (bound to its arguments, not to a loop)."""

    @given(case=operation.as_strategy(generation_mode=mode), task=st.sampled_from(SERVED_TASKS),
           drop_parameters=st.booleans())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: Any, task: str, drop_parameters: bool) -> None:
        if served_task and isinstance(case.body, dict) and case.path.startswith("/v1/"):
            case.body["model"] = "generation"  # a free-form model name is almost never a served one
            # Bound the decoding work (CI time), not what is checked.
            for name, most in (("n", 2), ("max_tokens", 8), ("max_completion_tokens", 8)):
                if isinstance(case.body.get(name), int) and not isinstance(case.body[name], bool):
                    case.body[name] = min(case.body[name], most)
        elif served_task and isinstance(case.body, dict):
            # The published schema omits `additionalProperties: false`, so "valid" bodies carry extra
            # keys that the model (extra="forbid") refuses; keep the declared ones to reach the models.
            case.body = {k: v for k, v in case.body.items() if k in PREDICT_FIELDS} | {"task": task}
            if drop_parameters:  # random `parameters` are nearly always refused by the predictors
                case.body.pop("parameters", None)
        response = case.call()
        key = f"{case.method} {case.path} {label} {response.status_code}"
        FUZZ_COUNTS[key] = FUZZ_COUNTS.get(key, 0) + 1
        case.validate_response(response, checks=[not_a_server_error], additional_checks=[error_body_on_errors])

    return check


def test_every_operation_answers_without_5xx_and_with_the_error_body(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /predict", "GET /health/ready"}
    for operation in operations:
        for label, mode, served_task in modes(operation):
            fuzz_check(operation, label, mode, served_task)()
    served_200 = sum(n for key, n in FUZZ_COUNTS.items() if key.startswith("POST /predict positive+served-task 200"))
    assert served_200 > 0  # the fuzzing did reach the models, not only the validators
    openai_200 = sum(n for key, n in FUZZ_COUNTS.items() if key.startswith("POST /v1/") and key.endswith(" 200"))
    assert openai_200 > 0  # and through the OpenAI-compatible endpoints too
