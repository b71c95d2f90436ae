"""deploy/grafana: provisioning points at the compose Prometheus and at the mounted dashboards; the
dashboard queries only series the service exports and shows what the issue lists."""

from __future__ import annotations

import json

import yaml

from tests.deploy.conftest import DEPLOY, ROOT, expressions_in_dashboard, metric_names

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "nlp-service.json"


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(board: dict) -> list[dict]:
    panels, stack = [], list(board["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        panels.append(panel)
    return panels


def test_provisioning_matches_compose_and_the_dashboard_datasource() -> None:
    (source,) = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"] and "9090" in compose["services"]["prometheus"]["ports"][0]
    (provider,) = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/nlp.yml").read_text())["providers"]
    volumes = compose["services"]["grafana"]["volumes"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in volumes if v.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    for panel in all_panels(dashboard()):
        for ref in [panel.get("datasource"), *(t.get("datasource") for t in panel.get("targets", []))]:
            assert ref in (None, {"type": "prometheus", "uid": source["uid"]}), panel["title"]


def test_dashboard_queries_only_exported_series(exported: set[str]) -> None:
    exprs = expressions_in_dashboard(dashboard())
    assert len(exprs) > 20
    for expr in exprs:
        used = metric_names(expr)
        assert used and used <= exported, (expr, used - exported)


def test_dashboard_shows_what_the_issue_lists() -> None:
    board = dashboard()
    exprs = expressions_in_dashboard(board)
    joined = "\n".join(exprs)
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (task, le) (rate(nlp_request_duration_seconds_bucket" in joined
    used = set().union(*(metric_names(e) for e in exprs))
    for metric in ("nlp_requests_total", "nlp_queue_size", "nlp_batch_size_sum", "nlp_mc_samples_sum",
                   "nlp_prediction_entropy_bucket", "nlp_prediction_mutual_information_bucket",
                   "nlp_gpu_memory_allocated_bytes", "nlp_time_to_first_token_seconds_bucket",
                   "nlp_time_per_output_token_seconds_bucket", "nlp_generated_tokens_total"):
        assert metric in used, metric
    assert 'status=~"5.."' in joined  # error rate
    heatmaps = [p for p in all_panels(board) if p["type"] == "heatmap"]
    assert {p["repeat"] for p in heatmaps} == {"task"}  # entropy and MI distributions, one panel per task
    assert {"nlp_prediction_entropy_bucket", "nlp_prediction_mutual_information_bucket"} == {
        n for p in heatmaps for t in p["targets"] for n in metric_names(t["expr"])}
    assert [v["name"] for v in board["templating"]["list"]] == ["task", "model"]


def test_every_per_model_query_filters_by_the_model_variable() -> None:
    # Named models (issue 14): the series carry `model` besides `task`; picking models must narrow every panel.
    for expr in expressions_in_dashboard(dashboard()):
        if "$task" in expr and not expr.startswith("label_values("):
            assert 'model=~"$model"' in expr, expr
    joined = "\n".join(expressions_in_dashboard(dashboard()))
    assert "nlp_model_reloads_total" in joined and "max by (task, model, version" in joined


def test_panel_ids_are_unique_and_layout_fits() -> None:
    panels = all_panels(dashboard())
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
