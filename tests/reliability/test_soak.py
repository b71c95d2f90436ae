"""The CI-sized soak: `bench.soak` against a real uvicorn process on loopback with a tiny random model,
at twice the measured saturating rate for a few seconds. Fails if a single request is lost, hangs, is
answered 500 (or outside 200/429/503/504), lacks the error body, or if the answers by status do not add
up against `nlp_requests_total`. The minutes-long run is `python -m bench.soak` (see bench/README.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.soak import SoakConfig, print_report, run_soak_async


@pytest.mark.timeout(180)
def test_a_short_soak_at_twice_the_saturating_rate_loses_nothing(sentiment_artifacts: Path, tmp_path: Path) -> None:
    # T=64 makes the model, not the HTTP stack, the bottleneck, so that 2x its rate is something a client on
    # the same two cores can actually send (the queue fills and the server must shed load with 429).
    cfg = SoakConfig(seconds=5.0, probe_seconds=2.0, probe_concurrency=8, rate_factor=2.0, mc_samples=64,
                     request_timeout_s=3.0, hang_margin_s=30.0,
                     server_env={"NLP_DEVICE": "cpu", "NLP_DTYPE": "float32", "NLP_TORCH_THREADS": "1",
                                 "NLP_MAX_QUEUE": "64"})
    report = asyncio.run(run_soak_async(sentiment_artifacts, tmp_path, cfg))
    print_report(report, cfg)
    assert report.failures() == []
    assert report.launched == sum(report.by_status.values()) > 0  # every request got an answer
    assert report.by_status.get("200", 0) > 0
    assert report.server_exit_code == 0
