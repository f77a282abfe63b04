"""Fixtures the unit tests share: `serve` starts fake FleetService servers on loopback (port 0)
for keelctl to talk to, and stops them when the test ends however it ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from keel.v1 import fleet_pb2_grpc


@pytest.fixture
def serve() -> Iterator[Callable[[Any], str]]:
    """`serve(servicer)` serves that FleetService servicer; returns its HOST:PORT."""
    servers: list[grpc.Server] = []

    def start(servicer: Any) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        fleet_pb2_grpc.add_FleetServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)
