"""AgentService over a store, served in the test's process on a loopback port with its report
and heartbeat writers running, for the integration tests that speak to it as an agent would
(without the auth interceptor: these tests are about what the stream does, not who may open
it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from controlplane.heartbeats import HeartbeatWriter
from controlplane.logrelay import LogRelay
from controlplane.metrics import Metrics
from controlplane.reports import ReportWriter
from controlplane.secrets import SecretBox
from controlplane.status import StatusStore
from controlplane.store import Store
from controlplane.sync import AgentSync, StreamRegistry
from keel.v1 import agent_pb2_grpc


@asynccontextmanager
async def serve_agents(
    store: Store, secrets: SecretBox
) -> AsyncIterator[tuple[str, StreamRegistry]]:
    """The real AgentService's address and its stream registry, until the block ends."""
    registry, metrics = StreamRegistry(), Metrics()
    reports = ReportWriter(StatusStore(store.pool), on_written=lambda _: None)
    heartbeats = HeartbeatWriter(store, metrics=metrics, on_written=lambda _: None)
    sync = AgentSync(
        store,
        registry=registry,
        reports=reports,
        heartbeats=heartbeats,
        logs=LogRelay(registry),
        resync_period_s=30.0,
        secrets=secrets,
    )
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(sync, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    writers = [asyncio.create_task(reports.run()), asyncio.create_task(heartbeats.run())]
    try:
        yield f"127.0.0.1:{port}", registry
    finally:
        for writer in writers:
            writer.cancel()
        registry.stop()
        await server.stop(1)
