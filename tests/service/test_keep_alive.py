"""Idle keep-alive connections stay open longer than clients pool them (`keep_alive_s`, 75 s by default), so the
server never closes a connection just as a client reuses it: uvicorn's own 5 s equals httpx's pool expiry, and that
race loses a request now and then under load (a reset the client sees as a ReadError)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from service.settings import Settings
from tests.factories import make_tiny_sentiment_artifact
from tests.service.live import live_server

REQUEST = b"GET /health/live HTTP/1.1\r\nHost: test\r\nConnection: keep-alive\r\n\r\n"


def _answer(conn: socket.socket) -> bytes:
    """One response read off the connection (b"" once the server has closed it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += conn.recv(4096)
    return head


def _second_request_after(base: str, idle_s: float) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(REQUEST)
        assert _answer(conn).startswith(b"HTTP/1.1 200")
        time.sleep(idle_s)
        try:
            conn.sendall(REQUEST)
            return _answer(conn)
        except ConnectionError:
            return b""


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keep-alive")
    make_tiny_sentiment_artifact(root)
    return root


def test_an_idle_connection_outlives_uvicorns_default_keep_alive(artifacts: Path) -> None:
    assert Settings().keep_alive_s > 60  # beyond httpx's 5 s pool expiry and a load balancer's 60 s idle timeout
    with live_server(artifacts) as live:
        assert _second_request_after(live.base, 6.0).startswith(b"HTTP/1.1 200")  # uvicorn's default closes at 5 s


def test_the_setting_reaches_the_server(artifacts: Path) -> None:
    with live_server(artifacts, keep_alive_s=1) as live:
        assert _second_request_after(live.base, 2.5) == b""  # closed by the server after 1 s idle
