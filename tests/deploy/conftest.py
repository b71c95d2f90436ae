"""What the deployment files are checked against: the metric series the service exports (scraped from
an in-process app with a fake model, after one request so Litestar's HTTP metrics exist), its routes,
and a PromQL scan that finds the metric names an expression reads."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import serve

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TASKS = {"sentiment", "translation", "generation"}

# Series each family type exposes (prometheus_client adds `_created` to counters and histograms).
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "gauge": ("",), "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}

# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "clamp_min", "clamp_max",
    "abs", "absent", "label_values", "label_replace", "vector", "scalar", "time", "avg_over_time",
    "max_over_time", "min_over_time", "sum_over_time", "predict_linear", "inf", "nan", "le",
}
PROMETHEUS_OWN = {"up"}  # series Prometheus itself attaches to every scrape target


def metric_names(expr: str) -> set[str]:
    """Identifiers of `expr` that name series: strings, label matchers, ranges, `$vars` and PromQL words
    removed (every identifier left is a metric name, or a typo the caller will not find exported)."""
    text = re.sub(r"label_values\(\s*([^,()]+?)\s*,\s*\w+\s*\)", r"\1", expr)  # Grafana: (metric, label)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\$\w+", "", text)  # Grafana variables ($__rate_interval, $task)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)  # label lists
    text = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?[smhdwy]?\b", "", text)  # numbers and durations
    names = {w for w in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text) if w.lower() not in PROMQL_WORDS}
    return names


def expressions_in_dashboard(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets (rows included) and query variables."""
    exprs: list[str] = []
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        exprs.extend(t["expr"] for t in panel.get("targets", []) if "expr" in t)
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        exprs.append(query["query"] if isinstance(query, dict) else query or "")
    return [e for e in exprs if e]


def load_yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


async def _scrape(tmp: Path) -> tuple[str, list[str]]:
    async with serve(tmp) as served:
        assert (await served.client.get("/health/live")).status_code == 200
        response = await served.client.post("/predict", json={"task": "sentiment", "text": "good", "mc_samples": 4})
        assert response.status_code == 200
        routes = [route.path for route in served.app.routes]
        return (await served.client.get("/metrics")).text, routes


@pytest.fixture(scope="session")
def service_surface(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], set[str]]:
    """(every series name /metrics exposes, every route path) of a running app."""
    text, routes = asyncio.run(_scrape(tmp_path_factory.mktemp("surface")))
    series: set[str] = set()
    for family in text_string_to_metric_families(text):
        series.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return series, set(routes)


@pytest.fixture(scope="session")
def exported(service_surface: tuple[set[str], set[str]]) -> set[str]:
    return service_surface[0]


@pytest.fixture(scope="session")
def routes(service_surface: tuple[set[str], set[str]]) -> set[str]:
    return service_surface[1]
