"""AgentService.Sync: one long-lived bidirectional stream per host.

The agent opens with Hello; we answer with its assignments (the changes since the revision it
holds, or the full set), then push what changes: a NOTIFY on `keel_host` wakes the stream of
that host, and every stream also looks again each resync period, so a lost notification only
delays a change. Status reports go to the batching `ReportWriter`; heartbeats to the store.
A second stream for the same host replaces the first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import structlog

from controlplane.logrelay import LogRelay
from controlplane.reports import ReportWriter
from controlplane.store import InstanceRow, Report, Store
from keel import convert
from keel.v1 import agent_pb2, agent_pb2_grpc, types_pb2

log = structlog.get_logger("keel.sync")

HELLO_TIMEOUT_S = 10.0


class _Session:
    def __init__(self, host: str) -> None:
        self.host = host
        self.wake = asyncio.Event()
        self.replaced = asyncio.Event()
        # Messages other than assignments (log requests) waiting to go out on this stream.
        self.outbox: asyncio.Queue[agent_pb2.ControlMessage] = asyncio.Queue()

    def send(self, msg: agent_pb2.ControlMessage) -> None:
        self.outbox.put_nowait(msg)


class StreamRegistry:
    """Which host has a stream open on this replica, and how to wake it."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        # Set when the control plane stops: every stream ends at once instead of holding the
        # graceful stop for its whole grace (agents reconnect to another replica).
        self.stopping = asyncio.Event()

    def open(self, host: str) -> _Session:
        old = self._sessions.get(host)
        if old is not None:
            old.replaced.set()
        session = _Session(host)
        self._sessions[host] = session
        return session

    def close(self, session: _Session) -> bool:
        """Forgets the session; True if it was still the host's current one."""
        if self._sessions.get(session.host) is session:
            del self._sessions[session.host]
            return True
        return False

    def get(self, host: str) -> _Session | None:
        return self._sessions.get(host)

    def wake(self, host: str) -> None:
        session = self._sessions.get(host)
        if session is not None:
            session.wake.set()

    def wake_all(self) -> None:
        for session in self._sessions.values():
            session.wake.set()

    def __len__(self) -> int:
        return len(self._sessions)


def assignment(row: InstanceRow) -> agent_pb2.Assignment:
    return agent_pb2.Assignment(
        instance_id=row.id,
        workload=row.workload,
        generation=row.generation,
        desired=convert.desired_to_pb(row.desired),
        spec=convert.spec_to_pb(row.spec),
        revision=row.revision,
        trace_context=row.trace_context,
    )


def _text(value: str, limit: int) -> str:
    """Agent text fit for a Postgres text column: bounded, and without NUL (which Postgres
    refuses, so one NUL in a workload's stderr would poison the whole report batch)."""
    return value[:limit].replace("\x00", "\N{REPLACEMENT CHARACTER}")


def report_from_pb(host: str, s: types_pb2.InstanceStatus) -> Report:
    stuck = s.stuck if s.HasField("stuck") else None
    return Report(
        host=host,
        instance_id=s.instance_id,
        phase=convert.phase_from_pb(s.phase),
        pid=s.pid,
        restart_count=s.restart_count,
        last_exit=_text(s.last_exit, 500),
        reason=_text(stuck.reason if stuck else s.reason, 100),
        # A CRASH_LOOP message carries up to 4 KiB of stderr besides its summary.
        message=_text(stuck.message if stuck else s.message, 6144),
        ports=dict(s.ports),
        ready=s.ready,
        removed=s.removed,
        started_at=convert.from_ts(s.started_at) if s.HasField("started_at") else None,
        agent_stuck=stuck is not None,
    )


