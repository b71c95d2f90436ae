"""Faults against a real uvicorn process on loopback: a client that disconnects while queued, SIGTERM
under load, and bodies over the payload limit (with and without Content-Length)."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.process import GatedServer, poll

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(sentiment_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatedServer]:
    log = tmp_path_factory.mktemp("gated") / "server.log"
    with GatedServer(sentiment_artifacts, log, NLP_MAX_BATCH_SIZE="1", NLP_MAX_PAYLOAD_BYTES="4096") as running:
        yield running


def raw_request(port: int, body: bytes, *, chunked: bool = False) -> socket.socket:
    """Send one POST /predict over a raw socket (so the test decides when the client goes away)."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    if chunked:
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                          for i in range(0, len(body), 1000))
        sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunks + b"0\r\n\r\n")
    else:
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def test_a_client_that_disconnects_while_queued_has_its_work_dropped_not_run(server: GatedServer) -> None:
    disconnected_before = server.metric("nlp_rejected_requests_total", task="sentiment", reason="disconnected")
    server.command("hold")
    holder: dict[str, httpx.Response] = {}
    first = threading.Thread(target=lambda: holder.update(r=server.post({"task": "sentiment", "text": "runs first"})))
    first.start()
    assert server.expect("BATCH") == 'BATCH ["runs first"]'
    server.expect("HELD 1")

    gone = raw_request(server.port, b'{"task": "sentiment", "text": "queued then abandoned"}')
    poll(lambda: server.metric("nlp_queue_size", task="sentiment") == 1, "the second request to queue")
    gone.close()  # the client goes away while its item waits behind the held batch
    poll(lambda: server.metric("nlp_queue_size", task="sentiment") == 0, "the abandoned item to leave the queue")
    assert server.metric("nlp_rejected_requests_total", task="sentiment",
                         reason="disconnected") == disconnected_before + 1

    server.command("open")
    first.join(timeout=60)
    assert holder["r"].status_code == 200
    after = server.post({"task": "sentiment", "text": "arrives later"})
    assert after.status_code == 200
    assert server.expect("BATCH") == 'BATCH ["arrives later"]'  # the abandoned text was never run
    assert all("queued then abandoned" not in batch for batch in server.batches)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_payload_limit_gets_413_with_the_error_body(server: GatedServer, chunked: bool) -> None:
    body = b'{"task": "sentiment", "text": "' + b"x" * 8000 + b'"}'
    sock = raw_request(server.port, body, chunked=chunked)
    with sock, sock.makefile("rb") as reply:
        status_line = reply.readline().decode()
        headers = {}
        while (line := reply.readline().decode().strip()):
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        payload = reply.read(int(headers["content-length"]))
    assert status_line.split()[1] == "413"
    assert httpx.Response(413, content=payload).json()["error_type"] == "payload_too_large"
    assert all("xxxx" not in "".join(batch) for batch in server.batches)


def test_sigterm_under_load_loses_nothing_in_flight(sentiment_artifacts: Path, tmp_path: Path) -> None:
    """8 clients hammer the server; a batch is held, the clients stop sending, SIGTERM arrives: every
    request the server had accepted is answered 200 after the drain, and the process exits 0."""
    with GatedServer(sentiment_artifacts, tmp_path / "server.log", NLP_MAX_BATCH_SIZE="4",
                     NLP_DRAIN_TIMEOUT_S="60") as server:
        stop = threading.Event()
        lock = threading.Lock()
        outcomes: dict[str, int | str] = {}  # request text -> status, or the transport error
        sending: dict[int, str] = {}  # client index -> text of its outstanding request

        def client(index: int) -> None:
            with httpx.Client(base_url=server.base, timeout=60) as own:
                n = 0
                while not stop.is_set():
                    text = f"client {index} request {n}"
                    with lock:
                        sending[index] = text
                    try:
                        response = own.post("/predict", json={"task": "sentiment", "text": text})
                        outcome: int | str = response.status_code
                        if response.status_code != 200:
                            outcome = f"{response.status_code} {response.json()['error_type']}"
                    except httpx.HTTPError as exc:
                        outcome = f"lost: {type(exc).__name__}: {exc}"
                    with lock:
                        del sending[index]
                        outcomes[text] = outcome
                    n += 1

        # Daemon threads, stopped in `finally`: a failed assertion must not leave 8 clients spinning against
        # a dead server (they would keep pytest alive and slow everything after).
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
        for thread in threads:
            thread.start()
        try:
            poll(lambda: len(outcomes) >= 60, "the load phase to answer 60 requests")
            server.command("hold")
            held = int(server.expect("HELD").split()[1])
            stop.set()  # no new requests after the ones in flight
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            poll(lambda: server.client.get("/health/ready").json()["status"] == "draining", "draining")
            # Wait until every request outstanding on the client side is held or queued on the server (the
            # server's count can only trail the clients'; equal means none is still in transit).
            poll(lambda: len(sending) == held + server.metric("nlp_queue_size", task="sentiment"),
                 "outstanding requests to reach the server")
            with lock:
                accepted = set(sending.values())
            refused = server.post({"task": "sentiment", "text": "arrives during the drain"})
            assert refused.status_code == 503 and refused.json()["error_type"] == "draining"
            assert server.proc.poll() is None  # still draining while work is held

            server.command("open")
            for thread in threads:
                thread.join(timeout=60)
            assert server.proc.wait(timeout=60) == 0
        finally:
            stop.set()

    assert len(outcomes) >= 60 + len(accepted)
    assert len(accepted) >= held >= 1
    assert {outcomes[text] for text in accepted} == {200}  # in flight at the signal: all answered
    assert set(outcomes.values()) <= {200, "503 draining"}  # nothing lost, nothing failed
    log = (tmp_path / "server.log").read_text()
    assert "draining" in log and "request 0" not in log  # the server logged, but no request text (info level)
