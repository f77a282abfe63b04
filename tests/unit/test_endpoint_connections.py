"""The control plane's metrics endpoint (with the webhook beside it) serves a bounded number of
connections at once: clients that connect and stall get no thread apiece past the bound; the
next connection is answered 503 at once, and scrapes work again once they go."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry

from keel.endpoint import serve_metrics


def _ok(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]


def _answer(address: str) -> bytes:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        chunks = []
        while chunk := conn.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def test_past_the_bound_a_connection_is_answered_503_and_scrapes_come_back() -> None:
    server = serve_metrics(
        CollectorRegistry(), "127.0.0.1", 0, routes={"/hook": _ok}, read_timeout_s=30.0,
        max_connections=2,
    )  # fmt: skip
    host, _, port = server.address.rpartition(":")
    stalled = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]
    try:
        busy = _answer(server.address)
        assert busy.startswith(b"HTTP/1.0 503"), busy
        assert busy.endswith(b"too many connections open; try again later\n")
    finally:
        for conn in stalled:
            conn.close()
    try:
        deadline = time.monotonic() + 10
        while True:
            answer = _answer(server.address)
            if b" 200 " in answer.split(b"\r\n", 1)[0] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert b" 200 " in answer.split(b"\r\n", 1)[0], answer[:200]
        with urllib.request.urlopen(f"http://{server.address}/hook", timeout=5) as resp:
            assert resp.read() == b"ok\n"
    finally:
        server.close()
