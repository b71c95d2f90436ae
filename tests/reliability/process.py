"""A real `python -m tests.reliability.gated_server` process on loopback, and helpers to drive it.

`GatedServer` starts the server on a free port with a tiny sentiment artifact, reads its stdout on a
thread (so the pipe never fills), and offers: `command("hold"|"open")` (waits for the ACK),
`expect(prefix)` (the next stdout line starting with `prefix`), `metrics()` and `poll(check)`.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.service.conftest import parse_metrics, sample

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(check: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    """Poll another process's state until `check()` is truthy (a state condition, not a timing one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class GatedServer:
    """The gated server process (see module docstring). Use as a context manager."""

    def __init__(self, artifacts: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, "NLP_HOST": "127.0.0.1", "NLP_PORT": str(self.port),
                    "NLP_ARTIFACTS_DIR": str(artifacts), "NLP_DEVICE": "cpu", "NLP_DTYPE": "float32",
                    "NLP_TORCH_THREADS": "1", "NLP_LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1", **env}
        self.lines: queue.Queue[str] = queue.Queue()
        self.batches: list[list[str]] = []  # texts of every batch, in order (parsed from BATCH lines)
        self.proc: subprocess.Popen[str] | None = None
        self.client = httpx.Client(base_url=self.base, timeout=60)

    def __enter__(self) -> GatedServer:
        import json

        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.gated_server"], cwd=ROOT,
                                         env=self.env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log)

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith("BATCH "):
                    self.batches.append(json.loads(line[len("BATCH "):]))
                self.lines.put(line.strip())

        threading.Thread(target=pump, daemon=True, name="server-stdout").start()
        poll(lambda: self.client.get("/health/ready").status_code == 200, "readiness")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if exc[0] is not None:
            print(self.log_path.read_text())

    def expect(self, prefix: str, timeout: float = 60.0) -> str:
        """The next stdout line starting with `prefix` (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line from the server")

    def command(self, command: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        self.expect(f"ACK {command}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return parse_metrics(self.client.get("/metrics").text)

    def metric(self, name: str, **labels: str) -> float:
        return sample(self.metrics(), name, **labels)

    def post(self, body: dict[str, Any], **kw: Any) -> httpx.Response:
        """One /predict call on its own connection (safe from any thread)."""
        with httpx.Client(base_url=self.base, timeout=60) as own:
            return own.post("/predict", json=body, **kw)
