"""Litestar's Prometheus plugin (HTTP request metrics, grouped paths) bound to the app's own registry.

The stock `PrometheusMiddleware` keeps its metrics in a class-level dict on the process-global
`prometheus_client.REGISTRY`. Here a config subclass carries the app's registry and a middleware subclass
creates the same four metrics (`litestar_requests_total`, `litestar_request_duration_seconds`,
`litestar_requests_in_progress`, `litestar_requests_error_total`, labels method/path/status_code/app_name)
on that registry instead, cached per registry. Paths are route templates (`/models/{name:str}`), so a
client cannot mint new label values; unmatched paths (404s) never reach
route middleware, so they are not counted either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from litestar.plugins.prometheus import PrometheusConfig, PrometheusMiddleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class RegistryPrometheusConfig(PrometheusConfig):
    """`PrometheusConfig` plus the registry its metrics live on."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    metrics: dict[str, MetricWrapperBase] = field(default_factory=dict)


class RegistryPrometheusMiddleware(PrometheusMiddleware):
    """The plugin's middleware, creating its metrics on `config.registry` (once per config)."""

    _config: RegistryPrometheusConfig

    def _metric(self, kind: type[MetricWrapperBase], suffix: str, doc: str, labels: dict[str, Any],
                **kwargs: Any) -> Any:
        name = f"{self._config.prefix}_{suffix}"
        cache = self._config.metrics
        if name not in cache:
            cache[name] = kind(name, doc, labelnames=[*labels.keys()], registry=self._config.registry, **kwargs)
        return cache[name]

    def request_count(self, labels: dict[str, str | int | float]) -> Counter:
        return cast(Counter, self._metric(Counter, "requests_total", "Total requests", labels))

    def request_time(self, labels: dict[str, str | int | float]) -> Histogram:
        return cast(Histogram, self._metric(Histogram, "request_duration_seconds", "Request duration, in seconds",
                                            labels, **self._kwargs))

    def requests_in_progress(self, labels: dict[str, str | int | float]) -> Gauge:
        return cast(Gauge, self._metric(Gauge, "requests_in_progress", "Total requests currently in progress",
                                        labels, multiprocess_mode="livesum"))

    def requests_error_count(self, labels: dict[str, str | int | float]) -> Counter:
        return cast(Counter, self._metric(Counter, "requests_error_total", "Total errors in requests", labels))


def http_metrics_config(registry: CollectorRegistry) -> RegistryPrometheusConfig:
    """The plugin configuration for one app: grouped paths, /metrics itself not counted."""
    return RegistryPrometheusConfig(
        app_name="nlp-service",
        prefix="litestar",
        group_path=True,
        exclude=["^/metrics$"],
        buckets=list(_LATENCY),
        middleware_class=RegistryPrometheusMiddleware,
        registry=registry,
    )
