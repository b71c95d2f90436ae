"""deploy/prometheus: the config scrapes the compose service's /metrics, the alert rules cover what the
issue asks for and read only series the service exports; promtool checks and unit-tests them when it is
installed (Debian's `prometheus` package ships it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, PROMETHEUS_OWN, ROOT, metric_names

CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"


def rules() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_config_scrapes_the_compose_service_and_loads_the_rules(routes: set[str]) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert [(CONFIG.parent / f).resolve() for f in config["rule_files"]] == [RULES.resolve()]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "nlp-service"]
    assert job["metrics_path"] in routes
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    port = compose["services"]["service"]["environment"]["NLP_PORT"]
    assert job["static_configs"][0]["targets"] == [f"service:{port}"]


def test_the_issue_alerts_exist_with_severity_and_summary() -> None:
    found = rules()
    needed = {"NLPHighErrorRate": "nlp_requests_total", "NLPQueueSaturated": "nlp_queue_size",
              "NLPHighP95Latency": "nlp_request_duration_seconds_bucket",
              "NLPUncertaintyDrift": "nlp_prediction_mutual_information_sum",
              "NLPModelReloadFailed": "nlp_model_reloads_total", "NLPModelNotLoaded": "nlp_model_loaded"}
    for name, metric in needed.items():
        assert metric in metric_names(found[name]["expr"]), name
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"warning", "critical"} and rule["annotations"]["summary"], name
        assert rule.get("for"), f"{name} fires on a single evaluation"


def test_rules_read_only_exported_series(exported: set[str]) -> None:
    for name, rule in rules().items():
        used = metric_names(rule["expr"])
        assert used, name
        assert used - exported - PROMETHEUS_OWN == set(), name


def test_queue_alert_threshold_is_below_the_queue_limit() -> None:
    from service.settings import Settings

    expr = rules()["NLPQueueSaturated"]["expr"]
    threshold = int(expr.rsplit(">", 1)[1])
    assert 0.5 * Settings().max_queue <= threshold < Settings().max_queue


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
@pytest.mark.parametrize("args", [["check", "config", str(CONFIG)], ["check", "rules", str(RULES)],
                                  ["test", "rules", str(RULE_TESTS)]], ids=["config", "rules", "rule-tests"])
def test_promtool_accepts(args: list[str]) -> None:
    done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=Path(RULES).parent)
    assert done.returncode == 0, done.stdout + done.stderr
