"""FleetService over a store, served in the test's process on a loopback port through the real
observability interceptor (which turns Keel's errors into their status codes), for the
integration tests that call it as a client would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from controlplane.fleet import FleetApi
from controlplane.idempotency import Requests
from controlplane.interceptors import ObservabilityInterceptor
from controlplane.logrelay import LogRelay
from controlplane.metrics import Metrics
from controlplane.secrets import load_or_create
from controlplane.status import StatusStore
from controlplane.store import Store
from controlplane.sync import StreamRegistry
from keel.v1 import fleet_pb2_grpc


@asynccontextmanager
async def serve_fleet(
    store: Store, tmp_path: Path, metrics: Metrics, **options: Any
) -> AsyncIterator[Any]:
    """A FleetService stub to a server over `store`; replays are counted in `metrics`;
    `options` are FleetApi's other keyword arguments."""
    server = grpc.aio.server(interceptors=[ObservabilityInterceptor(metrics=metrics)])
    fleet = FleetApi(
        store,
        status=StatusStore(store.pool),
        logs=LogRelay(StreamRegistry()),
        log_wait_s=1.0,
        requests=Requests(on_replay=metrics.count_replay),
        secrets=load_or_create(tmp_path / "secret.key", on_open_failure=lambda: None),
        **options,
    )
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(fleet, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield fleet_pb2_grpc.FleetServiceStub(channel)
    finally:
        await server.stop(None)
