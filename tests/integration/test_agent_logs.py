"""Log requests on the agent's stream, against a tiny in-test AgentService: tail, follow, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from waiting import eventually

from agent.health import always_healthy
from agent.outcome import Outbox
from agent.reconciler import Reconciler
from agent.runtime.fake import FakeDriver
from agent.runtime.logs import rotate_if_needed
from agent.settings import Settings
from agent.state import Assignment, StateStore
from agent.sync import SyncClient
from agent.tasks import TaskGroup
from keel.model import Desired, WorkloadSpec
from keel.v1 import agent_pb2, agent_pb2_grpc, types_pb2

SPEC = WorkloadSpec(command=("sleep", "1000"))


class Servicer(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    """Sends whatever the test queues after Hello; records the log chunks the agent sends."""

    def __init__(self) -> None:
        self.outbox: asyncio.Queue[agent_pb2.ControlMessage] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.chunks: list[types_pb2.LogChunk] = []

    async def Sync(self, request_iterator: Any, context: Any) -> None:
        await context.read()  # Hello
        self.connected.set()

        async def send() -> None:
            while True:
                await context.write(await self.outbox.get())

        sender = asyncio.create_task(send())
        try:
            while True:
                msg = await context.read()
                if msg is grpc.aio.EOF:
                    return
                if msg.HasField("log_chunk"):
                    self.chunks.append(msg.log_chunk)
        finally:
            sender.cancel()

    def request(self, rid: str, iid: str, *, tail: int = 0, follow: bool = False) -> None:
        self.outbox.put_nowait(
            agent_pb2.ControlMessage(
                log_request=agent_pb2.LogRequest(
                    request_id=rid, instance_id=iid, tail_lines=tail, follow=follow
                )
            )
        )

    def cancel(self, rid: str) -> None:
        self.outbox.put_nowait(
            agent_pb2.ControlMessage(log_request=agent_pb2.LogRequest(request_id=rid, cancel=True))
        )

    def of(self, rid: str) -> list[types_pb2.LogChunk]:
        return [c for c in self.chunks if c.request_id == rid]

    def text(self, rid: str, stream: str) -> bytes:
        return b"".join(c.data for c in self.of(rid) if c.stream == stream)

    def ended(self, rid: str) -> bool:
        return any(c.eof for c in self.of(rid))


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[Servicer, Path]]:
    """An in-process agent (fake driver) with one instance, web-1, connected to the servicer."""
    servicer = Servicer()
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = Settings(
        host="h1",
        state_dir=tmp_path,
        controlplanes=(f"127.0.0.1:{port}",),
        heartbeat_interval_s=0.2,
        probe_interval_s=0.05,
        reconnect_base_s=0.05,
        reconnect_max_s=0.2,
    )
    outbox = Outbox()
    reconciler = Reconciler(
        StateStore(settings.state_file),
        driver=FakeDriver(),
        settings=settings,
        prober=always_healthy,
        sink=outbox,
    )
    await reconciler.open()
    reconciler.apply_assignments(
        full=True,
        revision=1,
        assignments=[Assignment("web-1", "web", 1, Desired.RUNNING, SPEC)],
    )
    client = SyncClient(settings, target=reconciler, outbox=outbox, agent_version="t")
    tasks = TaskGroup()
    tasks.loop("reconciler", reconciler.run)
    tasks.loop("sync", client.run)
    try:
        await asyncio.wait_for(servicer.connected.wait(), timeout=10)
        yield servicer, settings.log_dir / "web-1"
    finally:
        await tasks.close()
        await reconciler.close()
        await server.stop(None)


async def test_tail_sends_stdout_then_stderr_across_rotation_then_eof(
    agent: tuple[Servicer, Path],
) -> None:
    """The last N lines of each stream, rotated copies included, stdout first, then eof."""
    servicer, logs = agent
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "stdout.log.1").write_bytes(b"out 1\nout 2\n")
    (logs / "stdout.log").write_bytes(b"out 3\n")
    (logs / "stderr.log").write_bytes(b"err 1\nerr 2\nerr 3\n")
    servicer.request("r1", "web-1", tail=2)
    await eventually(lambda: servicer.ended("r1"))
    assert servicer.text("r1", "stdout") == b"out 2\nout 3\n"
    assert servicer.text("r1", "stderr") == b"err 2\nerr 3\n"
    streams = [c.stream for c in servicer.of("r1") if c.data]
    assert streams == sorted(streams, key=lambda s: s != "stdout")
    last = servicer.of("r1")[-1]
    assert last.eof and not last.error


async def test_unknown_instance_is_one_eof_chunk_with_error(agent: tuple[Servicer, Path]) -> None:
    """A request for an instance not on this host gets one eof chunk naming both."""
    servicer, _ = agent
    servicer.request("r2", "nope-1")
    await eventually(lambda: servicer.ended("r2"))
    [chunk] = servicer.of("r2")
    assert chunk.error == 'instance "nope-1" is not on host "h1"'


async def test_follow_sends_appends_through_rotation_until_cancelled(
    agent: tuple[Servicer, Path],
) -> None:
    """Following sends new bytes, survives a copy-truncate, and ends on cancel."""
    servicer, logs = agent
    logs.mkdir(parents=True, exist_ok=True)
    out = logs / "stdout.log"
    out.write_bytes(b"before\n")
    servicer.request("r3", "web-1", tail=10, follow=True)
    await eventually(lambda: servicer.text("r3", "stdout") == b"before\n")
    with out.open("ab") as f:
        f.write(b"after 1\n")
    await eventually(lambda: servicer.text("r3", "stdout") == b"before\nafter 1\n")
    with out.open("ab") as f:
        f.write(b"after 2\n")
    rotate_if_needed(out, max_bytes=1, backups=2)
    with (logs / "stderr.log").open("ab") as f:
        f.write(b"oops\n")
    await eventually(
        lambda: (
            servicer.text("r3", "stdout") == b"before\nafter 1\nafter 2\n"
            and servicer.text("r3", "stderr") == b"oops\n"
        )
    )
    assert not servicer.ended("r3")
    servicer.cancel("r3")
    await eventually(lambda: servicer.ended("r3"))
