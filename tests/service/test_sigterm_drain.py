"""One real uvicorn process: SIGTERM turns readiness 503, in-flight and queued requests get 200, exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.factories import make_tiny_sentiment_artifact
from tests.reliability.process import free_port, poll

ROOT = Path(__file__).resolve().parents[2]


def read_batch_line(stdout: IO[str]) -> str:
    while line := stdout.readline():
        if line.startswith("BATCH"):
            return line.strip()
    raise AssertionError("server stdout closed before a batch started")


@pytest.mark.timeout(120)
def test_sigterm_drains_in_flight_requests_then_exits_zero(tmp_path: Path) -> None:
    make_tiny_sentiment_artifact(tmp_path / "artifacts")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NLP_HOST": "127.0.0.1", "NLP_PORT": str(port),
           "NLP_ARTIFACTS_DIR": str(tmp_path / "artifacts"), "NLP_MAX_BATCH_SIZE": "1", "NLP_DRAIN_TIMEOUT_S": "60",
           "NLP_DEVICE": "cpu", "NLP_DTYPE": "float32", "NLP_TORCH_THREADS": "1", "NLP_LOG_LEVEL": "info",
           "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tests.service.drain_server"], cwd=ROOT, env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            poll(lambda: client.get("/health/ready").status_code == 200, "readiness")

            def predict(text: str) -> httpx.Response:
                with httpx.Client(base_url=base, timeout=60) as own:
                    return own.post("/predict", json={"task": "sentiment", "text": text, "mc_samples": 4, "seed": 1})

            with ThreadPoolExecutor(3) as pool:
                futures = [pool.submit(predict, text) for text in ("first in flight", "second queued", "third queued")]
                assert read_batch_line(proc.stdout) == "BATCH 1"  # one running, held at the gate
                queued = 'nlp_queue_size{model="sentiment",task="sentiment"} 2.0'
                poll(lambda: queued in client.get("/metrics").text, "2 queued")

                proc.send_signal(signal.SIGTERM)
                draining = poll(lambda: (r := client.get("/health/ready")).status_code == 503 and r, "draining")
                assert draining.json()["status"] == "draining"
                refused = client.post("/predict", json={"task": "sentiment", "text": "arrived during the drain"})
                assert refused.status_code == 503 and refused.json()["error_type"] == "draining"
                assert proc.poll() is None  # still serving its in-flight work

                proc.stdin.write("go\ngo\ngo\n")
                proc.stdin.flush()
                responses = [future.result(timeout=60) for future in futures]
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert all(len(r.json()["predictions"]) == 1 for r in responses)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        print(log_path.read_text())
