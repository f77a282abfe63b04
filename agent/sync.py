"""The sync client: the agent's one long-lived `AgentService.Sync` stream to the control plane.

It opens with Hello (host, labels, capacity, version, the revision in local state), sends a
full status report, then streams heartbeats (--heartbeat-interval) and the reports the
reconciler emits, while it feeds every `Assignments` it receives to the reconciler. When the
stream breaks it reconnects with jittered exponential back-off (`agent.backoff`), round-robin
over the --controlplane addresses; meanwhile the reconciler keeps running the last desired
state, and a warning every --degraded-log-interval says for how long (`degraded_for_s`;
keel_agent_connected and keel_agent_last_sync_timestamp_seconds show it too). Protobuf stays
here: assignments and reports are converted at this edge.

It also answers the control plane's LogRequests on the same stream (no extra port on hosts):
the last lines of the instance's stdout then stderr, across rotated files (`agent.logread`),
then, when following, what is appended, until cancelled or the stream ends.
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

from agent import logread
from agent.backoff import reconnect_delay
from agent.metrics import AgentMetrics
from agent.planner import InstanceReport
from agent.settings import Settings
from agent.state import Assignment
from keel.convert import desired_from_pb, phase_to_pb, resources_to_pb, spec_from_pb, ts
from keel.v1 import agent_pb2, agent_pb2_grpc, types_pb2

log = structlog.get_logger("agent.sync")

_ESTABLISHED_EXCEPTIONS = (grpc.aio.AioRpcError, TimeoutError, OSError, ConnectionError)
# Log chunks wait while this many messages are queued for the stream, so a big log is read
# only as fast as the stream takes it.
_LOG_QUEUE_HIGH = 16
_LOG_QUEUE_POLL_S = 0.01


class SyncTarget(Protocol):
    """What the sync client drives: the reconciler."""

    @property
    def revision(self) -> int: ...

    def apply_assignments(
        self, *, full: bool, revision: int, assignments: Sequence[Assignment]
    ) -> None: ...

    def full_report(self) -> list[InstanceReport]: ...

    def knows(self, instance_id: str) -> bool: ...


def assignment_from_pb(m: agent_pb2.Assignment) -> Assignment:
    return Assignment(
        instance_id=m.instance_id,
        workload=m.workload,
        generation=m.generation,
        desired=desired_from_pb(m.desired),
        spec=spec_from_pb(m.spec),
        trace_context=m.trace_context,
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
    if r.stuck is not None:
        since = ts(datetime.fromtimestamp(r.stuck.since, UTC))
        assert since is not None
        msg.stuck.CopyFrom(
            types_pb2.Stuck(
                reason=r.stuck.reason,
                since=since,
                message=r.stuck.message,
                runbook=r.stuck.runbook,
                next_command=r.stuck.next_command,
            )
        )
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
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics or AgentMetrics()
        self._log_tasks: dict[str, asyncio.Task[None]] = {}
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
        warned_at = 0.0
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
            now = self._clock()
            if down_since is None:
                down_since = warned_at = now
                alog.warning(
                    "disconnected from the control plane; running the last desired state",
                    error=error,
                    revision=self._target.revision,
                )
            elif now - warned_at >= self._settings.degraded_log_interval_s:
                warned_at = now
                alog.warning(
                    "still disconnected; running the last known desired state",
                    degraded_for_s=round(now - down_since),
                    revision=self._target.revision,
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
            async with asyncio.timeout(s.connect_timeout_s):
                await _connect(channel)
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
                async with asyncio.timeout(s.connect_timeout_s):
                    await call.write(agent_pb2.AgentMessage(hello=hello))
                self._queue = asyncio.Queue()
                self._established = True
                self._connection(up=True)
                alog.info("connected", revision=hello.revision)
                self.report(self._target.full_report())
                await self._pump(call, self._queue)
            finally:
                if self._queue is not None:
                    self._connection(up=False)
                self._queue = None
                for task in self._log_tasks.values():
                    task.cancel()
                self._log_tasks.clear()
                call.cancel()

    def _connection(self, *, up: bool) -> None:
        """The one place the connection state goes to the metrics."""
        self._metrics.connection(up, at=self._clock())

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
            self._metrics.heard_from_controlplane(self._clock())
            if msg.HasField("assignments"):
                self._apply(msg.assignments)
            elif msg.HasField("log_request"):
                self._on_log_request(msg.log_request)

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
            async with asyncio.timeout(self._settings.connect_timeout_s):
                await call.write(msg)

    async def _heartbeat(self, queue: asyncio.Queue[agent_pb2.AgentMessage]) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_interval_s)
            queue.put_nowait(
                agent_pb2.AgentMessage(
                    heartbeat=agent_pb2.Heartbeat(revision=self._target.revision)
                )
            )

    # Logs --------------------------------------------------------------------------------

    def _on_log_request(self, req: agent_pb2.LogRequest) -> None:
        queue = self._queue
        if queue is None:
            return
        rid = req.request_id
        if req.cancel:
            task = self._log_tasks.pop(rid, None)
            if task is not None:
                task.cancel()
                queue.put_nowait(_chunk(rid, eof=True))
            return
        if rid in self._log_tasks:
            return  # a duplicate of a request being served
        task = asyncio.create_task(self._serve_logs(req, queue), name=f"logs {rid}")
        self._log_tasks[rid] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._log_tasks.get(rid) is t:
                del self._log_tasks[rid]
            if not t.cancelled() and t.exception() is not None:
                self._log.error("log request failed", request_id=rid, exc_info=t.exception())

        task.add_done_callback(done)

    async def _serve_logs(
        self, req: agent_pb2.LogRequest, queue: asyncio.Queue[agent_pb2.AgentMessage]
    ) -> None:
        rid, iid = req.request_id, req.instance_id
        llog = self._log.bind(instance=iid, request_id=rid)
        if not iid or not self._target.knows(iid):
            error = f'instance "{iid}" is not on host "{self._settings.host}"'
            queue.put_nowait(_chunk(rid, eof=True, error=error))
            return
        llog.info("sending logs", tail_lines=req.tail_lines, follow=req.follow)
        log_dir = self._settings.log_dir
        followers: dict[str, logread.Follower] = {}
        try:
            for stream in logread.STREAMS:
                files = await asyncio.to_thread(logread.stream_files, log_dir, iid, stream)
                segments = await asyncio.to_thread(logread.plan_tail, files, req.tail_lines)
                live = logread.live_file(log_dir, iid, stream)
                offset = next((seg.end for seg in segments if seg.path == live), 0)
                followers[stream] = logread.Follower(live, offset)
                chunks = logread.read_segments(segments)
                while (data := await asyncio.to_thread(next, chunks, None)) is not None:
                    await _send(queue, _chunk(rid, stream=stream, data=data))
            while req.follow:
                await asyncio.sleep(self._settings.probe_interval_s)
                for stream, follower in followers.items():
                    for data in await asyncio.to_thread(follower.read_new):
                        await _send(queue, _chunk(rid, stream=stream, data=data))
        except OSError as e:
            llog.warning("cannot read logs", error=str(e))
            queue.put_nowait(_chunk(rid, eof=True, error=f"cannot read logs: {e}"))
            return
        queue.put_nowait(_chunk(rid, eof=True))


def _chunk(
    request_id: str, *, stream: str = "", data: bytes = b"", eof: bool = False, error: str = ""
) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(
        log_chunk=types_pb2.LogChunk(
            request_id=request_id, stream=stream, data=data, eof=eof, error=error
        )
    )


async def _send(queue: asyncio.Queue[agent_pb2.AgentMessage], msg: agent_pb2.AgentMessage) -> None:
    # The writer drains the queue as the stream accepts messages: waiting for it to get short
    # keeps a large log from being read into memory all at once.
    while queue.qsize() >= _LOG_QUEUE_HIGH:  # noqa: ASYNC110
        await asyncio.sleep(_LOG_QUEUE_POLL_S)
    queue.put_nowait(msg)


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