class AgentSync(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        store: Store,
        *,
        registry: StreamRegistry,
        reports: ReportWriter,
        logs: LogRelay,
        resync_period_s: float,
    ) -> None:
        self._store = store
        self._logs = logs
        self._registry = registry
        self._reports = reports
        self._resync_period_s = resync_period_s

    async def Sync(
        self,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[agent_pb2.ControlMessage]:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                first = await anext(request_iterator)
        except (TimeoutError, StopAsyncIteration):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the stream must open with Hello")
            return
        if first.WhichOneof("msg") != "hello" or not first.hello.host:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Hello with a host name"
            )
            return
        hello = first.hello
        host = hello.host
        bound = log.bind(host=host)
        revision = await self._store.register_host(
            host,
            labels=dict(hello.labels),
            capacity=convert.resources_from_pb(hello.capacity),
            agent_version=hello.agent_version,
        )
        session = self._registry.open(host)
        outgoing: asyncio.Future[agent_pb2.ControlMessage] | None = None
        reader = asyncio.create_task(
            self._read(host, request_iterator, bound), name=f"sync-read-{host}"
        )
        try:
            if 0 < hello.revision <= revision:
                sent, rows = await self._store.host_assignments(host, since=hello.revision)
                # Tombstones again, whatever their revision: a removal confirmation lost with
                # the last stream (or with a stopped control plane) is then sent once more.
                seen = {r.id for r in rows}
                rows += [r for r in await self._store.host_tombstones(host) if r.id not in seen]
                full = False
            else:
                sent, rows = await self._store.host_assignments(host, since=None)
                full = True
            bound.info(
                "agent connected",
                agent_revision=hello.revision,
                revision=sent,
                full=full,
                assignments=len(rows),
            )
            yield _message(full, sent, rows)
            outgoing = asyncio.ensure_future(session.outbox.get())
            while True:
                waits = [
                    asyncio.ensure_future(session.wake.wait()),
                    asyncio.ensure_future(session.replaced.wait()),
                    asyncio.ensure_future(self._registry.stopping.wait()),
                    reader,
                    outgoing,
                ]
                _, pending = await asyncio.wait(
                    waits, timeout=self._resync_period_s, return_when=asyncio.FIRST_COMPLETED
                )
                for f in pending:
                    if f is not reader and f is not outgoing:
                        f.cancel()
                if outgoing.done():
                    yield outgoing.result()
                    outgoing = asyncio.ensure_future(session.outbox.get())
                    continue
                if session.replaced.is_set():
                    bound.info("stream replaced by a newer one")
                    await context.abort(grpc.StatusCode.ABORTED, "replaced by a newer stream")
                    return
                if self._registry.stopping.is_set():
                    return
                if reader.done():
                    error = None if reader.cancelled() else reader.exception()
                    if error is None:
                        return  # the agent closed its side
                    bound.warning("agent stream failed", error=str(error))
                    await context.abort(grpc.StatusCode.UNAVAILABLE, f"stream failed: {error}")
                    return
                session.wake.clear()
                revision, rows = await self._store.host_assignments(host, since=sent)
                sent = max(sent, revision)
                # Sent even when empty (each resync period at least): the agent then knows
                # its desired state is current (keel_agent_last_sync_timestamp_seconds).
                yield _message(False, sent, rows)
        finally:
            reader.cancel()
            if outgoing is not None:
                outgoing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self._logs.session_closed(session)
            if self._registry.close(session):
                with contextlib.suppress(Exception):
                    await self._store.disconnect_host(host)
                bound.info("agent disconnected")

    async def _read(
        self,
        host: str,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        async for msg in request_iterator:
            which = msg.WhichOneof("msg")
            if which == "report":
                self._reports.submit([report_from_pb(host, s) for s in msg.report.instances])
            elif which == "heartbeat":
                if await self._store.heartbeat(host):
                    bound.info("host ready again")
            elif which == "log_chunk":
                self._logs.deliver(msg.log_chunk)
            elif which == "hello":
                bound.warning("ignoring a second Hello on an open stream")


def _message(full: bool, revision: int, rows: list[InstanceRow]) -> agent_pb2.ControlMessage:
    return agent_pb2.ControlMessage(
        assignments=agent_pb2.Assignments(
            full=full, revision=revision, assignments=[assignment(r) for r in rows]
        )
    )
