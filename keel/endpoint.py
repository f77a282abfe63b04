"""What the control plane and the agent share about their metrics and listening endpoints.

`--metrics HOST:PORT|off` parsing (port 0 = any free port; IPv6 as `[::1]:PORT`), the
/metrics HTTP server (prometheus-client's, on a daemon thread, so a busy event loop never
delays a scrape; the control plane adds its webhook beside it: `routes`) and
`<state-dir>/addresses.json`, where a process records what it bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import WSGIApplication

import prometheus_client
from prometheus_client import CollectorRegistry

# keel_convergence_seconds and keel_agent_convergence_seconds (fixed by issue 3): the SLO
# threshold (60 s) is a bucket boundary, so the SLI is exact.
CONVERGENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                       300.0, 600.0)  # fmt: skip


# Connections served at once on an endpoint with routes (the control plane's /metrics and
# webhook): Prometheus and Alertmanager need a few; past this a connection is answered 503 at
# once, so clients that connect and stall (each held up to the read timeout) cannot start a
# thread apiece without end.
MAX_CONNECTIONS = 64

_BUSY_BODY = b"too many connections open; try again later\n"
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class EndpointError(ValueError):
    """An address that is malformed or cannot be bound; the message names the flag."""


def parse_address(text: str, flag: str) -> tuple[str, int] | None:
    """`HOST:PORT` as (host, port); `off` as None."""
    text = text.strip()
    if text.lower() == "off":
        return None
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise EndpointError(f"{flag}: expected HOST:PORT or off, got '{text}'")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class MetricsServer:
    """A running /metrics endpoint."""

    address: str
    _httpd: Any
    _thread: threading.Thread

    def close(self) -> None:
        """Stops serving; blocks up to ~0.5 s (the server's poll interval): call it in a thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    *,
    flag: str = "--metrics",
    routes: Mapping[str, WSGIApplication] | None = None,
    read_timeout_s: float | None = None,
    max_connections: int = MAX_CONNECTIONS,
) -> MetricsServer:
    """Serves the registry on host:port; EndpointError if it cannot be bound.

    `routes`: other applications by exact path (every other path is the metrics, as
    prometheus-client serves them); `read_timeout_s` bounds each wait for a client's bytes, so
    a stalled client does not hold a thread, and at most `max_connections` are served at once
    (the rest get 503 at once)."""
    try:
        if routes:
            httpd, thread = _serve_routes(
                registry, host, port, routes, read_timeout_s, max_connections
            )
        else:
            httpd, thread = prometheus_client.start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        where = format_address(host, port)
        raise EndpointError(f"{flag}: cannot listen on {where}: {exc.strerror or exc}") from exc
    return MetricsServer(format_address(host, int(httpd.server_address[1])), httpd, thread)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # as prometheus-client's: a stuck request never blocks the exit
    max_connections = MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (the handlers log what matters, structured)."""


def _serve_routes(
    registry: CollectorRegistry,
    host: str,
    port: int,
    routes: Mapping[str, WSGIApplication],
    read_timeout_s: float | None,
    max_connections: int,
) -> tuple[WSGIServer, threading.Thread]:
    metrics: WSGIApplication = prometheus_client.make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        chosen = routes.get(environ.get("PATH_INFO", ""), metrics)
        return chosen(environ, start_response)

    class Server(_ThreadingServer):
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    Server.max_connections = max_connections

    class Handler(_QuietHandler):
        timeout = read_timeout_s

    httpd = make_server(host, port, app, Server, handler_class=Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return httpd, thread


def write_addresses(path: Path, entries: Mapping[str, str], *, merge: bool = True) -> None:
    """Records bound addresses in addresses.json atomically (merged with what is there)."""
    current: dict[str, Any] = {}
    if merge:
        try:
            current = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            current = {}
    current.update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".addresses.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(current, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
