"""The sync client: the agent's one long-lived `AgentService.Sync` stream to the control plane.

It opens with Hello (host, labels, capacity, version, the revision in local state), sends a
full status report, then streams heartbeats (--heartbeat-interval) and the reports the
reconciler emits, while it feeds every `Assignments` it receives to the reconciler. When the
stream breaks it reconnects with jittered exponential back-off (`agent.backoff`), round-robin
over the --controlplane addresses; meanwhile the reconciler keeps running the last desired
state. Protobuf stays here: assignments and reports are converted at this edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
import structlog

from agent.backoff import reconnect_delay
from agent.planner import InstanceReport
from agent.settings import Settings
from agent.state import Assignment
from keel.convert import desired_from_pb, phase_to_pb, resources_to_pb, spec_from_pb, ts
from keel.v1 import agent_pb2, agent_pb2_grpc, types_pb2

log = structlog.get_logger("agent.sync")

_ESTABLISHED_EXCEPTIONS = (grpc.aio.AioRpcError, TimeoutError, OSError, ConnectionError)


class SyncTarget(Protocol):
    """What the sync client drives: the reconciler."""

    @property
    def revision(self) -> int: ...

    def apply_assignments(
        self, *, full: bool, revision: int, assignments: Sequence[Assignment]
    ) -> None: ...

    def full_report(self) -> list[InstanceReport]: ...


def assignment_from_pb(m: agent_pb2.Assignment) -> Assignment:
    return Assignment(
        instance_id=m.instance_id,
        workload=m.workload,
        generation=m.generation,
        desired=desired_from_pb(m.desired),
        spec=spec_from_pb(m.spec),
    )


def report_to_pb(r: InstanceReport, *, observed_at: datetime) -> types_pb2.InstanceStatus:
    msg = types_pb2.InstanceStatus(
        instance_id=r.instance_id,
        phase=phase_to_pb(r.phase),
        pid=r.pid,
        restart_count=r.restart_count,
        last_exit=r.last_exit,
        reason=r.reason,
        message=r.message,
        ports=dict(r.ports),
        ready=r.ready,
        removed=r.removed,
    )
    if r.started_at is not None:
        started = ts(datetime.fromtimestamp(r.started_at, UTC))
        assert started is not None
        msg.started_at.CopyFrom(started)
    observed = ts(observed_at)
    assert observed is not None
    msg.observed_at.CopyFrom(observed)
    return msg


class SyncClient:
    def __init__(
        self,
        settings: Settings,
        *,
        target: SyncTarget,
        agent_version: str,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._target = target
        self._agent_version = agent_version
        self._rng = rng
        self._clock = clock
        self._queue: asyncio.Queue[agent_pb2.AgentMessage] | None = None
        self._established = False  # the current attempt got as far as Hello
        self._log = log.bind(host=settings.host)

    # StatusSink ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._queue is not None

    def report(self, reports: Sequence[InstanceReport]) -> None:
        if self._queue is None or not reports:
            return  # dropped: the full report after the next Hello covers it
        now = datetime.fromtimestamp(self._clock(), UTC)
        self._queue.put_nowait(
            agent_pb2.AgentMessage(
                report=agent_pb2.StatusReport(
                    instances=[report_to_pb(r, observed_at=now) for r in reports]
                )
            )
        )

    # The connection loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled: reconnect with back-off, round-robin.

        Only changes of the connection state are logged above debug, so an agent cut off
        from the control plane for an hour logs that once, not on every attempt.
        """
        addresses = self._settings.controlplanes
        attempt = 0
        index = 0
        down_since: float | None = None
        while True:
            address = addresses[index % len(addresses)]
            index += 1
            alog = self._log.bind(controlplane=address)
            self._established = False
            error = "stream closed by the control plane"
            try:
                alog.debug("connecting", attempt=attempt)
                await self._session(address, alog)
            except _ESTABLISHED_EXCEPTIONS as e:
                error = _describe(e)
            except grpc.aio.UsageError as e:
                error = str(e)
            if self._established:
                attempt = 0
                down_since = None
            if down_since is None:
                down_since = self._clock()
                alog.warning(
                    "disconnected from the control plane; running the last desired state",
                    error=error,
                )
            else:
                alog.debug("connect attempt failed", error=error)
            delay = reconnect_delay(
                attempt,
                base_s=self._settings.reconnect_base_s,
                max_s=self._settings.reconnect_max_s,
                rng=self._rng,
            )
            attempt += 1
            alog.debug("reconnecting", delay_s=round(delay, 3), attempt=attempt)
            await asyncio.sleep(delay)

    async def _session(self, address: str, alog: Any) -> None:
        """One stream; returns (or raises) when it ends."""
        s = self._settings
        async with grpc.aio.insecure_channel(address) as channel:
            await asyncio.wait_for(_connect(channel), timeout=s.connect_timeout_s)
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            call = stub.Sync()
            try:
                hello = agent_pb2.Hello(
                    host=s.host,
                    labels=dict(s.labels),
                    capacity=resources_to_pb(s.capacity),
                    agent_version=self._agent_version,
                    revision=self._target.revision,
                )
                await asyncio.wait_for(
                    call.write(agent_pb2.AgentMessage(hello=hello)), timeout=s.connect_timeout_s
                )
                self._queue = asyncio.Queue()
                self._established = True
                alog.info("connected", revision=hello.revision)
                self.report(self._target.full_report())
                await self._pump(call, self._queue)
            finally:
                self._queue = None
                call.cancel()

    async def _pump(self, call: Any, queue: asyncio.Queue[agent_pb2.AgentMessage]) -> None:
        """Run reader, writer and heartbeat until one of them ends; re-raise its error."""
        tasks = [
            asyncio.create_task(self._read(call), name="sync read"),
            asyncio.create_task(self._write(call, queue), name="sync write"),
            asyncio.create_task(self._heartbeat(queue), name="sync heartbeat"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, *_ESTABLISHED_EXCEPTIONS):
                    await t

    async def _read(self, call: Any) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            if msg.HasField("assignments"):
                self._apply(msg.assignments)

    def _apply(self, m: agent_pb2.Assignments) -> None:
        assignments = []
        for a in m.assignments:
            try:
                assignments.append(assignment_from_pb(a))
            except (ValueError, KeyError) as e:
                # One bad assignment must not cost the host all the others.
                self._log.error("assignment ignored", instance=a.instance_id, error=str(e))
        self._target.apply_assignments(full=m.full, revision=m.revision, assignments=assignments)

    async def _write(self, call: Any, queue: asyncio.Queue[agent_pb2.AgentMessage]) -> None:
        while True:
            msg = await queue.get()
            # A write that cannot complete means a dead peer: end the stream and reconnect.
            await asyncio.wait_for(call.write(msg), timeout=self._settings.connect_timeout_s)

    async def _heartbeat(self, queue: asyncio.Queue[agent_pb2.AgentMessage]) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_interval_s)
            queue.put_nowait(
                agent_pb2.AgentMessage(
                    heartbeat=agent_pb2.Heartbeat(revision=self._target.revision)
                )
            )


async def _connect(channel: Any) -> None:
    """Wait until the channel is READY; fail at once on a refused connection.

    `channel_ready()` alone would sit out the whole timeout on a replica that is down,
    retrying inside gRPC, instead of moving on to the next address.
    """
    state = channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            raise ConnectionError("cannot connect")
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


def _describe(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__
