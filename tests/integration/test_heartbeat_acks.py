"""Which heartbeats the Sync stream acknowledges (`controlplane.sync`), on a real Postgres and
loopback gRPC: an agent running a self-fencing instance gets each recorded heartbeat
acknowledged at once; one that deferred its acks (no such instance) gets none until the stream
next sends it assignments, and then the last one recorded, just before them; a heartbeat
without a sequence is never acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentapi import serve_agents
from plans import until, write_plan

from agent import convert
from controlplane.secrets import load_or_create
from controlplane.store import Store
from controlplane.sync import StreamRegistry
from keel.model import Resources, Workload, WorkloadSpec
from keel.v1 import agent_pb2_grpc

HOST = "h1"
READ_S = 10.0


@pytest.fixture
async def served(store: Store, tmp_path: Path) -> AsyncIterator[tuple[str, StreamRegistry]]:
    """The real AgentService with its writers running, on loopback."""
    box = load_or_create(tmp_path / "secret.key", on_open_failure=lambda: None)
    async with serve_agents(store, box) as served:
        yield served


async def _open(channel: grpc.aio.Channel) -> Any:
    call = agent_pb2_grpc.AgentServiceStub(channel).Sync()
    hello = convert.Hello(
        host=HOST, agent_version="t", revision=0, labels={}, capacity=Resources(4000, 8192)
    )
    await call.write(convert.hello_to_pb(hello))
    first = await asyncio.wait_for(call.read(), READ_S)
    assert first.WhichOneof("msg") == "assignments"
    return call


async def _next(call: Any) -> Any:
    return await asyncio.wait_for(call.read(), READ_S)


async def _place(store: Store, registry: StreamRegistry, *, stop_after_ms: int) -> None:
    spec = WorkloadSpec(
        command=("sleep", "1000"),
        resources=Resources(100, 64),
        stop_after_disconnect_ms=stop_after_ms,
    )
    await store.apply_workload(Workload(name="web", replicas=1, max_surge=0, spec=spec))
    await write_plan(store, "web", create_on=[HOST])
    registry.wake(HOST)  # what the host's NOTIFY does in the control plane


async def test_each_heartbeat_is_acknowledged_when_the_agent_asks(
    store: Store, served: tuple[str, StreamRegistry]
) -> None:
    address, _ = served
    async with grpc.aio.insecure_channel(address) as channel:
        call = await _open(channel)
        for sequence in (1, 2, 3):
            await call.write(convert.heartbeat_to_pb(0, sequence=sequence))
            reply = await _next(call)
            assert reply.WhichOneof("msg") == "heartbeat_ack"
            assert reply.heartbeat_ack.sequence == sequence
        call.cancel()


async def test_a_deferred_ack_comes_just_before_the_next_assignments(
    store: Store, served: tuple[str, StreamRegistry]
) -> None:
    address, registry = served
    async with grpc.aio.insecure_channel(address) as channel:
        call = await _open(channel)
        await call.write(convert.heartbeat_to_pb(0, sequence=0))  # never acknowledged
        for sequence in (1, 2, 3, 4):
            await call.write(convert.heartbeat_to_pb(0, sequence=sequence, ack_deferred=True))

        async def recorded() -> bool:
            session = registry.get(HOST)
            return session is not None and session.deferred_ack == 4

        await until(recorded, what="the deferred heartbeats recorded")
        await _place(store, registry, stop_after_ms=10_000)
        # Nothing came before: no ack for 0 to 3, nor for 4 until the assignments.
        ack, update = await _next(call), await _next(call)
        assert ack.WhichOneof("msg") == "heartbeat_ack" and ack.heartbeat_ack.sequence == 4
        assert update.WhichOneof("msg") == "assignments"
        [given] = update.assignments.assignments
        assert given.spec.stop_after_disconnect_ms == 10_000
        # The agent now runs a self-fencing instance: it asks, and each is acknowledged.
        await call.write(convert.heartbeat_to_pb(0, sequence=5))
        reply = await _next(call)
        assert reply.WhichOneof("msg") == "heartbeat_ack" and reply.heartbeat_ack.sequence == 5
        call.cancel()
